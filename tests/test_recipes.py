"""D4RL's recipes rebuilt (common/recipes/datasets.py): a tiny SAC run makes medium and medium-replay datasets that load
through common.data with the invariants of the D4RL files; the run resumes exactly; bad requests fail early."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from common.recipes import datasets as recipes
from common.data import load_dataset, load_minari
from common.recipes.sac import SACConfig
from common.recipes.sac_online import CHECKPOINT, OnlineConfig, OnlineSAC

TINY = OnlineConfig(sac=SACConfig(hidden=(32, 32), batch_size=32), start_steps=100, updates_per_chunk=50,
                    eval_every=150, eval_episodes=2, checkpoint_every=100)


@pytest.fixture
def root(tmp_path, monkeypatch):
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
  monkeypatch.chdir(tmp_path)  # MuJoCo may drop a log file in the working directory
  return tmp_path


def hopper_fell(next_obs: np.ndarray) -> np.ndarray:
  """Hopper-v5's own termination rule, restated: unhealthy when z <= 0.7, |angle| >= 0.2 or |state[1:]| >= 100."""
  z, angle = next_obs[:, 0], next_obs[:, 1]
  return (z <= 0.7) | (np.abs(angle) >= 0.2) | (np.abs(next_obs[:, 1:]) >= 100).any(-1)


def check_like_d4rl(dataset_id: str, steps: int | None, falls: bool = True):
  """The invariants the D4RL files have (tests/test_data.py): s' of a row is s of the next row inside an episode,
  masks are 0 exactly where the env terminated (a fall), truncations keep mask 1, actions in [-1, 1]."""
  data, info = load_dataset(dataset_id)
  plain = load_minari(dataset_id)
  assert info["source"] == "minari" and info["env_id"] == "Hopper-v5" and info["reward_kind"] == "locomotion"
  assert (info["ref_min_score"], info["ref_max_score"]) == pytest.approx((-20.272305, 3234.3))
  assert steps is None or data.size == steps
  obs, nxt, masks = (np.asarray(x) for x in (plain.observations, plain.next_observations, plain.masks))
  terminal = masks == 0
  np.testing.assert_array_equal(terminal, hopper_fell(nxt))  # terminations as the env reports them
  assert terminal.any() or not falls
  assert float(np.abs(np.asarray(data.actions)).max()) <= 1.0
  # Inside an episode the next row starts where this one ended; episodes end at terminals or truncations.
  continues = np.all(nxt[:-1] == obs[1:], axis=-1)
  assert not continues[terminal[:-1]].any()
  assert info["num_episodes"] == 1 + int(np.sum(~continues))
  return data, info


def test_tiny_medium_and_medium_replay(root):
  kwargs = dict(workdir=root / "sac", online=TINY, train_steps=600, dataset_steps=300, progress=False)
  medium = recipes.make_recipe_dataset("medium", "Hopper-v5", target_return=-1e9, **kwargs)
  meta = medium.storage.metadata
  assert (meta["recipe"], meta["recipe_seed"], meta["target_return"]) == ("medium", 0, -1e9)
  assert meta["medium_env_steps"] >= TINY.start_steps
  check_like_d4rl("recipes/hopper/medium-v0", steps=300)
  last = list(medium.iterate_episodes())
  assert last[-1].truncations[-1] or last[-1].terminations[-1]

  replay = recipes.make_recipe_dataset("medium-replay", "Hopper-v5", target_return=-1e9, **kwargs)
  data, info = check_like_d4rl("recipes/hopper/medium-replay-v0", steps=meta["medium_env_steps"])
  run = OnlineSAC("Hopper-v5", root / "sac", 0, TINY, progress=False)  # the SAC run's own buffer, reloaded
  np.testing.assert_array_equal(np.asarray(load_minari("recipes/hopper/medium-replay-v0").actions),
                                run.buffer["actions"][: info["size"]])
  assert replay.storage.metadata["recipe"] == "medium-replay"


