"""SWG's per-datum weights w(s, a) from a trained IQL critic (Algorithm 3), computed once over the dataset.

A(s, a) = min_i Q_target_i(s, a) - V(s); the weight functions (kind):
  expectile         w = tau if A > 0 else 1 - tau                       (default)
  exp_advantage     w = clip(exp(k A), 1e-3, 80), k = 3
  hard_advantage    w = 1[A >= -0.01]
  smooth_expectile  w = sigmoid(k A) tau + (1 - sigmoid(k A)) (1 - tau), k = 3
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from common import iql
from common.errors import DivergenceError

WEIGHT_KINDS = ("expectile", "exp_advantage", "hard_advantage", "smooth_expectile")


def weights_from_advantage(adv: jax.Array, kind: str = "expectile", *, expectile: float = 0.7,
                           temperature: float = 3.0, clip_min: float = 1e-3, clip_max: float = 80.0,
                           hard_threshold: float = -0.01) -> jax.Array:
  """Elementwise weight of each advantage.  [N] -> [N]. A NaN advantage gives a NaN weight, never a valid-looking
  constant (a comparison with NaN is False)."""
  return jnp.where(jnp.isnan(adv), jnp.nan, _weights(adv, kind, expectile, temperature, clip_min, clip_max,
                                                     hard_threshold))


def _weights(adv, kind, expectile, temperature, clip_min, clip_max, hard_threshold):
  if kind == "expectile":
    return jnp.where(adv > 0, expectile, 1.0 - expectile)
  if kind == "exp_advantage":
    return jnp.clip(jnp.exp(temperature * adv), clip_min, clip_max)
  if kind == "hard_advantage":
    return (adv >= hard_threshold).astype(adv.dtype)
  if kind == "smooth_expectile":
    p = jax.nn.sigmoid(temperature * adv)
    return p * expectile + (1.0 - p) * (1.0 - expectile)
  raise ValueError(f"weights kind must be one of {WEIGHT_KINDS}, got {kind!r}")


def compute_advantages(critic: iql.CriticState, observations, actions, *, chunk_size: int = 16384,
                       seed_axis: bool = False) -> np.ndarray:
  """A(s, a) over the whole dataset in fixed-size jitted chunks (one compilation; the last chunk is padded).  [N]

  seed_axis: the critic is seed-stacked (leading axis) and every seed's advantages come from one vmapped call per
  chunk.  -> [num_seeds, N]"""
  observations = jnp.asarray(observations, jnp.float32)
  actions = jnp.asarray(actions, jnp.float32)
  n = observations.shape[0]
  chunk = int(min(chunk_size, max(n, 1)))
  adv_fn = jax.jit(jax.vmap(iql.advantage, in_axes=(0, None, None)) if seed_axis else iql.advantage)
  out = []
  for start in range(0, n, chunk):
    obs, act = observations[start:start + chunk], actions[start:start + chunk]
    m = obs.shape[0]
    if m < chunk:  # pad to the compiled shape
      obs = jnp.concatenate([obs, jnp.zeros((chunk - m,) + obs.shape[1:], obs.dtype)])
      act = jnp.concatenate([act, jnp.zeros((chunk - m,) + act.shape[1:], act.dtype)])
    out.append(np.asarray(adv_fn(critic, obs, act))[..., :m])
  if not out:
    return np.zeros((jax.tree.leaves(critic)[0].shape[0], 0) if seed_axis else (0,), np.float32)
  return np.concatenate(out, axis=-1)


def check_advantages(adv: np.ndarray) -> None:
  """Raise DivergenceError naming the seeds and the first datum whose advantage is not finite.  adv: [N] or
  [num_seeds, N]"""
  bad = ~np.isfinite(adv)
  if not bad.any():
    return
  per_seed = np.atleast_2d(bad)
  seeds = np.flatnonzero(per_seed.any(axis=1)).tolist()
  first = int(np.flatnonzero(per_seed[seeds[0]])[0])
  raise DivergenceError(
      f"SWG weights: {int(per_seed.sum())} of {per_seed.size} advantages A(s, a) are non-finite (seeds at positions "
      f"{seeds}; the first at datum {first}: {np.atleast_2d(adv)[seeds[0], first]}): the critic's Q or V is broken. "
      "Its training (critic.lr) or checkpoint is at fault; no weights were computed from it", stage="weights")


def compute_weights(critic: iql.CriticState, observations, actions, config, *,
                    seed_axis: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(weights [N], advantages [N]) with config fields kind, expectile, temperature, clip_min, clip_max,
  hard_threshold, chunk_size. seed_axis: a seed-stacked critic, giving [num_seeds, N] each.

  Raises DivergenceError when an advantage is NaN or inf: weights from them would train the model on garbage."""
  adv = compute_advantages(critic, observations, actions, chunk_size=config.get("chunk_size", 16384),
                           seed_axis=seed_axis)
  check_advantages(adv)
  w = weights_from_advantage(jnp.asarray(adv), config.kind, expectile=config.expectile,
                             temperature=config.temperature, clip_min=config.clip_min, clip_max=config.clip_max,
                             hard_threshold=config.hard_threshold)
  return np.asarray(w, np.float32), adv
