"""Vectorised Gymnasium rollouts of a jitted policy.

`evaluate` runs num_seeds * episodes_per_seed environments in one `SyncVectorEnv`; each step calls the (jitted,
seed-vmapped) policy once on observations shaped [num_seeds, episodes_per_seed, S]. Every sub-env counts only its
first episode: the vector env keeps stepping (and, in NEXT_STEP autoreset mode, resetting) finished sub-envs until
all are done, and their later rewards are masked out.

Environments: D4RL locomotion data is evaluated on Gymnasium MuJoCo v4 (the model files of the v3 envs the D4RL data
came from, no mujoco-py needed), D4RL AntMaze data on `common.envs.antmaze`'s rebuild of D4RL's env; Minari `mujoco/*`
data on the v5 envs it was generated with. `EvalResult` carries the env id and library versions so every report can
print them. Which env a dataset is evaluated in, and its reference returns, come from `common.data` (the D4RL
table, a Minari dataset's metadata); `common.run.normalized_scores` turns returns into scores.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import jax
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from tqdm.auto import tqdm
from common.envs import antmaze

_ROBOTICS_ENV_PREFIXES = ("AntMaze", "PointMaze", "AdroitHand", "FrankaKitchen")

PolicyFn = Callable[[np.ndarray, jax.Array], Any]


# ---------------------------------------------------------------------------------------------------------------------
# Rollouts


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Outcome of `evaluate`: first-episode results of every sub-env, and what produced them.

  returns: [num_seeds, episodes_per_seed] float64 undiscounted episode returns.
  lengths: [num_seeds, episodes_per_seed] int64 episode lengths (steps until terminated or truncated).
  terminated: [num_seeds, episodes_per_seed] bool, True where the episode ended by termination (not time limit).
  reset_seeds: [num_seeds, episodes_per_seed] int64 seed each sub-env was reset with (`episode_reset_seeds`).
  """

  returns: np.ndarray
  lengths: np.ndarray
  terminated: np.ndarray
  reset_seeds: np.ndarray
  env_id: str
  max_episode_steps: int
  gymnasium_version: str
  mujoco_version: str | None

  def describe(self) -> str:
    """One line for reports: env, versions, episode budget, return mean / std over all episodes."""
    return (f"{self.env_id} (gymnasium {self.gymnasium_version}, mujoco {self.mujoco_version}, "
            f"max_episode_steps {self.max_episode_steps}): return {self.returns.mean():.2f} +- "
            f"{self.returns.std():.2f} over {self.returns.size} episodes")


def episode_reset_seeds(seed: int, num_seeds: int, episodes_per_seed: int) -> np.ndarray:
  """[num_seeds, episodes_per_seed] distinct reset seeds; entry (i, j) depends only on (seed, i, j), so the
  environments of seed i do not change when more seeds are evaluated."""
  return np.array(
      [[int(np.random.SeedSequence(seed, spawn_key=(i, j)).generate_state(1, np.uint32)[0])
        for j in range(episodes_per_seed)] for i in range(num_seeds)], dtype=np.int64)


def _require_env_registered(env_id: str) -> None:
  antmaze.register_envs()
  if env_id in gym.registry:
    return
  if env_id.startswith(_ROBOTICS_ENV_PREFIXES):
    try:
      import gymnasium_robotics  # noqa: F401  (registers its envs on import)
    except ImportError as e:
      raise ImportError(
          f"Evaluating {env_id!r} needs Gymnasium-Robotics, which is not installed "
          "(pip install gymnasium-robotics).") from e
    gym.register_envs(gymnasium_robotics)


def _flat_observation(obs) -> np.ndarray:
  """Vector obs [N, S]; Gymnasium-Robotics dict obs -> concat(achieved_goal, observation), D4RL AntMaze's layout."""
  if isinstance(obs, Mapping):
    if "achieved_goal" not in obs or "observation" not in obs:
      raise ValueError(f"Dict observations need keys 'achieved_goal' and 'observation', got {sorted(obs)}")
    return np.concatenate([np.asarray(obs["achieved_goal"]), np.asarray(obs["observation"])], axis=-1)
  return np.asarray(obs)


def _make_env_fn(env_id: str, max_episode_steps: int | None, env_kwargs: Mapping[str, Any]):
  def make():
    with warnings.catch_warnings():
      # v4 is chosen on purpose for D4RL (same model files as the v3 envs the data came from).
      warnings.filterwarnings("ignore", message=r".*is out of date\. You should consider upgrading.*")
      return gym.make(env_id, max_episode_steps=max_episode_steps, **env_kwargs)
  return make


