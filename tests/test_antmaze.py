"""The D4RL AntMaze rebuild: D4RL's ant, maze frame, goal, reward and termination, checked against values derived by
hand from d4rl/locomotion (maze_env.py, ant.py, goal_reaching_env.py, assets/ant.xml)."""
import json
import os
import pathlib
import subprocess
import sys

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from common import data
from common.envs import antmaze
from common.envs import evaluation
from tests.datasets import write_hdf5

ROOT = pathlib.Path(__file__).resolve().parents[1]

# D4RL frame: cell (row, col) -> (4 (col - 1), 4 (row - 1)), the start cell (1, 1) at the origin, y growing with row.
WALLS = {
    "umaze": [(0, 4), (4, 4), (-4, 0), (0, -4)],
    "medium": [(8, 0), (12, 0), (12, 20), (4, 16), (-4, 20)],
    "large": [(16, 0), (8, 24), (24, 24), (4, 4), (40, 16)],
}
FREE = {
    "umaze": [(0, 0), (4, 0), (8, 0), (8, 4), (8, 8), (0, 8)],
    "medium": [(16, 0), (8, 20), (20, 20), (0, 4), (12, 16)],  # (8, 20) is a wall in the y-mirrored maze
    "large": [(12, 0), (32, 24), (28, 24), (0, 24), (20, 8)],
}
GOAL_CORNER = {"umaze": (0, 8), "medium": (20, 20), "large": (32, 24)}


def _is_wall(env, x, y):
  m = env.model
  boxes = [g for g in range(m.ngeom) if mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g).startswith("block_")]
  return any(abs(x - m.geom_pos[g, 0]) < m.geom_size[g, 0] and abs(y - m.geom_pos[g, 1]) < m.geom_size[g, 1]
             for g in boxes)


@pytest.mark.parametrize("maze", sorted(antmaze.MAZES))
def test_walls_where_d4rl_puts_them(maze):
  env = antmaze.D4RLAntMazeEnv(maze)
  for x, y in WALLS[maze]:
    assert _is_wall(env, x, y), (maze, x, y)
  for x, y in FREE[maze]:
    assert not _is_wall(env, x, y), (maze, x, y)
  # The blocks are solid for the ant: a torso placed inside one touches it.
  qpos = env.init_qpos.copy()
  qpos[:2] = WALLS[maze][0]
  env.set_state(qpos, env.init_qvel)
  geoms = {mujoco.mj_id2name(env.model, mujoco.mjtObj.mjOBJ_GEOM, g)
           for c in env.data.contact[:env.data.ncon] for g in (c.geom1, c.geom2)}
  assert any(name.startswith("block_") for name in geoms)


def test_d4rl_ant_is_gymnasiums_ant_with_d4rl_timestep_and_motors():
  ours = antmaze.D4RLAntMazeEnv("umaze").model
  gym_ant = gym.make("Ant-v4").unwrapped.model
  for field in ("body_mass", "body_inertia", "jnt_range", "jnt_axis", "dof_damping", "dof_armature"):
    np.testing.assert_allclose(getattr(ours, field), getattr(gym_ant, field), err_msg=field)
  ours_ant, gym_ant_geoms = ours.geom_bodyid > 0, gym_ant.geom_bodyid > 0  # the maze's blocks are world geoms
  for field in ("geom_size", "geom_friction", "geom_margin", "geom_contype", "geom_conaffinity"):
    np.testing.assert_allclose(getattr(ours, field)[ours_ant], getattr(gym_ant, field)[gym_ant_geoms], err_msg=field)
  assert ours.opt.integrator == gym_ant.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
  # D4RL's assets/ant.xml: timestep 0.02, motors of gear 1 and ctrlrange +-30, frame skip 5.
  assert (ours.opt.timestep, gym_ant.opt.timestep) == (0.02, 0.01)
  np.testing.assert_array_equal(ours.actuator_gear[:, 0], np.ones(8))
  np.testing.assert_array_equal(ours.actuator_ctrlrange, np.tile([-30.0, 30.0], (8, 1)))
  assert antmaze.D4RLAntMazeEnv("umaze").dt == pytest.approx(0.1)


