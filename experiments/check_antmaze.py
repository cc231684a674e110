"""Does `common.envs.antmaze` reproduce the env a D4RL AntMaze file came from? Replays the file's transitions one step each.

  python -m experiments.check_antmaze --dataset=antmaze-umaze-v0 [--transitions=2000]

Each transition's state is set from its observation (all of qpos and qvel), its action applied, and the predicted next
observation compared with the stored one. Data from the rebuilt env itself, stored in float32 as D4RL's files are,
replays to a median error of 2e-7; data from another ant (Gymnasium-Robotics' AntMaze ant) to errors of order 1.
Exits 1 when the median error exceeds --tolerance.
"""
from __future__ import annotations

import sys

import numpy as np
from absl import flags

from experiments import cli

from common import data
from common.envs import antmaze

FLAGS = flags.FLAGS


def check(dataset: str, transitions: int, *, download: bool = False) -> np.ndarray:
  """Per-transition max |error| over `transitions` evenly spaced transitions of D4RL AntMaze file `dataset`."""
  if dataset not in data.D4RL_DATASETS or not dataset.startswith("antmaze-"):
    raise data.DatasetError(f"unknown D4RL AntMaze dataset {dataset!r}; known: "
                            f"{', '.join(n for n in data.D4RL_DATASETS if n.startswith('antmaze-'))}")
  spec = data.D4RL_DATASETS[dataset]
  t = data.d4rl_transitions(data.fetch_d4rl_file(dataset, download=download),
                            max_episode_steps=spec.max_episode_steps, env_obs_dim=spec.obs_dim,
                            env_action_dim=spec.action_dim)
  idx = np.unique(np.linspace(0, len(t.observations) - 1, transitions).astype(int))
  return antmaze.one_step_error(dataset.split("-")[1], t.observations[idx], t.actions[idx], t.next_observations[idx])


def main(argv):
  del argv
  try:
    errors = check(FLAGS.dataset, FLAGS.transitions, download=FLAGS.download)
  except data.DatasetError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  q50, q90, q99 = np.quantile(errors, [0.5, 0.9, 0.99])
  print(f"{FLAGS.dataset}: one-step max |error| over {errors.size} transitions: median {q50:.3g}, 90% {q90:.3g}, "
        f"99% {q99:.3g}, max {errors.max():.3g} (env {data.D4RL_DATASETS[FLAGS.dataset].env_id})")
  if q50 > FLAGS.tolerance:
    print(f"median error {q50:.3g} > --tolerance {FLAGS.tolerance}: this env does not reproduce the file's dynamics")
    sys.exit(1)


if __name__ == "__main__":
  flags.DEFINE_string("dataset", "antmaze-umaze-v0", "D4RL AntMaze name (its file in $D4RL_DATASET_DIR).")
  flags.DEFINE_integer("transitions", 2000, "How many evenly spaced transitions to replay.")
  flags.DEFINE_float("tolerance", 0.05, "Largest acceptable median one-step error.")
  flags.DEFINE_bool("download", False, "Fetch a missing file from D4RL's URL.")
  cli.run(main)