def evaluate(policy_fn: PolicyFn, env_id: str, *, num_seeds: int, episodes_per_seed: int = 20, seed: int = 0,
             max_episode_steps: int | None = None, env_kwargs: Mapping[str, Any] | None = None,
             progress: bool = False) -> EvalResult:
  """Undiscounted first-episode returns of num_seeds x episodes_per_seed envs, run together in one SyncVectorEnv.

  policy_fn(obs [num_seeds, episodes_per_seed, S] float32, key) -> actions [num_seeds, episodes_per_seed, A] is
  called once per step (typically a jitted policy vmapped over the leading seed axis). key: a fresh PRNG key per step,
  `key, step_key = jax.random.split(key)` starting from `jax.random.PRNGKey(seed)`; the policy gets `step_key`.
  Actions are clipped to the action space. Sub-env (i, j) is reset once with `episode_reset_seeds(seed, ...)[i, j]`;
  rollouts stop as soon as every sub-env has terminated or been truncated. max_episode_steps=None keeps the env's
  registered time limit. Raises on non-finite or wrongly shaped actions.
  """
  if num_seeds < 1 or episodes_per_seed < 1:
    raise ValueError(f"num_seeds and episodes_per_seed must be >= 1, got {num_seeds}, {episodes_per_seed}")
  if max_episode_steps is not None and max_episode_steps < 1:
    raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
  _require_env_registered(env_id)
  shape = (num_seeds, episodes_per_seed)
  n = num_seeds * episodes_per_seed
  reset_seeds = episode_reset_seeds(seed, num_seeds, episodes_per_seed)

  env_fn = _make_env_fn(env_id, max_episode_steps, dict(env_kwargs or {}))
  # NEXT_STEP autoreset (Gymnasium 1.x default, pinned here): a sub-env that finished at step t is reset during step
  # t + 1 with reward 0 and then plays on; `alive` masks everything after its first episode.
  envs = SyncVectorEnv([env_fn] * n, copy=False, autoreset_mode=AutoresetMode.NEXT_STEP)
  try:
    time_limit = envs.envs[0].spec.max_episode_steps
    if time_limit is None:
      raise ValueError(f"{env_id!r} has no time limit; pass max_episode_steps")
    action_space = envs.single_action_space
    if not isinstance(action_space, gym.spaces.Box):
      raise ValueError(f"Only Box action spaces are supported, {env_id!r} has {action_space}")
    low, high = action_space.low, action_space.high
    act_shape = shape + action_space.shape

    obs, _ = envs.reset(seed=[int(s) for s in reset_seeds.reshape(-1)])
    returns = np.zeros(n, np.float64)
    lengths = np.zeros(n, np.int64)
    terminated = np.zeros(n, bool)
    alive = np.ones(n, bool)
    key = jax.random.PRNGKey(seed)
    with tqdm(total=time_limit, desc=f"eval {env_id}", disable=not progress, leave=False) as bar:
      while alive.any():
        key, step_key = jax.random.split(key)
        flat_obs = _flat_observation(obs).astype(np.float32)
        actions = np.asarray(policy_fn(flat_obs.reshape(shape + flat_obs.shape[1:]), step_key))
        if actions.shape != act_shape:
          raise ValueError(f"policy_fn returned actions of shape {actions.shape}, expected {act_shape}")
        if not np.all(np.isfinite(actions)):
          raise ValueError(f"policy_fn returned non-finite actions at step {int(lengths.max())}")
        actions = np.clip(actions.reshape((n,) + action_space.shape), low, high).astype(action_space.dtype)
        obs, rewards, term, trunc, _ = envs.step(actions)
        returns += np.where(alive, rewards, 0.0)
        lengths += alive
        terminated |= alive & term
        alive &= ~(term | trunc)
        bar.update(1)
        bar.set_postfix(done=f"{n - int(alive.sum())}/{n}", refresh=False)
  finally:
    envs.close()

  try:
    import mujoco
    mujoco_version = mujoco.__version__
  except ImportError:
    mujoco_version = None
  return EvalResult(returns=returns.reshape(shape), lengths=lengths.reshape(shape),
                    terminated=terminated.reshape(shape), reset_seeds=reset_seeds, env_id=env_id,
                    max_episode_steps=int(time_limit), gymnasium_version=gym.__version__,
                    mujoco_version=mujoco_version)
