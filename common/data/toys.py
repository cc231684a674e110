"""The six 2-D toy datasets of the SWG/SRPO papers, each point with an energy E in [0, 1], and sample distances.

Points are scaled into [-1, 1]^2 (raw layouts span about [-4, 4], divided by `SCALE`) so they are valid actions
for samplers that clip to [-1, 1] and for tanh policies. The weighted target of a panel is pi(a) ~ mu(a) exp(beta E(a)).
"""
from __future__ import annotations

import numpy as np

TOY_DATASETS = ("8gaussians", "2spirals", "moons", "swissroll", "checkerboard", "rings")
SCALE = 4.5


def _eight_gaussians(n, rng):
  index = rng.integers(0, 8, size=n)
  angle = index * (2 * np.pi / 8)
  centers = 3.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
  return centers + 0.35 * rng.normal(size=(n, 2)), index / 7.0


def _two_spirals(n, rng):
  arc = np.sqrt(rng.random(n)) * 3 * np.pi  # position along the spiral, 0 at the centre
  sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
  pts = sign[:, None] * np.stack([-np.cos(arc) * arc, np.sin(arc) * arc], axis=1) / 2.6
  return pts + 0.15 * rng.normal(size=(n, 2)), arc / (3 * np.pi)


def _moons(n, rng):
  label = rng.integers(0, 2, size=n)
  angle = rng.random(n) * np.pi
  upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
  lower = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
  pts = np.where(label[:, None] == 0, upper, lower) + 0.08 * rng.normal(size=(n, 2))
  return (pts - np.array([0.5, 0.25])) * 2.4, label.astype(np.float64)


def _swissroll(n, rng):
  turn = 1.5 * np.pi * (1 + 2 * rng.random(n))
  pts = np.stack([turn * np.cos(turn), turn * np.sin(turn)], axis=1) / 4.0 + 0.1 * rng.normal(size=(n, 2))
  return pts, np.clip(np.sum(pts**2, axis=1) / 12.5, 0.0, 1.0)  # squared radius, outer end ~ 1


def _checkerboard(n, rng):
  x1 = rng.random(n) * 8 - 4
  x2 = rng.random(n) + 2 * rng.integers(-2, 2, size=n) + (np.floor(x1) % 2)
  pts = np.stack([x1, x2], axis=1) * 0.95
  # Energy rises along the diagonal of the board: cells toward the top right are better.
  return pts, np.clip((x1 + x2 + 8) / 16.0, 0.0, 1.0)


def _rings(n, rng):
  ring = rng.integers(0, 4, size=n)
  radius = 0.9 * (ring + 1) + 0.08 * rng.normal(size=n)
  angle = rng.random(n) * 2 * np.pi
  return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1), ring / 3.0


_GENERATORS = {"8gaussians": _eight_gaussians, "2spirals": _two_spirals, "moons": _moons,
               "swissroll": _swissroll, "checkerboard": _checkerboard, "rings": _rings}


def sample_toy(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """n points [n, 2] (float32, inside [-1, 1]) and their energies [n] in [0, 1]."""
  if name not in _GENERATORS:
    raise ValueError(f"unknown toy dataset {name!r}; choose one of {TOY_DATASETS}")
  pts, energy = _GENERATORS[name](n, rng)
  pts = np.clip(pts / SCALE, -1.0, 1.0)
  return pts.astype(np.float32), energy.astype(np.float32)


def toy_weights(energy: np.ndarray, beta: float) -> np.ndarray:
  """SWG's weight w = exp(beta (E - 1)) in [e^-beta, 1]: proportional to exp(beta E)."""
  return np.exp(beta * (energy - 1.0)).astype(np.float32)


def target_samples(name: str, beta: float, n: int, rng: np.random.Generator, pool: int = 200_000) -> np.ndarray:
  """Ground truth draws from pi ~ mu exp(beta E): resample a large data sample with softmax(beta E).  [n, 2]"""
  pts, energy = sample_toy(name, pool, rng)
  logits = beta * energy.astype(np.float64)
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  return pts[rng.choice(pool, size=n, p=probs)]


def pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Euclidean distances [len(x), len(y)] in float64 from one matmul (|x|^2 + |y|^2 - 2 x.y, clipped at 0)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  sq = np.sum(x**2, axis=1)[:, None] + np.sum(y**2, axis=1)[None, :] - 2.0 * x @ y.T
  return np.sqrt(np.maximum(sq, 0.0))


def _kth_neighbour_distance(x: np.ndarray, y: np.ndarray, k: int, skip_self: bool = False) -> np.ndarray:
  """Distance from each row of x to its k-th nearest row of y (the nearest one skipped with skip_self).  [n]"""
  j = k if skip_self else k - 1
  return np.concatenate([np.partition(pairwise_distances(x[s:s + 2048], y), j, axis=1)[:, j]
                         for s in range(0, len(x), 2048)])  # chunks bound the distance matrix


def off_support_fraction(x: np.ndarray, truth: np.ndarray, k: int = 10, quantile: float = 0.95) -> float:
  """Share of samples x off the support of `truth`: farther from their k-th nearest truth point than `quantile` of
  the truth points are from their own k-th nearest other truth point (an independent truth draw scores about
  1 - quantile). Blur moves samples into the gaps between clusters, arms and rings, so this registers it, where the
  energy distance, dominated by long-range differences, barely does."""
  threshold = np.quantile(_kth_neighbour_distance(truth, truth, k, skip_self=True), quantile)
  return float(np.mean(_kth_neighbour_distance(x, truth, k) > threshold))


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
  """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (>= 0, 0 iff equal in law; V-statistics)."""
  mean_dist = lambda a, b: float(np.mean(pairwise_distances(a, b)))
  return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
