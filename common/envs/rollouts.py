"""Host-side Gymnasium rollouts that record whole episodes the way Minari stores them.

An episode is a dict: observations [T + 1, S] f32, actions [T, A] f32, rewards [T] f64, terminations [T] bool,
truncations [T] bool, seed (its reset seed). Terminations and truncations are what the env reported; an episode cut
because the requested number of steps was reached ends with truncation = True (D4RL's timeouts at the end of data).
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable

import gymnasium as gym
import numpy as np

# policy(observations [n, S] f32, call index) -> actions [n, A]
Policy = Callable[[np.ndarray, int], np.ndarray]


def make_env(env_id: str, workdir: str | os.PathLike | None = None) -> gym.Env:
  """gym.make(env_id); MuJoCo may write MUJOCO_LOG.TXT into the working directory, so build it inside `workdir`."""
  with contextlib.chdir(workdir) if workdir else contextlib.nullcontext():
    return gym.make(env_id)


def _empty(obs: np.ndarray, seed: int) -> dict:
  return {"observations": [np.asarray(obs, np.float32)], "actions": [], "rewards": [], "terminations": [],
          "truncations": [], "seed": seed}


def _finish(ep: dict) -> dict:
  out = {k: np.asarray(v) for k, v in ep.items() if k != "seed"}
  out["observations"] = out["observations"].astype(np.float32)
  out["actions"] = out["actions"].astype(np.float32)
  out["rewards"] = out["rewards"].astype(np.float64)
  out["terminations"] = out["terminations"].astype(bool)
  out["truncations"] = out["truncations"].astype(bool)
  out["seed"] = ep["seed"]
  return out


def collect_episodes(env_id: str, policy: Policy, *, seed: int, num_steps: int | None = None,
                     num_episodes: int | None = None, num_envs: int = 8, workdir: str | None = None,
                     progress=None) -> list[dict]:
  """Runs `num_envs` envs in lockstep with one batched policy call per step and returns the episodes.

  Exactly one of num_steps (stop at that many transitions in all; episodes still running then are kept, cut with
  truncation = True) or num_episodes (run that many whole episodes) is given. Env j's k-th reset uses seed
  seed + k * num_envs + j, so the data depend only on the arguments. `progress`: a tqdm bar updated per transition.
  """
  if (num_steps is None) == (num_episodes is None):
    raise ValueError("give exactly one of num_steps and num_episodes")
  goal = num_steps if num_steps is not None else num_episodes
  n = max(1, min(num_envs, goal))
  envs = [make_env(env_id, workdir) for _ in range(n)]
  done: list[dict] = []
  try:
    resets = [0] * n
    # num_episodes: env j runs episodes j, j + n, j + 2n, ... below num_episodes.
    quota = [len(range(j, num_episodes, n)) for j in range(n)] if num_episodes is not None else None
    current = []
    for j, env in enumerate(envs):
      obs, _ = env.reset(seed=seed + j)
      current.append(_empty(obs, seed + j))
    active = list(range(n))
    steps, calls = 0, 0
    while active:
      if num_steps is not None:
        active = active[: num_steps - steps]
        if not active:
          break
      obs = np.stack([current[j]["observations"][-1] for j in active])
      actions = np.asarray(policy(obs, calls), np.float32)
      calls += 1
      still = []
      for row, j in enumerate(active):
        next_obs, reward, terminated, truncated, _ = envs[j].step(actions[row])
        ep = current[j]
        ep["observations"].append(np.asarray(next_obs, np.float32))
        ep["actions"].append(actions[row])
        ep["rewards"].append(float(reward))
        ep["terminations"].append(bool(terminated))
        ep["truncations"].append(bool(truncated))
        steps += 1
        if progress is not None:
          progress.update(1)
        if terminated or truncated:
          done.append(_finish(ep))
          resets[j] += 1
          if num_episodes is not None and resets[j] >= quota[j]:
            continue  # this env has run its share of the episodes
          reset_seed = seed + resets[j] * n + j
          obs_j, _ = envs[j].reset(seed=reset_seed)
          current[j] = _empty(obs_j, reset_seed)
        still.append(j)
      active = still
    if num_steps is not None:
      for j in range(n):  # episodes running when the step count was reached: cut, as truncations
        ep = current[j]
        if ep["actions"] and not (ep["terminations"][-1] or ep["truncations"][-1]):
          ep["truncations"][-1] = True
          done.append(_finish(ep))
  finally:
    for env in envs:
      env.close()
  return done


def episode_returns(episodes: list[dict]) -> np.ndarray:
  """Undiscounted return of every episode.  -> [E]"""
  return np.asarray([float(np.sum(ep["rewards"])) for ep in episodes])
