"""Offline datasets made here as standard Minari datasets: the built-in Reacher one, or D4RL's recipes rebuilt.

  python -m experiments.make_dataset                                        # builtin/reacher/noisy-v0
  python -m experiments.make_dataset --recipe=medium-replay --env=Hopper-v5   # recipes/hopper/medium-replay-v0

Recipes (`common.recipes.datasets`): random, medium, medium-replay, expert, medium-expert on Hopper-v5, HalfCheetah-v5,
Walker2d-v5, made with an online SAC agent (common/recipes/sac.py) trained and checkpointed in --workdir; a bad request,
an existing dataset (without --overwrite) or a target return not reached in --train_steps ends with one `error:` line.

The built-in dataset comes from the real Gymnasium `Reacher-v5`.

The behaviour policy is clearly sub-optimal: a Jacobian-transpose reaching controller whose actions are corrupted by
Gaussian noise of a per-episode scale drawn from `NOISE_SCALES` (the control cost punishes every noisy torque), so
a learned policy has room to beat the data. Reference scores are measured here and stored in the dataset metadata:
ref_min_score = uniform random actions, ref_max_score = the noiseless controller, so a Minari normalised score of 100
means "as good as the scripted expert".

  python -m experiments.make_dataset --dataset_id=builtin/reacher/noisy-v0 --episodes=200
"""
from __future__ import annotations

import contextlib
import os
import sys

import gymnasium as gym
import numpy as np
from absl import flags

from experiments import cli

ENV_ID = "Reacher-v5"
DEFAULT_ID = "builtin/reacher/noisy-v0"
NOISE_SCALES = (0.2, 0.4, 0.8)
LINKS = (0.1, 0.11)  # Reacher's two link lengths


def reaching_controller(obs: np.ndarray, gain: float = 20.0, damping: float = 0.1) -> np.ndarray:
  """Torques J(q)^T (target - fingertip) * gain - damping * qdot, from Reacher's 10-d observation.  -> [2]"""
  q1, q2 = np.arctan2(obs[2], obs[0]), np.arctan2(obs[3], obs[1])
  l1, l2 = LINKS
  s1, s12, c1, c12 = np.sin(q1), np.sin(q1 + q2), np.cos(q1), np.cos(q1 + q2)
  jacobian = np.array([[-l1 * s1 - l2 * s12, -l2 * s12], [l1 * c1 + l2 * c12, l2 * c12]])
  to_target = -obs[8:10]  # obs[8:10] is fingertip - target
  return np.clip(gain * jacobian.T @ to_target - damping * obs[6:8], -1.0, 1.0)


def noisy_action(obs, noise_scale, rng) -> np.ndarray:
  return np.clip(reaching_controller(obs) + noise_scale * rng.normal(size=2), -1.0, 1.0).astype(np.float32)


def mean_return(policy, episodes: int, seed: int) -> float:
  """Average undiscounted return of `policy(obs, rng)` over episodes reset with seeds seed, seed+1, ..."""
  env = gym.make(ENV_ID)
  rng = np.random.default_rng(seed)
  total = 0.0
  for e in range(episodes):
    obs, _ = env.reset(seed=seed + e)
    done = False
    while not done:
      obs, reward, terminated, truncated, _ = env.step(policy(obs, rng))
      total += reward
      done = terminated or truncated
  env.close()
  return total / episodes


def make_reacher_dataset(dataset_id: str = DEFAULT_ID, episodes: int = 200, seed: int = 0,
                         reference_episodes: int = 50):
  """Collect `episodes` noisy-controller episodes with minari.DataCollector and store them under
  $MINARI_DATASETS_PATH (Minari's default root if unset). Returns the MinariDataset."""
  import minari

  rng = np.random.default_rng(seed)
  env = minari.DataCollector(gym.make(ENV_ID))
  try:
    for e in range(episodes):
      noise_scale = NOISE_SCALES[e % len(NOISE_SCALES)]
      obs, _ = env.reset(seed=seed + e)
      done = False
      while not done:
        obs, _, terminated, truncated, _ = env.step(noisy_action(obs, noise_scale, rng))
        done = terminated or truncated
    # Reference returns on held-out reset seeds (far from the data's).
    ref_seed = seed + 1_000_000
    ref_min = mean_return(lambda o, r: r.uniform(-1, 1, size=2).astype(np.float32), reference_episodes, ref_seed)
    ref_max = mean_return(lambda o, r: reaching_controller(o).astype(np.float32), reference_episodes, ref_seed)
    dataset = env.create_dataset(
        dataset_id=dataset_id, eval_env=ENV_ID, algorithm_name="noisy Jacobian-transpose reaching controller",
        author="swg-srpo-jax", author_email="swg-srpo-jax@example.invalid",
        code_permalink="experiments/make_dataset.py",
        description=(f"{episodes} episodes of {ENV_ID}: a reaching controller with Gaussian action noise of scale "
                     f"{NOISE_SCALES} (cycled per episode). ref_min_score: random actions; ref_max_score: the "
                     "noiseless controller."))
  finally:
    env.close()
  dataset.storage.update_metadata({"ref_min_score": float(ref_min), "ref_max_score": float(ref_max)})
  return dataset


