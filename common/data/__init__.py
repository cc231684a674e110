"""Offline datasets as device-resident pytrees, batch sampling inside jitted code.

Loading happens on the host in numpy (`Transitions`, with the episode structure needed for reward preprocessing);
`Transitions.to_device()` gives the `OfflineData` pytree that training code samples from with `sample_batch`.

Sources: D4RL hdf5 files (read with exactly the semantics of `d4rl.qlearning_dataset`, without d4rl or mujoco-py) and
Minari datasets stored locally. `load_dataset` resolves a path, a D4RL name or a Minari id. Every loader validates
its arrays (`validate`) and raises `DatasetError` naming the key, shape, value or first bad index.

The code is split by source: `common.data.transitions` (OfflineData, Transitions, validation, rewards), `common.data.d4rl_files`
(hdf5 files, the D4RL table) and `common.data.minari_datasets`; everything is re-exported here, so `from common.data import X`
works for all of them.
"""
from __future__ import annotations

import pathlib
import re
from typing import Any

# Re-exported, so that `from common.data import X` works for every public name of the three modules.
from common.data.transitions import (  # noqa: F401
    ACTION_TOLERANCE, EPISODE_RULES, REWARD_KINDS, TRANSITION_KEYS, DatasetError, OfflineData, Transitions,
    episode_returns, infer_reward_kind, preprocess_rewards, sample_batch, validate)
from common.data.d4rl_files import (  # noqa: F401
    D4RL_DATASETS, D4RL_KEYS, D4RLSpec, d4rl_dataset_dir, d4rl_episode_ends, d4rl_transitions, fetch_d4rl_file,
    iql_episode_ends, load_d4rl_hdf5, qlearning_dataset, read_d4rl_hdf5)
from common.data.minari_datasets import (  # noqa: F401
    _minari_root, load_minari, minari_observation_vector, minari_transitions)

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


def _unreadable_path_message(name: str) -> str:
  """For a name that is an existing file or directory this cannot read: say so, and which formats are read."""
  path = pathlib.Path(name).expanduser()
  what = "a directory" if path.is_dir() else f"a {path.suffix or 'extension-less'} file"
  return (f"{name!r} exists but is {what}, which is not a dataset format read here. Read are: D4RL-style HDF5 "
          "files whose name ends in .hdf5 or .h5 (arrays observations, actions, rewards, terminals, optionally "
          "timeouts), D4RL names (e.g. 'hopper-medium-v2'; all in common.data.D4RL_DATASETS) and Minari ids stored "
          "under $MINARI_DATASETS_PATH (e.g. 'mujoco/hopper/medium-v0')")


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
  elif name and pathlib.Path(name).expanduser().exists():
    raise DatasetError(_unreadable_path_message(name))
  else:
    raise DatasetError(_unknown_id_message(name))

  kind = reward_kind if reward_kind is not None else infer_reward_kind(kind_from)
  ends = transitions.episode_ends if episode_rule == "episodes" else iql_episode_ends(transitions.terminals)
  transitions = transitions.replace(rewards=preprocess_rewards(transitions.rewards, kind, ends))
  info.update(reward_kind=kind, episode_rule=episode_rule, size=transitions.size,
              obs_dim=transitions.observations.shape[1], action_dim=transitions.actions.shape[1],
              num_episodes=transitions.num_episodes)
  return transitions.to_device(), info
