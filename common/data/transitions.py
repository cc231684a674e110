"""From a loader's arrays to transitions: `DatasetError` and the `validate` checks every loader runs, the host-side
`Transitions` the loaders return, and reward preprocessing. (The `OfflineData` pytree the training steps read is in
`common.offline_data`.)

Loaders live beside it (`common.data.d4rl_files`, `common.data.minari_datasets`); `common.data` resolves a name to one
of them and re-exports everything here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from common.offline_data import OfflineData, sample_batch  # noqa: F401  (re-exported by common.data)


# ----------------------------------------------------------------------------------------------------------------
# Errors and validation
# ----------------------------------------------------------------------------------------------------------------


class DatasetError(ValueError):
  """A dataset is missing, unreadable or malformed. The message names the offending key, shape, value or index."""


_VECTOR_KEYS = ("observations", "next_observations", "actions")  # [N, D]
_SCALAR_KEYS = ("rewards", "terminals", "timeouts")  # [N]
TRANSITION_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")

ACTION_TOLERANCE = 1e-4


def validate(
    arrays: Mapping[str, np.ndarray],
    env_obs_dim: int | None = None,
    env_action_dim: int | None = None,
    *,
    required: tuple[str, ...] = TRANSITION_KEYS,
    action_tol: float = ACTION_TOLERANCE,
) -> int:
  """Checks a dict of transition arrays and returns N; raises `DatasetError` on the first problem found.

  Checked: every `required` key is present; observations / next_observations / actions are [N, D] and rewards /
  terminals / timeouts are [N] with one N for all; the dataset is not empty; values are numeric and finite; the
  obs / action dims agree with each other and with `env_obs_dim` / `env_action_dim`; actions lie in [-1, 1] up to
  `action_tol`. Keys other than the known ones are ignored.
  """
  missing = [k for k in required if k not in arrays]
  if missing:
    raise DatasetError(f"missing key {missing[0]!r} (dataset has keys {sorted(arrays)})")
  known = [k for k in (*_VECTOR_KEYS, *_SCALAR_KEYS) if k in arrays]
  n = None
  for k in known:
    x = np.asarray(arrays[k])
    want_ndim = 2 if k in _VECTOR_KEYS else 1
    if x.ndim != want_ndim:
      layout = "[N, D]" if want_ndim == 2 else "[N]"
      raise DatasetError(f"{k} has shape {x.shape}; expected {layout}")
    if n is None:
      n = x.shape[0]
    elif x.shape[0] != n:
      raise DatasetError(f"{k} has {x.shape[0]} rows but {known[0]} has {n} (shape {x.shape})")
  if not n:
    raise DatasetError(f"empty dataset: 0 transitions (shapes {({k: np.shape(arrays[k]) for k in known})})")
  for k in known:
    x = np.asarray(arrays[k])
    if x.dtype.kind not in "biuf":
      raise DatasetError(f"{k} has dtype {x.dtype}; expected numbers")
    if x.dtype.kind == "f":
      bad = ~np.isfinite(x)
      if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DatasetError(f"{k} has a non-finite value ({x[where]}) at index {where[0]} (element {where})")
  obs_dim = np.shape(arrays["observations"])[1] if "observations" in arrays else None
  if "next_observations" in arrays and obs_dim is not None and np.shape(arrays["next_observations"])[1] != obs_dim:
    raise DatasetError(
        f"next_observations has shape {np.shape(arrays['next_observations'])} but observations has "
        f"{np.shape(arrays['observations'])}")
  if env_obs_dim is not None and obs_dim is not None and obs_dim != env_obs_dim:
    raise DatasetError(
        f"observations has shape {np.shape(arrays['observations'])}: obs dim {obs_dim} != env obs dim {env_obs_dim}")
  if "actions" in arrays:
    a = np.asarray(arrays["actions"])
    if env_action_dim is not None and a.shape[1] != env_action_dim:
      raise DatasetError(f"actions has shape {a.shape}: action dim {a.shape[1]} != env action dim {env_action_dim}")
    if a.size:
      flat = int(np.argmax(np.abs(a)))
      where = np.unravel_index(flat, a.shape)
      biggest = float(np.abs(a[where]))
      if biggest > 1.0 + action_tol:
        raise DatasetError(
            f"actions outside [-1, 1]: max |a| = {biggest:.6g} at index {int(where[0])} (element "
            f"{tuple(int(i) for i in where)}); rescale the actions to the env's [-1, 1] box")
  return int(n)


# ----------------------------------------------------------------------------------------------------------------
# Host-side transitions with episode structure
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Transitions:
  """Host-side (numpy) transitions plus where episodes end; the loaders' common output.

  observations [N, S] f32, actions [N, A] f32, rewards [N] f32, next_observations [N, S] f32, terminals [N] f32 in
  {0, 1} (a timeout / truncation is not a terminal), episode_ends [N] bool: True on the last transition of an episode
  (terminal, timeout / truncation, or end of the data).
  """

  observations: np.ndarray
  actions: np.ndarray
  rewards: np.ndarray
  next_observations: np.ndarray
  terminals: np.ndarray
  episode_ends: np.ndarray

  @property
  def size(self) -> int:
    return self.observations.shape[0]

  @property
  def num_episodes(self) -> int:
    return int(self.episode_ends.sum())

  def replace(self, **changes: Any) -> Transitions:
    return dataclasses.replace(self, **changes)

  def to_device(self) -> OfflineData:
    """The `OfflineData` pytree (float32 device arrays, masks = 1 - terminals)."""
    f32 = lambda x: jnp.asarray(x, dtype=jnp.float32)
    return OfflineData(
        observations=f32(self.observations),
        actions=f32(self.actions),
        rewards=f32(self.rewards),
        next_observations=f32(self.next_observations),
        masks=f32(1.0 - self.terminals))


def _make_transitions(arrays: Mapping[str, np.ndarray], episode_ends: np.ndarray) -> Transitions:
  f32 = lambda k: np.ascontiguousarray(arrays[k], dtype=np.float32)
  return Transitions(
      observations=f32("observations"),
      actions=f32("actions"),
      rewards=f32("rewards"),
      next_observations=f32("next_observations"),
      terminals=f32("terminals"),
      episode_ends=np.asarray(episode_ends, dtype=bool))


# ----------------------------------------------------------------------------------------------------------------
# Reward preprocessing
# ----------------------------------------------------------------------------------------------------------------

REWARD_KINDS = ("locomotion", "antmaze", "none")
EPISODE_RULES = ("episodes", "iql")


def episode_returns(rewards: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
  """Undiscounted return of every complete episode: rewards [N], episode_ends [N] bool -> [E] float64.

  Episode e is the run of transitions up to and including the e-th True of episode_ends; transitions after the last
  True form an incomplete episode and are not counted.
  """
  rewards = np.asarray(rewards, dtype=np.float64)
  ends = np.flatnonzero(episode_ends)
  if ends.size == 0:
    return np.zeros((0,), np.float64)
  starts = np.concatenate([[0], ends[:-1] + 1])
  return np.add.reduceat(rewards[: ends[-1] + 1], starts)


def preprocess_rewards(rewards: np.ndarray, kind: str, episode_ends: np.ndarray | None = None) -> np.ndarray:
  """Rewards as both papers train on them: [N] -> [N] float32.

  "locomotion": r * 1000 / (max episode return - min episode return) over the episodes given by episode_ends (see
  `episode_returns`); "antmaze": r - 1; "none": unchanged.
  """
  rewards = np.asarray(rewards, dtype=np.float32)
  if kind == "none":
    return rewards.copy()
  if kind == "antmaze":
    return rewards - np.float32(1.0)
  if kind == "locomotion":
    if episode_ends is None:
      raise DatasetError("reward kind 'locomotion' needs episode_ends")
    returns = episode_returns(rewards, episode_ends)
    if returns.size == 0:
      raise DatasetError("reward kind 'locomotion': the dataset has no complete episode to take returns over")
    span = float(returns.max() - returns.min())
    if not span > 0:
      raise DatasetError(
          f"reward kind 'locomotion': all {returns.size} episode returns are equal ({returns[0]:.6g}), "
          "so max - min return is 0")
    return (rewards / np.float32(span) * np.float32(1000.0)).astype(np.float32)
  raise DatasetError(f"unknown reward kind {kind!r}; expected one of {REWARD_KINDS}")


def infer_reward_kind(name: str) -> str:
  """Reward kind from a dataset name or path: antmaze -> "antmaze"; halfcheetah / hopper / walker2d ->
  "locomotion"; anything else (kitchen, adroit, ...) -> "none"."""
  lowered = name.lower()
  if "antmaze" in lowered or "ant_maze" in lowered:
    return "antmaze"
  if any(env in lowered for env in ("halfcheetah", "hopper", "walker")):
    return "locomotion"
  return "none"
