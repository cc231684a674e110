"""Minari datasets stored locally (nothing is downloaded): episodes flattened into validated transitions, plus the
metadata that names the evaluation env and the reference scores."""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.data.ids import how_to_get
from common.data.transitions import TRANSITION_KEYS, DatasetError, OfflineData, Transitions, _make_transitions, validate


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
        f"Minari dataset {dataset_id!r} is not stored locally (no {_minari_root() / dataset_id / 'data'}, "
        f"MINARI_DATASETS_PATH={_minari_root()}): {how_to_get(dataset_id)}") from e
  except Exception as e:
    raise DatasetError(f"cannot read Minari dataset {dataset_id!r} in {_minari_root() / dataset_id / 'data'} "
                       f"({type(e).__name__}: {e}); the files are damaged: download or build it again") from e
  try:
    parts = _episode_parts(ds, dataset_id)
    meta = ds.storage.metadata
  except DatasetError:
    raise
  except Exception as e:  # h5py / minari on a truncated or overwritten file: any error, one line with the path
    raise DatasetError(f"cannot read the episodes of Minari dataset {dataset_id!r} in "
                       f"{_minari_root() / dataset_id / 'data'} ({type(e).__name__}: {str(e)[:200]}); the file is "
                       "truncated or damaged: download or build it again") from e
  if not parts["rewards"]:
    raise DatasetError(f"empty dataset: Minari dataset {dataset_id!r} has no steps")
  arrays = {k: np.concatenate(v) for k, v in parts.items()}
  validate(arrays, env_obs_dim, env_action_dim)
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


def _episode_parts(ds, dataset_id: str) -> dict[str, list[np.ndarray]]:
  """The transitions of every episode of a Minari dataset, per field: {key: [array per episode]}."""
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
  return parts


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