def test_actions_apply_d4rls_torque():
  env = antmaze.D4RLAntMazeEnv("umaze")
  env.reset(seed=0)
  action = np.array([0.5, -1.0, 2.0, -3.0, 0.0, 0.1, -0.2, 1.0])
  env.step(action)
  # NormalizedBoxEnv: [-1, 1] -> [-30, 30], clipped.
  np.testing.assert_allclose(env.data.actuator_force, 30.0 * np.clip(action, -1, 1), rtol=1e-12)


@pytest.mark.parametrize("maze", sorted(antmaze.MAZES))
def test_reset_and_goal_distribution(maze):
  env = antmaze.D4RLAntMazeEnv(maze)
  starts, offsets = [], []
  for seed in range(300):
    obs, info = env.reset(seed=seed)
    assert obs.shape == (29,) and env.observation_space.contains(obs)
    starts.append(obs[:15])
    offsets.append(info["goal"] - np.array(GOAL_CORNER[maze]))
  starts, offsets = np.array(starts), np.array(offsets)
  # qpos0 (torso at (0, 0, 0.75), identity quaternion, joints 0) + U(-0.1, 0.1).
  qpos0 = np.array([0, 0, 0.75, 1, 0, 0, 0] + [0] * 8)
  assert np.abs(starts - qpos0).max() <= 0.1
  # goal = corner + U(0, 1) + U(0, 0.5) per axis: support [0, 1.5], mean 0.75, var 1/12 + 1/48.
  assert offsets.min() >= 0 and offsets.max() <= 1.5
  np.testing.assert_allclose(offsets.mean(0), 0.75, atol=0.06)
  np.testing.assert_allclose(offsets.var(0), 1 / 12 + 1 / 48, rtol=0.2)
  # Seeded: the same seed gives the same start and goal.
  a, b = env.reset(seed=7), env.reset(seed=7)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1]["goal"], b[1]["goal"])


def _place(env, xy, z=0.75, quat=(1, 0, 0, 0)):
  qpos = env.init_qpos.copy()
  qpos[:2], qpos[2], qpos[3:7] = xy, z, quat
  env.set_state(qpos, np.zeros(env.model.nv))


def test_reward_and_termination_within_half_a_unit_of_the_goal():
  env = antmaze.D4RLAntMazeEnv("umaze")
  _, info = env.reset(seed=3)
  goal = info["goal"]
  _place(env, goal + [0.25, 0.2])
  obs, reward, terminated, truncated, _ = env.step(np.zeros(8))
  assert np.linalg.norm(obs[:2] - goal) <= 0.5
  assert (reward, terminated, truncated) == (1.0, True, False)
  _place(env, goal + [0.0, -0.9])
  _, reward, terminated, _, _ = env.step(np.zeros(8))
  assert (reward, terminated) == (0.0, False)
  # Lying upside down far from the goal ends nothing: D4RL's eval env ignores the ant's health.
  _place(env, (4.0, 0.0), z=0.2, quat=(0, 1, 0, 0))
  _, reward, terminated, _, _ = env.step(np.zeros(8))
  assert (reward, terminated) == (0.0, False)


def _rollout(env, steps, seed):
  rng = np.random.default_rng(seed)
  obs, _ = env.reset(seed=seed)
  observations, actions, next_observations = [], [], []
  for _ in range(steps):
    action = rng.uniform(-1, 1, 8).astype(np.float32)
    nxt, *_ = env.step(action)
    observations.append(obs), actions.append(action), next_observations.append(nxt)
    obs = nxt
  return np.array(observations), np.array(actions), np.array(next_observations)


def test_one_step_error_tells_d4rls_ant_from_gymnasium_robotics_ant():
  own = antmaze.one_step_error("umaze", *_rollout(antmaze.D4RLAntMazeEnv("umaze"), 60, seed=0))
  # Gymnasium's Ant-v4 with x, y observed: the ant of the Gymnasium-Robotics AntMaze ports (timestep 0.01, gear 150).
  other_env = gym.make("Ant-v4", exclude_current_positions_from_observation=False).unwrapped
  other = antmaze.one_step_error("umaze", *_rollout(other_env, 60, seed=0))
  assert own.max() < 1e-6, own.max()
  assert np.median(other) > 0.1, np.median(other)


