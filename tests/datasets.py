"""Tiny datasets built offline for tests: D4RL-style hdf5 files and Minari datasets from a real MuJoCo env.

    arrays = d4rl_arrays((5, 7, 4), ("terminal", "timeout", "terminal"))
    path = write_hdf5(tmp_path / "tiny.hdf5", arrays)

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    make_minari_dataset("test/hopper/tiny-v0")
"""
from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np

EPISODE_END_KINDS = ("terminal", "timeout", "none")


def d4rl_arrays(
    episode_lengths: Sequence[int] = (5, 7, 4, 6),
    episode_ends: Sequence[str] = ("terminal", "timeout", "terminal", "timeout"),
    *,
    obs_dim: int = 3,
    action_dim: int = 2,
    seed: int = 0,
    timeouts: bool = True,
    stored_next_obs_offset: float | None = 100.0,
) -> dict[str, np.ndarray]:
  """Raw D4RL-style arrays: episodes laid end to end, one row per step.

  Episode e has episode_lengths[e] rows; its last row carries terminals = 1 ("terminal"), timeouts = 1 ("timeout")
  or neither ("none", e.g. data cut mid-episode). observations [N, obs_dim] ~ N(0, 1), actions [N, action_dim]
  ~ U(-1, 1), rewards [N] ~ N(0, 1), terminals [N] f32, timeouts [N] bool (only if `timeouts`). A next_observations
  key is stored as observations[i + 1] + stored_next_obs_offset (deliberately wrong: loaders must not use it;
  None leaves the key out).
  """
  if len(episode_lengths) != len(episode_ends) or any(e not in EPISODE_END_KINDS for e in episode_ends):
    raise ValueError(f"need one of {EPISODE_END_KINDS} per episode, got {episode_ends} for {episode_lengths}")
  rng = np.random.default_rng(seed)
  n = int(sum(episode_lengths))
  last_rows = np.cumsum(episode_lengths) - 1
  terminals = np.zeros(n, np.float32)
  timeout_flags = np.zeros(n, bool)
  for row, kind in zip(last_rows, episode_ends):
    terminals[row] = kind == "terminal"
    timeout_flags[row] = kind == "timeout"
  arrays = {
      "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
      "actions": rng.uniform(-1, 1, size=(n, action_dim)).astype(np.float32),
      "rewards": rng.normal(size=(n,)).astype(np.float32),
      "terminals": terminals,
  }
  if timeouts:
    arrays["timeouts"] = timeout_flags
  if stored_next_obs_offset is not None:
    shifted = np.concatenate([arrays["observations"][1:], arrays["observations"][-1:]])
    arrays["next_observations"] = shifted + np.float32(stored_next_obs_offset)
  return arrays


def write_hdf5(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> pathlib.Path:
  """Writes arrays to an hdf5 file, one dataset per key ('infos/qpos' style keys become groups). Returns the path."""
  import h5py

  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, "w") as f:
    for key, value in arrays.items():
      f.create_dataset(key, data=np.asarray(value))
  return path


def d4rl_hdf5(path: str | os.PathLike, **kwargs) -> pathlib.Path:
  """`write_hdf5(path, d4rl_arrays(**kwargs))`: a tiny D4RL-style file."""
  return write_hdf5(path, d4rl_arrays(**kwargs))


def _alternating_policy(episode: int, rng: np.random.Generator, action_space: gym.spaces.Box) -> np.ndarray:
  """Hopper-v5: near-zero torques keep it standing (the episode runs into the time limit: a truncation); full negative
  torques make it fall within ~6 steps (a termination)."""
  center = 0.0 if episode % 2 == 0 else -1.0
  a = center + rng.uniform(-0.1, 0.1, size=action_space.shape)
  return np.clip(a, action_space.low, action_space.high).astype(action_space.dtype)


class _GoalDictObservation(gym.ObservationWrapper):
  """Splits a flat observation into an AntMaze-style dict: achieved_goal = obs[:2], observation = obs[2:],
  desired_goal = zeros(2), so that concat(achieved_goal, observation) is the original vector."""

  def __init__(self, env: gym.Env):
    super().__init__(env)
    s = env.observation_space.shape[0]
    box = lambda d: gym.spaces.Box(-np.inf, np.inf, (d,), np.float64)
    self.observation_space = gym.spaces.Dict(
        {"achieved_goal": box(2), "desired_goal": box(2), "observation": box(s - 2)})

  def observation(self, obs: np.ndarray) -> dict[str, np.ndarray]:
    return {"achieved_goal": obs[:2], "desired_goal": np.zeros(2), "observation": obs[2:]}


def make_minari_dataset(
    dataset_id: str = "test/hopper/tiny-v0",
    *,
    env_id: str = "Hopper-v5",
    num_episodes: int = 4,
    max_episode_steps: int = 20,
    seed: int = 0,
    policy: Callable[[int, np.random.Generator, gym.spaces.Box], np.ndarray] | None = None,
    goal_dict_obs: bool = False,
    ref_scores: tuple[float, float] | None = None,
    eval_env: str | None = None,
):
  """Creates a Minari dataset with `minari.DataCollector` around a real Gymnasium MuJoCo env and returns it.

  Stored under $MINARI_DATASETS_PATH (set it first, e.g. with monkeypatch.setenv, to a tmp dir). Episode e is reset
  with seed + e and run with policy(e, rng, action_space); the default alternates a truncated episode (time limit
  `max_episode_steps`) and a terminated one. goal_dict_obs stores AntMaze-style dict observations whose
  concat(achieved_goal, observation) is the env's flat observation. ref_scores = (min, max) is written to the
  metadata as ref_min_score / ref_max_score. eval_env (default env_id) is stored as the dataset's evaluation env.
  Deterministic for a given seed.
  """
  import minari

  if not os.environ.get("MINARI_DATASETS_PATH"):
    raise ValueError("set MINARI_DATASETS_PATH (e.g. monkeypatch.setenv) to a tmp dir before making a dataset")
  root = pathlib.Path(os.environ["MINARI_DATASETS_PATH"])
  root.mkdir(parents=True, exist_ok=True)
  policy = policy or _alternating_policy
  rng = np.random.default_rng(seed)
  # MuJoCo writes MUJOCO_LOG.TXT into the working directory on model-compiler warnings: keep it out of the repo.
  with contextlib.chdir(root):
    env = gym.make(env_id, max_episode_steps=max_episode_steps)
  if goal_dict_obs:
    env = _GoalDictObservation(env)
  env = minari.DataCollector(env)
  try:
    for episode in range(num_episodes):
      env.reset(seed=seed + episode)
      done = False
      while not done:
        _, _, terminated, truncated, _ = env.step(policy(episode, rng, env.action_space))
        done = terminated or truncated
    dataset = env.create_dataset(
        dataset_id=dataset_id, eval_env=eval_env or env_id, algorithm_name="tests.datasets.make_minari_dataset",
        author="tests", author_email="tests@example.invalid", code_permalink="tests/datasets.py",
        description=f"{num_episodes} test episodes of {env_id}, at most {max_episode_steps} steps each")
  finally:
    env.close()
  if ref_scores is not None:
    dataset.storage.update_metadata({"ref_min_score": float(ref_scores[0]), "ref_max_score": float(ref_scores[1])})
  return dataset
