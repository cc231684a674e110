"""Offline datasets as device-resident pytrees, batch sampling inside jitted code.

Loading happens on the host in numpy (`Transitions`, with the episode structure needed for reward preprocessing);
`Transitions.to_device()` gives the `OfflineData` pytree that training code samples from with `sample_batch`.

Sources: D4RL hdf5 files (read with exactly the semantics of `d4rl.qlearning_dataset`, without d4rl or mujoco-py) and
Minari datasets stored locally. `load_dataset` resolves a path, a D4RL name or a Minari id. Every loader validates
its arrays (`validate`) and raises `DatasetError` naming the key, shape, value or first bad index.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from common import antmaze


class OfflineData(flax.struct.PyTreeNode):
  """Transitions (s, a, r, s', mask). observations [N, S], actions [N, A], rewards [N], next_observations [N, S],
  masks [N] with mask = 1 - terminal (a timeout/truncation is not a terminal)."""

  observations: jax.Array
  actions: jax.Array
  rewards: jax.Array
  next_observations: jax.Array
  masks: jax.Array

  @property
  def size(self) -> int:
    return self.observations.shape[0]

  @property
  def obs_dim(self) -> int:
    return self.observations.shape[-1]

  @property
  def action_dim(self) -> int:
    return self.actions.shape[-1]


def sample_batch(data: OfflineData, key: jax.Array, batch_size: int) -> OfflineData:
  """Uniformly sampled (with replacement) batch of transitions; runs on device inside jit."""
  idx = jax.random.randint(key, (batch_size,), 0, data.size)
  return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)


# ----------------------------------------------------------------------------------------------------------------
# Errors and validation
# ----------------------------------------------------------------------------------------------------------------


class DatasetError(ValueError):
  """A dataset is missing, unreadable or malformed. The message names the offending key, shape, value or index."""


_VECTOR_KEYS = ("observations", "next_observations", "actions")  # [N, D]
_SCALAR_KEYS = ("rewards", "terminals", "timeouts")  # [N]
TRANSITION_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")
D4RL_KEYS = ("observations", "actions", "rewards", "terminals")  # plus "timeouts" in newer files

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
# D4RL semantics
# ----------------------------------------------------------------------------------------------------------------


def _legacy_final_timesteps(terminals: np.ndarray, max_episode_steps: int) -> np.ndarray:
  """d4rl's timeout rule for files without a `timeouts` key: index i is a (dropped) final timestep when its episode
  step counter equals max_episode_steps - 1. [M] bool -> [M] bool.

  The counter is d4rl's, quirks included: it restarts at 0 after a dropped final timestep, but at 1 after a kept
  terminal (d4rl zeroes it and then increments it for the terminal's own transition). A terminal that falls on a final
  timestep is dropped like any final timestep and restarts the counter at 0. The loop runs over terminals only.
  """
  m = terminals.shape[0]
  final = np.zeros(m, dtype=bool)
  start, step0 = 0, 0  # the counter equals step0 at index start and grows by one per index until a reset

  def mark(stop: int) -> None:  # final timesteps of the current run of the counter, in [start, stop)
    if step0 <= max_episode_steps - 1:
      final[start + max_episode_steps - 1 - step0:stop:max_episode_steps] = True

  for t in np.flatnonzero(terminals):
    mark(t + 1)
    if not final[t]:  # a kept terminal: the counter is 1 at t + 1
      start, step0 = t + 1, 1
  mark(m)
  return final


def qlearning_dataset(raw: Mapping[str, np.ndarray], *, max_episode_steps: int = 1000) -> dict[str, np.ndarray]:
  """`d4rl.qlearning_dataset(env, dataset=raw)`, vectorised and exactly equivalent.

  raw: observations [N, S], actions [N, A], rewards [N], terminals [N], optional timeouts [N] (any other key,
  including a stored next_observations, is ignored). For i in range(N - 1): the transition is
  (obs[i], act[i], rew[i], obs[i + 1], terminal[i]); it is dropped when i is a final timestep: timeouts[i] if the key
  exists, else d4rl's old rule that an episode ends every `max_episode_steps` steps (d4rl uses
  env._max_episode_steps; 1000 for locomotion). Returns observations [M, S] f32, actions [M, A] f32,
  next_observations [M, S] f32, rewards [M] f32, terminals [M] bool.
  """
  obs = np.asarray(raw["observations"])
  n = np.asarray(raw["rewards"]).shape[0]
  terminals = np.asarray(raw["terminals"])[: n - 1] != 0
  if "timeouts" in raw:
    final = np.asarray(raw["timeouts"])[: n - 1] != 0
  else:
    final = _legacy_final_timesteps(terminals, max_episode_steps)
  keep = np.flatnonzero(~final)
  return {
      "observations": obs[keep].astype(np.float32),
      "actions": np.asarray(raw["actions"])[keep].astype(np.float32),
      "next_observations": obs[keep + 1].astype(np.float32),
      "rewards": np.asarray(raw["rewards"])[keep].astype(np.float32),
      "terminals": terminals[keep],
  }


def d4rl_episode_ends(observations: np.ndarray, next_observations: np.ndarray, terminals: np.ndarray) -> np.ndarray:
  """Where episodes end in a `qlearning_dataset` output: [N, S], [N, S], [N] -> [N] bool.

  An episode ends at a terminal, where the chain s'[i] == s[i + 1] breaks (a dropped timeout transition), and at the
  last transition. This is the episode split of the official SWG code (jaxrl5's D4RLDataset `dones`).
  """
  ends = np.asarray(terminals) != 0
  if ends.shape[0]:
    ends[:-1] |= np.any(np.asarray(next_observations)[:-1] != np.asarray(observations)[1:], axis=1)
    ends[-1] = True
  return ends


def iql_episode_ends(terminals: np.ndarray, max_episode_steps: int = 1000) -> np.ndarray:
  """The episode split of IQL's / SRPO's `return_range(dataset, 1000)`: [N] -> [N] bool.

  Walking the transitions with a counter, an episode ends at a terminal or when the counter reaches
  `max_episode_steps`. Timeout boundaries are ignored, and a trailing run without an end is an incomplete episode
  (not counted by `episode_returns`), exactly as in the official SRPO code.
  """
  term = np.asarray(terminals) != 0
  idx = np.arange(term.shape[0])
  last_term = np.maximum.accumulate(np.where(term, idx, -1)) if term.size else idx
  start = np.concatenate([[0], last_term[:-1] + 1]) if term.size else idx  # first index of the current run
  return term | ((idx - start + 1) % max_episode_steps == 0)


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


# ----------------------------------------------------------------------------------------------------------------
# D4RL datasets
# ----------------------------------------------------------------------------------------------------------------

_D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl"


@dataclasses.dataclass(frozen=True)
class D4RLSpec:
  """One D4RL dataset: where d4rl downloads it from, and how to evaluate on it without mujoco-py."""

  url: str
  ref_min_score: float
  ref_max_score: float
  max_episode_steps: int
  env_id: str | None = None  # Gymnasium evaluation env (locomotion: MuJoCo v4, the v3 model files of the data;
                             # AntMaze: common.antmaze's rebuild of D4RL's env)
  minari_id: str | None = None  # Minari port (regenerated data; its eval env replaces the mujoco-py one)
  obs_dim: int | None = None
  action_dim: int | None = None

  @property
  def filename(self) -> str:
    """The file name d4rl stores it under in $D4RL_DATASET_DIR (default ~/.d4rl/datasets)."""
    return self.url.rsplit("/", 1)[-1]


def _d4rl_table() -> dict[str, D4RLSpec]:
  table = {}
  locomotion = {  # name: (gymnasium env, ref min, ref max, obs dim, action dim)
      "halfcheetah": ("HalfCheetah-v4", -280.178953, 12135.0, 17, 6),
      "hopper": ("Hopper-v4", -20.272305, 3234.3, 11, 3),
      "walker2d": ("Walker2d-v4", 1.629008, 4592.3, 17, 6),
  }
  for env, (env_id, lo, hi, s, a) in locomotion.items():
    for level in ("random", "medium", "medium-replay", "medium-expert", "expert"):
      url = f"{_D4RL_URL}/gym_mujoco_v2/{env}_{level.replace('-', '_')}-v2.hdf5"
      table[f"{env}-{level}-v2"] = D4RLSpec(url, lo, hi, 1000, env_id, None, s, a)
  mazes = {  # name: file stem
      "umaze": "u-maze_noisy_multistart_False_multigoal_False",
      "umaze-diverse": "u-maze_noisy_multistart_True_multigoal_True",
      "medium-play": "big-maze_noisy_multistart_True_multigoal_False",
      "medium-diverse": "big-maze_noisy_multistart_True_multigoal_True",
      "large-play": "hardest-maze_noisy_multistart_True_multigoal_False",
      "large-diverse": "hardest-maze_noisy_multistart_True_multigoal_True",
  }
  for maze, stem in mazes.items():
    minari_id = f"D4RL/antmaze/{maze}-v1"
    layout = maze.split("-")[0]
    env_id, steps = antmaze.ENV_IDS[layout], antmaze.MAX_EPISODE_STEPS[layout]
    table[f"antmaze-{maze}-v0"] = D4RLSpec(
        f"{_D4RL_URL}/ant_maze_new/Ant_maze_{stem}_sparse.hdf5", 0.0, 1.0, steps, env_id, minari_id, 29, 8)
    table[f"antmaze-{maze}-v2"] = D4RLSpec(
        f"{_D4RL_URL}/ant_maze_v2/Ant_maze_{stem}_sparse_fixed.hdf5", 0.0, 1.0, steps, env_id, minari_id, 29, 8)
  kitchens = {
      "complete": "mini_kitchen_microwave_kettle_light_slider-v0.hdf5",
      "partial": "kitchen_microwave_kettle_light_slider-v0.hdf5",
      "mixed": "kitchen_microwave_kettle_bottomburner_light-v0.hdf5",
  }
  for task, file in kitchens.items():
    table[f"kitchen-{task}-v0"] = D4RLSpec(
        f"{_D4RL_URL}/kitchen/{file}", 0.0, 4.0, 280, None, f"D4RL/kitchen/{task}-v2", 60, 9)
  adroit = {  # task: (ref min, ref max, max episode steps); d4rl's v1 datasets reuse the v0 reference scores
      "pen": (96.262799, 3076.8331017826877, 100),
      "hammer": (-274.856578, 12794.134825156867, 200),
      "door": (-56.512833, 2880.5693087298737, 200),
      "relocate": (-6.425911, 4233.877797728884, 200),
  }
  for task, (lo, hi, steps) in adroit.items():
    for level in ("human", "cloned", "expert"):
      table[f"{task}-{level}-v1"] = D4RLSpec(
          f"{_D4RL_URL}/hand_dapg_v1/{task}-{level}-v1.hdf5", lo, hi, steps, None, f"D4RL/{task}/{level}-v2")
  return table


D4RL_DATASETS: dict[str, D4RLSpec] = _d4rl_table()


def d4rl_dataset_dir() -> pathlib.Path:
  """Where d4rl keeps its hdf5 files: $D4RL_DATASET_DIR, else ~/.d4rl/datasets."""
  return pathlib.Path(os.environ.get("D4RL_DATASET_DIR", os.path.expanduser("~/.d4rl/datasets")))


def read_d4rl_hdf5(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The raw arrays of a D4RL hdf5 file: observations [N, S], actions [N, A], rewards [N], terminals [N] and, when
  present, timeouts [N]. [N, 1] rewards / terminals / timeouts are squeezed to [N] (as d4rl's get_dataset does);
  other keys (infos/*, metadata/*, next_observations) are not read."""
  import h5py

  path = pathlib.Path(path)
  if not path.is_file():
    raise DatasetError(f"no such D4RL hdf5 file: {path}")
  raw = {}
  try:
    with h5py.File(path, "r") as f:
      for key in (*D4RL_KEYS, "timeouts"):
        if key not in f:
          if key == "timeouts":
            continue
          raise DatasetError(f"{path}: missing key {key!r} (file has keys {sorted(f.keys())})")
        if not isinstance(f[key], h5py.Dataset):
          raise DatasetError(f"{path}: {key!r} is a group, expected an array")
        raw[key] = f[key][()]
  except DatasetError:
    raise
  except Exception as e:  # h5py raises OSError / KeyError / RuntimeError on corrupt or truncated files
    raise DatasetError(
        f"cannot read {path} as a D4RL hdf5 file ({type(e).__name__}: {e}); the file is corrupt or truncated "
        "(an interrupted download?): delete it and fetch it again") from e
  n = raw["observations"].shape[0] if np.ndim(raw["observations"]) else 0
  for key in _SCALAR_KEYS:
    if key in raw and raw[key].shape == (n, 1):
      raw[key] = raw[key][:, 0]
  return raw


def d4rl_transitions(
    raw_or_path: Mapping[str, np.ndarray] | str | os.PathLike,
    *,
    max_episode_steps: int = 1000,
    env_obs_dim: int | None = None,
    env_action_dim: int | None = None,
) -> Transitions:
  """Validated `qlearning_dataset` transitions of a D4RL file (or of its raw arrays), with `d4rl_episode_ends`."""
  raw = raw_or_path if isinstance(raw_or_path, Mapping) else read_d4rl_hdf5(raw_or_path)
  validate(raw, env_obs_dim, env_action_dim, required=D4RL_KEYS)
  q = qlearning_dataset(raw, max_episode_steps=max_episode_steps)
  if q["rewards"].shape[0] == 0:
    raise DatasetError(
        f"empty dataset: no transitions left out of {np.shape(raw['rewards'])[0]} rows (the last row and every "
        "timeout row are dropped)")
  return _make_transitions(q, d4rl_episode_ends(q["observations"], q["next_observations"], q["terminals"]))


def load_d4rl_hdf5(path: str | os.PathLike, *, max_episode_steps: int = 1000) -> OfflineData:
  """A D4RL hdf5 file as `OfflineData` (raw rewards, masks = 1 - terminals), with d4rl.qlearning_dataset semantics."""
  return d4rl_transitions(path, max_episode_steps=max_episode_steps).to_device()


def fetch_d4rl_file(name: str, *, download: bool = True) -> pathlib.Path:
  """Local path of the hdf5 file of D4RL dataset `name`, downloading it from d4rl's URL if absent and allowed.

  The download goes to a temporary file beside the target and is renamed into place only when complete.
  """
  spec = D4RL_DATASETS[name]
  target = d4rl_dataset_dir() / spec.filename
  if target.is_file():
    return target
  where = (f"download {spec.url} on a machine with internet access and put it at {target} (or point "
           f"D4RL_DATASET_DIR at the folder that holds {spec.filename})")
  if not download:
    raise DatasetError(f"D4RL dataset {name!r} not found at {target}; {where}")
  tmp = None
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{spec.filename}.", suffix=".part",
                                     delete=False) as out:
      tmp = pathlib.Path(out.name)
      with urllib.request.urlopen(spec.url, timeout=60) as response:
        shutil.copyfileobj(response, out, length=1 << 20)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
  except Exception as e:
    if tmp is not None:
      tmp.unlink(missing_ok=True)
    raise DatasetError(f"D4RL dataset {name!r} not found at {target} and downloading it failed "
                       f"({type(e).__name__}: {e}); {where}") from e
  return target


# ----------------------------------------------------------------------------------------------------------------
# Minari datasets
# ----------------------------------------------------------------------------------------------------------------


def _minari_root() -> pathlib.Path:
  """Minari's storage root: $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
  return pathlib.Path(os.environ.get("MINARI_DATASETS_PATH") or os.path.expanduser("~/.minari/datasets"))


def minari_observation_vector(obs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
  """Flat observations [T, S] from a Minari episode's observations: an array as is; a goal dict (AntMaze) as
  concat(achieved_goal, observation), D4RL's 29-d AntMaze layout."""
  if isinstance(obs, Mapping):
    if "achieved_goal" in obs and "observation" in obs:
      return np.concatenate([np.asarray(obs["achieved_goal"]), np.asarray(obs["observation"])], axis=-1)
    raise DatasetError(
        f"dict observations with keys {sorted(obs)} are not supported; expected 'achieved_goal' and 'observation' "
        "(flattened as concat(achieved_goal, observation))")
  obs = np.asarray(obs)
  if obs.ndim != 2:
    raise DatasetError(f"observations of an episode have shape {obs.shape}; expected [T + 1, S]")
  return obs


def minari_transitions(
    dataset_id: str,
    *,
    env_obs_dim: int | None = None,
    env_action_dim: int | None = None,
) -> tuple[Transitions, dict[str, Any]]:
  """Validated transitions of a locally stored Minari dataset, and its metadata (env ids, reference scores).

  Per episode (T + 1 observations, T actions): s = obs[:-1], s' = obs[1:], terminal = terminations (truncations are
  not terminals); every episode ends at its last step. Storage root: $MINARI_DATASETS_PATH (default
  ~/.minari/datasets). Nothing is downloaded.
  """
  import minari

  try:
    ds = minari.load_dataset(dataset_id)
  except FileNotFoundError as e:
    raise DatasetError(
        f"Minari dataset {dataset_id!r} is not stored locally (no {_minari_root() / dataset_id / 'data'}); on a "
        f"machine with internet run `minari download {dataset_id}` and copy it under $MINARI_DATASETS_PATH "
        f"(now {_minari_root()})") from e
  except Exception as e:
    raise DatasetError(f"cannot read Minari dataset {dataset_id!r} ({type(e).__name__}: {e})") from e

  parts: dict[str, list[np.ndarray]] = {k: [] for k in (*TRANSITION_KEYS, "episode_ends")}
  for ep in ds.iterate_episodes():
    obs = minari_observation_vector(ep.observations)
    actions = np.asarray(ep.actions)
    t = actions.shape[0]
    if t == 0:
      continue
    if obs.shape[0] != t + 1 or actions.ndim != 2:
      raise DatasetError(
          f"Minari dataset {dataset_id!r}, episode {ep.id}: observations {obs.shape} and actions {actions.shape}; "
          "expected T + 1 observations [T + 1, S] and T actions [T, A]")
    ends = np.zeros(t, dtype=bool)
    ends[-1] = True
    parts["observations"].append(obs[:-1])
    parts["next_observations"].append(obs[1:])
    parts["actions"].append(actions)
    parts["rewards"].append(np.asarray(ep.rewards).reshape(t))
    parts["terminals"].append(np.asarray(ep.terminations).reshape(t))
    parts["episode_ends"].append(ends)
  if not parts["rewards"]:
    raise DatasetError(f"empty dataset: Minari dataset {dataset_id!r} has no steps")
  arrays = {k: np.concatenate(v) for k, v in parts.items()}
  validate(arrays, env_obs_dim, env_action_dim)
  meta = ds.storage.metadata
  eval_spec = _spec_dict(meta.get("eval_env_spec"))
  if not eval_spec.get("id"):
    eval_spec = _spec_dict(meta.get("env_spec"))
  info = {
      "env_id": eval_spec.get("id"),
      "env_kwargs": dict(eval_spec.get("kwargs") or {}),  # e.g. an AntMaze's maze_map with its start and goal
      "ref_min_score": meta.get("ref_min_score"),
      "ref_max_score": meta.get("ref_max_score"),
  }
  return _make_transitions(arrays, arrays["episode_ends"]), info


def _spec_dict(spec: Any) -> dict[str, Any]:
  """{"id", "kwargs", ...} of a Minari metadata env spec (an EnvSpec JSON string) without building the env."""
  if isinstance(spec, str):
    try:
      spec = json.loads(spec)
    except ValueError:
      return {}
    return spec if isinstance(spec, dict) else {}
  return {"id": getattr(spec, "id", None), "kwargs": getattr(spec, "kwargs", None)}


def load_minari(dataset_id: str) -> OfflineData:
  """A locally stored Minari dataset as `OfflineData` (raw rewards, masks = 1 - terminations)."""
  return minari_transitions(dataset_id)[0].to_device()


# ----------------------------------------------------------------------------------------------------------------
# One entry point
# ----------------------------------------------------------------------------------------------------------------

_MINARI_ID = re.compile(r"^[\w.-]+(/[\w.-]+)+-v\d+$")  # namespace/env/dataset-vN


def _minari_has_locally(dataset_id: str) -> bool:
  return bool(dataset_id) and (_minari_root() / dataset_id / "data").is_dir()


def _unknown_id_message(name: str) -> str:
  names = ", ".join(n for n in D4RL_DATASETS if "medium" in n and n.endswith("-v2") and "antmaze" not in n)
  names += ", " + ", ".join(n for n in D4RL_DATASETS if n.startswith("antmaze") and n.endswith("-v0"))
  return (f"unknown dataset id {name!r}. Pass a path to a D4RL .hdf5/.h5 file, a D4RL name (e.g. {names}; all of "
          "them in common.data.D4RL_DATASETS, files looked up in $D4RL_DATASET_DIR or ~/.d4rl/datasets), or a Minari "
          "id such as 'mujoco/hopper/medium-v0' or 'D4RL/antmaze/umaze-v1' stored under $MINARI_DATASETS_PATH "
          "(get one with `minari download <id>` on a machine with internet)")


def load_dataset(
    name_or_path: str,
    *,
    reward_kind: str | None = None,
    download: bool = True,
    episode_rule: str = "episodes",
    env_obs_dim: int | None = None,
    env_action_dim: int | None = None,
) -> tuple[OfflineData, dict[str, Any]]:
  """Loads, validates and reward-preprocesses a dataset; returns (`OfflineData`, info).

  name_or_path: a path ending in .hdf5 / .h5 (a D4RL-style file); a D4RL name from `D4RL_DATASETS` such as
  'hopper-medium-v2' or 'antmaze-umaze-v0' (downloaded from d4rl's URL when absent and `download`); or a Minari id
  stored locally ('mujoco/hopper/medium-v0', 'D4RL/antmaze/umaze-v1', ...).
  reward_kind: "locomotion", "antmaze" or "none"; None infers it from the name (`infer_reward_kind`).
  episode_rule: episodes for the locomotion return range: "episodes" (true episodes: terminals, timeouts /
  truncations, end of data; official SWG code) or "iql" (terminals or every 1000 transitions, trailing run dropped;
  official SRPO / IQL `return_range`).
  info: source ("hdf5" | "d4rl" | "minari"), name, path, d4rl_name, minari_id, env_id (Gymnasium eval env, or None
  where there is none: D4RL Kitchen / Adroit, whose Minari ports bring theirs), env_kwargs (Minari: its eval env
  spec's kwargs), ref_min_score,
  ref_max_score, max_episode_steps, reward_kind, episode_rule, size, obs_dim, action_dim, num_episodes.
  """
  if episode_rule not in EPISODE_RULES:
    raise DatasetError(f"unknown episode_rule {episode_rule!r}; expected one of {EPISODE_RULES}")
  if reward_kind is not None and reward_kind not in REWARD_KINDS:
    raise DatasetError(f"unknown reward kind {reward_kind!r}; expected one of {REWARD_KINDS}")
  name = str(name_or_path)
  info: dict[str, Any] = {"name": name, "path": None, "d4rl_name": None, "minari_id": None, "env_id": None,
                          "ref_min_score": None, "ref_max_score": None, "max_episode_steps": None}
  if name.lower().endswith((".hdf5", ".h5")) or name in D4RL_DATASETS:
    is_path = name not in D4RL_DATASETS
    path = pathlib.Path(name).expanduser() if is_path else fetch_d4rl_file(name, download=download)
    d4rl_name = name if not is_path else next((n for n, s in D4RL_DATASETS.items() if s.filename == path.name), None)
    spec = D4RL_DATASETS.get(d4rl_name)
    steps = spec.max_episode_steps if spec else 1000
    transitions = d4rl_transitions(
        path, max_episode_steps=steps,
        env_obs_dim=env_obs_dim if env_obs_dim is not None else (spec and spec.obs_dim),
        env_action_dim=env_action_dim if env_action_dim is not None else (spec and spec.action_dim))
    info.update(source="hdf5" if is_path else "d4rl", path=str(path), d4rl_name=d4rl_name, max_episode_steps=steps)
    if spec:
      info.update(env_id=spec.env_id, minari_id=spec.minari_id, ref_min_score=spec.ref_min_score,
                  ref_max_score=spec.ref_max_score)
    kind_from = d4rl_name or path.name
  elif _MINARI_ID.match(name) or _minari_has_locally(name):
    transitions, minari_info = minari_transitions(name, env_obs_dim=env_obs_dim, env_action_dim=env_action_dim)
    info.update(source="minari", minari_id=name, **minari_info)
    kind_from = name
  else:
    raise DatasetError(_unknown_id_message(name))

  kind = reward_kind if reward_kind is not None else infer_reward_kind(kind_from)
  ends = transitions.episode_ends if episode_rule == "episodes" else iql_episode_ends(transitions.terminals)
  transitions = transitions.replace(rewards=preprocess_rewards(transitions.rewards, kind, ends))
  info.update(reward_kind=kind, episode_rule=episode_rule, size=transitions.size,
              obs_dim=transitions.observations.shape[1], action_dim=transitions.actions.shape[1],
              num_episodes=transitions.num_episodes)
  return transitions.to_device(), info
