"""The built-in offline dataset: a standard Minari dataset made here, offline, from the real Gymnasium `Reacher-v5`.

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

import gymnasium as gym
import numpy as np
from absl import app, flags

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
flags.DEFINE_string("dataset_id", DEFAULT_ID, "Minari id to write.")
flags.DEFINE_integer("episodes", 200, "Episodes to collect (50 steps each).")
flags.DEFINE_integer("seed", 0, "Seed of resets and action noise.")


def main(_):
  with contextlib.suppress(FileNotFoundError):
    import minari

    minari.delete_dataset(FLAGS.dataset_id)
  dataset = make_reacher_dataset(FLAGS.dataset_id, FLAGS.episodes, FLAGS.seed)
  meta = dataset.storage.metadata
  print(f"wrote {FLAGS.dataset_id} under {os.environ.get('MINARI_DATASETS_PATH', '~/.minari/datasets')}: "
        f"{dataset.total_steps} steps, dataset average return {dataset_average_return(dataset):.2f}, "
        f"random {meta['ref_min_score']:.2f}, noiseless controller {meta['ref_max_score']:.2f}")


if __name__ == "__main__":
  app.run(main)
