"""Environments: evaluation rollouts of a seed-stacked policy in Gymnasium, batched rollouts, and D4RL's AntMaze
rebuilt on the `mujoco` bindings."""
