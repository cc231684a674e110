"""D4RL's AntMaze evaluation tasks rebuilt on the `mujoco` bindings (the originals need mujoco-py).

The Gymnasium-Robotics AntMaze ports are not the same task: their ant is Gymnasium's (timestep 0.01, gear 150, torque
up to 150) where D4RL's ran at timestep 0.02 with torque up to 30, and their maze frame is centred and flipped in y.
A policy trained on D4RL's AntMaze files is therefore evaluated here, in an env that follows d4rl/locomotion:

* the ant: Gymnasium's ant.xml (the same bodies, joints and contacts as D4RL's copy) with D4RL's timestep 0.02 and
  motors of gear 1, ctrlrange +-30; an action a in [-1, 1]^8 applies the torque 30 a (D4RL's NormalizedBoxEnv),
  5 physics steps per env step;
* the maze: blocks 4 x 4 x 2 at (col * 4 - x0, row * 4 - y0), where (row, col) of the start cell gives (x0, y0), so the
  ant starts at the origin; the single-goal layouts of D4RL's antmaze-*-v0/v2 tasks;
* observations: qpos[:15] and qvel[:14] (29 values, x y first); reset: qpos0 + U(-0.1, 0.1), qvel N(0, 0.1^2);
* goal: the goal cell's corner + U(0, 1) + U(0, 0.5) per axis; reward 1 and termination once the torso's xy is within
  0.5 of it, else 0 (no termination for falling over); time limit 700 (umaze) or 1000 steps.

One difference is on purpose: D4RL v0 drew the goal once per env object, v2 once per episode; here it is drawn at
every reset from the env's seeded generator (v2's protocol, the same goal distribution as v0).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import gymnasium as gym
import gymnasium.envs.mujoco
import mujoco
import numpy as np

# D4RL's single-goal maze layouts (maze_env.*_TEST): 1 wall, 0 free, "r" start, "g" goal.
_R, _G = "r", "g"
MAZES = {
    "umaze": [
        [1, 1, 1, 1, 1],
        [1, _R, 0, 0, 1],
        [1, 1, 1, 0, 1],
        [1, _G, 0, 0, 1],
        [1, 1, 1, 1, 1]],
    "medium": [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, _R, 0, 1, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, _G, 1],
        [1, 1, 1, 1, 1, 1, 1, 1]],
    "large": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, _R, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
        [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1, 0, _G, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]],
}
MAX_EPISODE_STEPS = {"umaze": 700, "medium": 1000, "large": 1000}
ENV_IDS = {"umaze": "D4RLAntMaze_UMaze-v0", "medium": "D4RLAntMaze_Medium-v0", "large": "D4RLAntMaze_Large-v0"}

CELL = 4.0           # maze_size_scaling
WALL_HEIGHT = 2.0    # maze_height 0.5 * scaling
TORQUE = 30.0        # D4RL ant's ctrlrange; actions in [-1, 1] are scaled to it
TIMESTEP = 0.02
FRAME_SKIP = 5
GOAL_RADIUS = 0.5


def _cells(maze: str, kind) -> list[tuple[int, int]]:
  return [(i, j) for i, row in enumerate(MAZES[maze]) for j, c in enumerate(row) if c == kind]


def cell_xy(maze: str, row: int, col: int) -> np.ndarray:
  """The corner D4RL gives cell (row, col), in the frame where the ant starts at the origin."""
  (r0, c0), = _cells(maze, _R)
  return np.array([(col - c0) * CELL, (row - r0) * CELL])


def ant_maze_xml(maze: str) -> str:
  """MJCF of D4RL's ant in `maze`: Gymnasium's ant.xml with D4RL's timestep and motors, plus the maze's blocks."""
  ant_xml = os.path.join(os.path.dirname(gymnasium.envs.mujoco.__file__), "assets", "ant.xml")
  tree = ET.parse(ant_xml)
  tree.find("option").set("timestep", str(TIMESTEP))
  for motor in tree.find("actuator"):
    motor.set("gear", "1")
    motor.set("ctrlrange", f"{-TORQUE} {TORQUE}")
  worldbody = tree.find("worldbody")
  for i, j in _cells(maze, 1):
    x, y = cell_xy(maze, i, j)
    ET.SubElement(worldbody, "geom", name=f"block_{i}_{j}", type="box", pos=f"{x} {y} {WALL_HEIGHT / 2}",
                  size=f"{CELL / 2} {CELL / 2} {WALL_HEIGHT / 2}", contype="1", conaffinity="1",
                  rgba="0.7 0.5 0.3 1")
  return ET.tostring(tree.getroot(), encoding="unicode")


class D4RLAntMazeEnv(gym.Env):
  """D4RL antmaze-<maze>-v0/v2 evaluation env (see the module docstring); info["goal"] is this episode's goal."""

  def __init__(self, maze: str = "umaze"):
    if maze not in MAZES:
      raise ValueError(f"Unknown maze {maze!r}; known: {sorted(MAZES)}")
    self.maze = maze
    self.model = mujoco.MjModel.from_xml_string(ant_maze_xml(maze))
    self.data = mujoco.MjData(self.model)
    self.init_qpos = self.data.qpos.copy()
    self.init_qvel = self.data.qvel.copy()
    (goal_cell,) = _cells(maze, _G)
    self.goal_corner = cell_xy(maze, *goal_cell)
    self.goal = self.goal_corner.copy()
    self.action_space = gym.spaces.Box(-1.0, 1.0, (self.model.nu,), np.float32)
    self.observation_space = gym.spaces.Box(-np.inf, np.inf, (29,), np.float64)

  @property
  def dt(self) -> float:
    return self.model.opt.timestep * FRAME_SKIP

  def _obs(self) -> np.ndarray:
    return np.concatenate([self.data.qpos[:15], self.data.qvel[:14]])

  def _at_goal(self) -> bool:
    return bool(np.linalg.norm(self.data.qpos[:2] - self.goal) <= GOAL_RADIUS)

  def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
    self.data.qpos[:], self.data.qvel[:] = qpos, qvel
    mujoco.mj_forward(self.model, self.data)

  def reset(self, *, seed: int | None = None, options=None):
    super().reset(seed=seed)
    rng = self.np_random
    mujoco.mj_resetData(self.model, self.data)
    self.set_state(self.init_qpos + rng.uniform(-0.1, 0.1, self.model.nq),
                   self.init_qvel + 0.1 * rng.standard_normal(self.model.nv))
    self.goal = self.goal_corner + rng.uniform(0.0, CELL / 4, 2) + rng.uniform(0.0, CELL / 8, 2)
    return self._obs(), {"goal": self.goal.copy()}

  def step(self, action):
    self.data.ctrl[:] = TORQUE * np.clip(action, -1.0, 1.0)
    mujoco.mj_step(self.model, self.data, nstep=FRAME_SKIP)
    at_goal = self._at_goal()
    return self._obs(), float(at_goal), at_goal, False, {"goal": self.goal.copy()}


def register_envs() -> None:
  """Registers ENV_IDS with Gymnasium (idempotent)."""
  for maze, env_id in ENV_IDS.items():
    if env_id not in gym.registry:
      gym.register(env_id, entry_point=D4RLAntMazeEnv, kwargs={"maze": maze},
                   max_episode_steps=MAX_EPISODE_STEPS[maze])


def one_step_error(maze: str, observations: np.ndarray, actions: np.ndarray,
                   next_observations: np.ndarray) -> np.ndarray:
  """Per-transition max |error| of this env's prediction of next_observations: each transition's state is set from
  its observation (which holds all of qpos and qvel) and its action is applied. Near 0 on data from D4RL's env;
  large on data from another ant (for example Gymnasium-Robotics')."""
  env = D4RLAntMazeEnv(maze)
  errors = np.empty(len(observations))
  for t, (obs, act, nxt) in enumerate(zip(observations, actions, next_observations)):
    mujoco.mj_resetData(env.model, env.data)
    env.set_state(obs[:15], obs[15:29])
    pred, *_ = env.step(act)
    errors[t] = np.abs(pred - nxt).max()
  return errors
