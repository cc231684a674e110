"""D4RL hdf5 files, read with exactly the semantics of `d4rl.qlearning_dataset` without d4rl or mujoco-py: the
transition and episode rules, the table of D4RL datasets (URLs, reference scores, evaluation envs), the reader and the
download."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping

import numpy as np
from common.envs import antmaze
from common.data.transitions import (_SCALAR_KEYS, DatasetError, OfflineData, Transitions, _make_transitions, validate)

D4RL_KEYS = ("observations", "actions", "rewards", "terminals")  # plus "timeouts" in newer files

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
                             # AntMaze: common.envs.antmaze's rebuild of D4RL's env)
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
    from common.checkpoint import umask_file_mode  # lazily: it imports orbax

    os.chmod(tmp, umask_file_mode())  # NamedTemporaryFile made it 0o600
    os.replace(tmp, target)
  except Exception as e:
    if tmp is not None:
      tmp.unlink(missing_ok=True)
    raise DatasetError(f"D4RL dataset {name!r} not found at {target} and downloading it failed "
                       f"({type(e).__name__}: {e}); {where}") from e
  return target