def test_resumed_run_equals_one_uninterrupted_run(root):
  one = OnlineSAC("Hopper-v5", root / "one", 3, TINY, progress=False)
  one.train(max_steps=400)
  first = OnlineSAC("Hopper-v5", root / "two", 3, TINY, progress=False)
  first.train(max_steps=200)
  assert first.env_steps < one.env_steps
  resumed = OnlineSAC("Hopper-v5", root / "two", 3, TINY, progress=False)  # from the checkpoint on disk
  assert (resumed.env_steps, resumed.size) == (first.env_steps, first.size)
  resumed.train(max_steps=400)
  assert (resumed.env_steps, resumed.updates, resumed.episodes) == (one.env_steps, one.updates, one.episodes)
  np.testing.assert_array_equal(resumed.buffer["observations"][: one.size], one.buffer["observations"][: one.size])
  jax.tree.map(np.testing.assert_array_equal, resumed.state.actor.params, one.state.actor.params)
  with pytest.raises(ValueError, match="other settings .*seed: 3 there, 4 here"):
    OnlineSAC("Hopper-v5", root / "two", 4, TINY, progress=False)


def test_target_not_reached_keeps_the_trained_state(root):
  with pytest.raises(recipes.RecipeError, match=r"did not reach the medium target return 5000.0 within "
                                                r"--train_steps=300 .*rerun with a larger --train_steps"):
    recipes.make_recipe_dataset("medium", "Hopper-v5", workdir=root / "sac", online=TINY, train_steps=300,
                                dataset_steps=100, target_return=5000.0, progress=False)
  assert (root / "sac" / CHECKPOINT).is_file()
  assert OnlineSAC("Hopper-v5", root / "sac", 0, TINY, progress=False).env_steps >= 300
  assert not (root / "minari" / "recipes" / "hopper" / "medium-v0").exists()


def test_bad_requests_fail_before_any_work(root):
  kwargs = dict(workdir=root / "sac", online=TINY, dataset_steps=50, progress=False)
  with pytest.raises(recipes.RecipeError, match="--env='Ant-v5' has no recipe; expected one of Hopper-v5"):
    recipes.make_recipe_dataset("medium", "Ant-v5", **kwargs)
  with pytest.raises(recipes.RecipeError, match="--recipe='hard' is not a D4RL level"):
    recipes.make_recipe_dataset("hard", "Hopper-v5", **kwargs)
  with pytest.raises(recipes.RecipeError, match="--recipe=medium-expert needs --expert_steps"):
    recipes.make_recipe_dataset("medium-expert", "Hopper-v5", **kwargs)
  assert not (root / "sac").exists()
  first = recipes.make_recipe_dataset("random", "Hopper-v5", **kwargs)
  before = [ep.actions.copy() for ep in first.iterate_episodes()]
  with pytest.raises(recipes.RecipeError, match="'recipes/hopper/random-v0' exists already .*--overwrite"):
    recipes.make_recipe_dataset("random", "Hopper-v5", **kwargs)
  again = recipes.make_recipe_dataset("random", "Hopper-v5", overwrite=True, seed=1, **kwargs)
  after = [ep.actions for ep in again.iterate_episodes()]
  assert again.storage.metadata["recipe_seed"] == 1 and not np.array_equal(before[0], after[0])
  check_like_d4rl("recipes/hopper/random-v0", steps=50, falls=False)
  leftovers = [p for p in (root / "minari").iterdir() if p.name.startswith(".")]
  assert leftovers == []


def test_cli_error_line(root):
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = subprocess.run([sys.executable, "-m", "experiments.make_dataset", "--recipe=medium", "--env=Humanoid-v5"],
                       capture_output=True, text=True, env=env, cwd=root, timeout=120)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "error: --env='Humanoid-v5' has no recipe; expected one of Hopper-v5, HalfCheetah-v5, Walker2d-v5"]