def test_registered_and_evaluated_for_d4rl_antmaze_names(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  for name, maze in [("antmaze-umaze-v0", "umaze"), ("antmaze-umaze-diverse-v2", "umaze"),
                     ("antmaze-medium-play-v0", "medium"), ("antmaze-large-diverse-v2", "large")]:
    assert data.D4RL_DATASETS[name].env_id == antmaze.ENV_IDS[maze]
  res = evaluation.evaluate(lambda obs, key: np.zeros(obs.shape[:2] + (8,), np.float32), "D4RLAntMaze_UMaze-v0",
                            num_seeds=2, episodes_per_seed=2, max_episode_steps=15)
  np.testing.assert_array_equal(res.returns, 0.0)
  np.testing.assert_array_equal(res.lengths, 15)
  assert gym.spec("D4RLAntMaze_UMaze-v0").max_episode_steps == 700
  assert gym.spec("D4RLAntMaze_Large-v0").max_episode_steps == 1000


def _d4rl_file(path, env, steps=80):
  obs, actions, next_obs = _rollout(env, steps, seed=1)
  n = steps + 1
  timeouts = np.zeros(n, bool)
  timeouts[-1] = True
  write_hdf5(path, {"observations": np.concatenate([obs, next_obs[-1:]]).astype(np.float32),
                    "actions": np.concatenate([actions, np.zeros((1, 8), np.float32)]),
                    "rewards": np.zeros(n, np.float32), "terminals": np.zeros(n, bool), "timeouts": timeouts})


@pytest.mark.parametrize("ant, ok", [("d4rl", True), ("gymnasium", False)])
def test_check_antmaze_cli(tmp_path, ant, ok):
  env = (antmaze.D4RLAntMazeEnv("umaze") if ant == "d4rl" else
         gym.make("Ant-v4", exclude_current_positions_from_observation=False).unwrapped)
  _d4rl_file(tmp_path / data.D4RL_DATASETS["antmaze-umaze-v0"].filename, env)
  proc = subprocess.run([sys.executable, "-m", "experiments.check_antmaze", "--dataset=antmaze-umaze-v0",
                         "--transitions=50"], capture_output=True, text=True, cwd=ROOT,
                        env={**os.environ, "D4RL_DATASET_DIR": str(tmp_path)}, timeout=300)
  assert proc.returncode == (0 if ok else 1), proc.stdout + proc.stderr
  assert "antmaze-umaze-v0: one-step max |error| over 50 transitions" in proc.stdout
  assert ("does not reproduce" in proc.stdout) != ok


def test_check_antmaze_missing_file(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.check_antmaze", "--dataset=antmaze-large-play-v0"],
                        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "D4RL_DATASET_DIR": str(tmp_path)},
                        timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().startswith("error:") and str(tmp_path) in proc.stderr


def test_srpo_on_a_d4rl_antmaze_file_is_scored_in_the_rebuilt_env(tmp_path, monkeypatch):
  import srpo_jax

  monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
  _d4rl_file(tmp_path / data.D4RL_DATASETS["antmaze-umaze-v0"].filename, antmaze.D4RLAntMazeEnv("umaze"), steps=300)
  config = srpo_jax.get_config("antmaze-umaze-v0:smoke")
  srpo_jax.train_and_evaluate(config, str(tmp_path / "run"), download=False)
  result = json.loads((tmp_path / "run" / "eval_srpo.json").read_text())
  assert (result["env_id"], result["max_episode_steps"]) == ("D4RLAntMaze_UMaze-v0", 700)
  # D4RL's AntMaze reference returns are 0 and 1: the score is 100 x the success rate.
  returns = np.array(result["returns"])
  assert set(np.unique(returns)) <= {0.0, 1.0}
  assert result["score"]["mean"] == pytest.approx(100 * returns.mean())