def dataset_average_return(dataset) -> float:
  return float(np.mean([np.sum(ep.rewards) for ep in dataset.iterate_episodes()]))


FLAGS = flags.FLAGS
flags.DEFINE_string("dataset_id", "", f"Minari id to write (default {DEFAULT_ID}, or recipes/<env>/<level>-v0).")
flags.DEFINE_boolean("overwrite", False, "Replace an existing dataset of that id.")
flags.DEFINE_integer("episodes", 200, "Reacher: episodes to collect (50 steps each).")
flags.DEFINE_integer("seed", 0, "Seed of resets, action noise and the SAC run.")
flags.DEFINE_string("recipe", "", "D4RL level to rebuild: random, medium, medium-replay, expert, medium-expert.")
flags.DEFINE_string("env", "Hopper-v5", "Recipe env: Hopper-v5, HalfCheetah-v5 or Walker2d-v5.")
flags.DEFINE_string("workdir", "", "Where the SAC run is checkpointed (default runs/recipes/<env>-seed<seed>).")
flags.DEFINE_integer("train_steps", 1_000_000, "Env steps the SAC agent may take to reach the medium target.")
flags.DEFINE_integer("expert_steps", 0, "expert / medium-expert: env steps to train the SAC agent for.")
flags.DEFINE_integer("dataset_steps", 1_000_000, "Transitions per rollout dataset (D4RL: 1M).")
flags.DEFINE_float("target_return", None, "Medium target return (default: D4RL's expert reference score / 3).")
flags.DEFINE_integer("start_steps", 5000, "SAC: uniform random actions before learning starts.")
flags.DEFINE_integer("eval_every", 5000, "SAC: env steps between evaluations of the medium target.")
flags.DEFINE_integer("eval_episodes", 5, "SAC: episodes per evaluation.")
flags.DEFINE_boolean("progress", True, "Show progress bars.")


def make_recipe_from_flags():
  from common.recipes import datasets as recipes
  from common.recipes.sac_online import OnlineConfig

  online = OnlineConfig(start_steps=FLAGS.start_steps, eval_every=FLAGS.eval_every,
                        eval_episodes=FLAGS.eval_episodes)
  dataset = recipes.make_recipe_dataset(
      FLAGS.recipe, FLAGS.env, seed=FLAGS.seed, dataset_id=FLAGS.dataset_id or None, workdir=FLAGS.workdir or None,
      overwrite=FLAGS.overwrite, online=online, train_steps=FLAGS.train_steps,
      expert_steps=FLAGS.expert_steps or None, dataset_steps=FLAGS.dataset_steps,
      target_return=FLAGS.target_return, progress=FLAGS.progress)
  meta = dataset.storage.metadata
  print(f"wrote {meta['dataset_id']} under {recipes.minari_root()}: {dataset.total_episodes} episodes, "
        f"{dataset.total_steps} steps, dataset average return {dataset_average_return(dataset):.1f} (reference "
        f"random {meta['ref_min_score']:.1f}, expert {meta['ref_max_score']:.1f})")


def main(_):
  if FLAGS.recipe:
    from common.recipes.datasets import RecipeError

    try:
      make_recipe_from_flags()
    except RecipeError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt:
      sys.exit(130)  # the SAC run saved its checkpoint; the same command resumes it
    return
  import minari

  dataset_id = FLAGS.dataset_id or DEFAULT_ID
  root = os.environ.get("MINARI_DATASETS_PATH") or os.path.expanduser("~/.minari/datasets")
  if os.path.exists(os.path.join(root, dataset_id)):
    if not FLAGS.overwrite:
      print(f"error: dataset {dataset_id!r} exists already ({os.path.join(root, dataset_id)}); pass --overwrite to "
            "replace it", file=sys.stderr)
      sys.exit(2)
    minari.delete_dataset(dataset_id)
  dataset = make_reacher_dataset(dataset_id, FLAGS.episodes, FLAGS.seed)
  meta = dataset.storage.metadata
  print(f"wrote {dataset_id} under {os.environ.get('MINARI_DATASETS_PATH', '~/.minari/datasets')}: "
        f"{dataset.total_steps} steps, dataset average return {dataset_average_return(dataset):.2f}, "
        f"random {meta['ref_min_score']:.2f}, noiseless controller {meta['ref_max_score']:.2f}")


if __name__ == "__main__":
  cli.run(main)
