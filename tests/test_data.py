"""Dataset loaders against small files built here (D4RL-style hdf5, Minari from a real MuJoCo env); never the network."""
import io
import pathlib
import tempfile
import urllib.error
import urllib.request

import chex
import jax
import numpy as np
import pytest

from common import data
from common.data import DatasetError
from tests import datasets


# ------------------------------------------------------------------------------------------------------------------
# Oracles: the obvious per-index loops, as d4rl and IQL/SRPO write them
# ------------------------------------------------------------------------------------------------------------------


def d4rl_qlearning_loop(dataset, max_episode_steps=1000):
  """d4rl.qlearning_dataset(env, dataset) with terminate_on_end=False, env._max_episode_steps = max_episode_steps."""
  n = dataset["rewards"].shape[0]
  obs_, next_obs_, action_, reward_, done_ = [], [], [], [], []
  use_timeouts = "timeouts" in dataset
  episode_step = 0
  for i in range(n - 1):
    obs = dataset["observations"][i].astype(np.float32)
    new_obs = dataset["observations"][i + 1].astype(np.float32)
    action = dataset["actions"][i].astype(np.float32)
    reward = dataset["rewards"][i].astype(np.float32)
    done_bool = bool(dataset["terminals"][i])
    if use_timeouts:
      final_timestep = dataset["timeouts"][i]
    else:
      final_timestep = episode_step == max_episode_steps - 1
    if final_timestep:
      episode_step = 0
      continue
    if done_bool or final_timestep:
      episode_step = 0
    obs_.append(obs)
    next_obs_.append(new_obs)
    action_.append(action)
    reward_.append(reward)
    done_.append(done_bool)
    episode_step += 1
  return {
      "observations": np.array(obs_), "actions": np.array(action_), "next_observations": np.array(next_obs_),
      "rewards": np.array(reward_), "terminals": np.array(done_),
  }


def iql_return_range_loop(rewards, terminals, max_episode_steps=1000):
  """IQL's / SRPO's return_range: returns of episodes split at terminals or every max_episode_steps."""
  returns, ep_ret, ep_len = [], 0.0, 0
  for r, d in zip(rewards, terminals):
    ep_ret += float(r)
    ep_len += 1
    if d or ep_len == max_episode_steps:
      returns.append(ep_ret)
      ep_ret, ep_len = 0.0, 0
  return min(returns), max(returns)


def assert_same_transitions(got, want):
  assert set(got) == set(want)
  for k in want:
    assert got[k].dtype == want[k].dtype, k
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# ------------------------------------------------------------------------------------------------------------------
# D4RL semantics
# ------------------------------------------------------------------------------------------------------------------


def test_d4rl_hdf5_matches_qlearning_dataset_loop(tmp_path):
  arrays = datasets.d4rl_arrays(
      (5, 7, 4, 6, 3), ("terminal", "timeout", "terminal", "timeout", "none"), obs_dim=4, action_dim=2)
  path = datasets.write_hdf5(tmp_path / "tiny.hdf5", arrays)

  loaded = data.load_d4rl_hdf5(path)
  want = d4rl_qlearning_loop(arrays)
  assert loaded.size == 25 - 2 - 1  # two timeout rows and the last row are dropped
  np.testing.assert_array_equal(loaded.observations, want["observations"])
  np.testing.assert_array_equal(loaded.actions, want["actions"])
  np.testing.assert_array_equal(loaded.rewards, want["rewards"])
  np.testing.assert_array_equal(loaded.next_observations, want["next_observations"])  # not the stored (+100) key
  np.testing.assert_array_equal(loaded.masks, 1.0 - want["terminals"])
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(loaded))
  assert_same_transitions(data.qlearning_dataset(arrays), want)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_episode_steps", [2, 3, 7])
def test_qlearning_dataset_without_timeouts_matches_loop(seed, max_episode_steps):
  """Old files without a timeouts key: d4rl's step counter (restarting at 1 after a terminal) decides the drops."""
  rng = np.random.default_rng(seed)
  n = 60
  raw = {
      "observations": rng.normal(size=(n, 2)).astype(np.float32),
      "actions": rng.uniform(-1, 1, size=(n, 1)).astype(np.float32),
      "rewards": rng.normal(size=(n,)).astype(np.float32),
      "terminals": (rng.uniform(size=n) < 0.15).astype(np.float32),
  }
  assert_same_transitions(
      data.qlearning_dataset(raw, max_episode_steps=max_episode_steps), d4rl_qlearning_loop(raw, max_episode_steps))


@pytest.mark.parametrize("seed", range(3))
def test_qlearning_dataset_random_timeouts_and_terminals_match_loop(seed):
  rng = np.random.default_rng(seed)
  n = 80
  raw = {
      "observations": rng.normal(size=(n, 3)),  # float64 in the file: cast to float32 like d4rl
      "actions": rng.uniform(-1, 1, size=(n, 2)),
      "rewards": rng.normal(size=(n, 1)),
      "terminals": rng.uniform(size=n) < 0.1,
      "timeouts": rng.uniform(size=n) < 0.1,
  }
  raw["rewards"] = raw["rewards"][:, 0]
  assert_same_transitions(data.qlearning_dataset(raw), d4rl_qlearning_loop(raw))


def test_load_without_timeouts_key_uses_1000_step_rule(tmp_path):
  arrays = datasets.d4rl_arrays((1000, 1200), ("none", "terminal"), timeouts=False, obs_dim=2, action_dim=1)
  loaded = data.load_d4rl_hdf5(datasets.write_hdf5(tmp_path / "old.hdf5", arrays))
  want = d4rl_qlearning_loop(arrays, 1000)
  assert loaded.size == 2200 - 2 - 1  # rows 999 and 1999 are final timesteps, and the last row has no successor
  np.testing.assert_array_equal(loaded.observations, want["observations"])
  np.testing.assert_array_equal(loaded.masks, 1.0 - want["terminals"])


def test_column_vector_rewards_and_terminals_are_squeezed(tmp_path):
  arrays = datasets.d4rl_arrays((4, 4), ("timeout", "terminal"))
  want = d4rl_qlearning_loop(arrays)
  arrays["rewards"] = arrays["rewards"][:, None]
  arrays["terminals"] = arrays["terminals"][:, None]
  loaded = data.load_d4rl_hdf5(datasets.write_hdf5(tmp_path / "col.hdf5", arrays))
  np.testing.assert_array_equal(loaded.rewards, want["rewards"])
  np.testing.assert_array_equal(loaded.masks, 1.0 - want["terminals"])


def test_episode_ends_split_at_terminals_and_dropped_timeouts(tmp_path):
  arrays = datasets.d4rl_arrays((3, 4, 2, 3), ("terminal", "timeout", "timeout", "terminal"))
  t = data.d4rl_transitions(datasets.write_hdf5(tmp_path / "e.hdf5", arrays))
  # kept rows: ep0 0-2 (terminal at 2), ep1 3-5 (its timeout row dropped), ep2 6 (timeout dropped), ep3 7-8 (its
  # terminal is the file's last row, dropped): ends at 2, 5, 6 and the last transition 8.
  np.testing.assert_array_equal(np.flatnonzero(t.episode_ends), [2, 5, 6, 8])
  np.testing.assert_array_equal(np.flatnonzero(t.terminals), [2])


# ------------------------------------------------------------------------------------------------------------------
# Reward preprocessing
# ------------------------------------------------------------------------------------------------------------------


def test_preprocess_rewards_by_hand():
  rewards = np.array([1, 2, 3, 10, 10, -1, -1, 5], np.float32)
  ends = np.array([0, 0, 1, 0, 1, 0, 1, 0], bool)  # returns 6, 20, -2; the trailing 5 is an incomplete episode
  np.testing.assert_allclose(data.episode_returns(rewards, ends), [6, 20, -2])
  np.testing.assert_allclose(data.preprocess_rewards(rewards, "locomotion", ends), rewards * 1000 / 22, rtol=1e-6)
  np.testing.assert_array_equal(data.preprocess_rewards(rewards, "antmaze"), rewards - 1)
  np.testing.assert_array_equal(data.preprocess_rewards(rewards, "none"), rewards)
  with pytest.raises(DatasetError, match="equal"):
    data.preprocess_rewards(rewards, "locomotion", np.array([0, 0, 1, 0, 0, 0, 0, 0], bool))
  with pytest.raises(DatasetError, match="unknown reward kind 'bogus'"):
    data.preprocess_rewards(rewards, "bogus")


def test_iql_episode_ends_match_return_range_loop():
  rng = np.random.default_rng(0)
  rewards = rng.normal(size=3000).astype(np.float32)
  terminals = rng.uniform(size=3000) < 0.002
  returns = data.episode_returns(rewards, data.iql_episode_ends(terminals, 1000))
  np.testing.assert_allclose((returns.min(), returns.max()), iql_return_range_loop(rewards, terminals), rtol=1e-12)


def _reward_file(tmp_path):
  """Episodes A [1, 2, 3] terminal, B [4, 5, 6] timeout, C [1, 1] terminal, D [2, 2] timeout. Transitions kept:
  A 1, 2, 3 | B 4, 5 (6 is the timeout row) | C 1, 1 | D 2 (the last row has no successor)."""
  arrays = datasets.d4rl_arrays((3, 3, 2, 2), ("terminal", "timeout", "terminal", "timeout"))
  arrays["rewards"] = np.array([1, 2, 3, 4, 5, 6, 1, 1, 2, 2], np.float32)
  return datasets.write_hdf5(tmp_path / "hopper_rewards.hdf5", arrays)


def test_load_dataset_locomotion_rewards_by_hand(tmp_path):
  path = _reward_file(tmp_path)
  raw = np.array([1, 2, 3, 4, 5, 1, 1, 2], np.float32)

  # True episodes (SWG): returns A 6, B 9, C 2, D 2 -> span 7.
  loaded, info = data.load_dataset(str(path))
  assert info["reward_kind"] == "locomotion" and info["num_episodes"] == 4 and info["size"] == 8
  np.testing.assert_allclose(loaded.rewards, raw * 1000 / 7, rtol=1e-6)

  # IQL/SRPO return_range: A ends at its terminal (6); B and C run on to C's terminal (4+5+1+1 = 11); D is
  # incomplete -> span 5.
  loaded, info = data.load_dataset(str(path), episode_rule="iql")
  np.testing.assert_allclose(loaded.rewards, raw * 1000 / 5, rtol=1e-6)

  loaded, info = data.load_dataset(str(path), reward_kind="antmaze")
  np.testing.assert_array_equal(loaded.rewards, raw - 1)
  loaded, info = data.load_dataset(str(path), reward_kind="none")
  np.testing.assert_array_equal(loaded.rewards, raw)


# ------------------------------------------------------------------------------------------------------------------
# load_dataset: D4RL names, downloads (mocked), the table
# ------------------------------------------------------------------------------------------------------------------


def test_d4rl_name_found_in_dataset_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
  arrays = datasets.d4rl_arrays((6, 5), ("timeout", "terminal"), obs_dim=11, action_dim=3)
  datasets.write_hdf5(tmp_path / "hopper_medium-v2.hdf5", arrays)
  loaded, info = data.load_dataset("hopper-medium-v2", download=False)
  assert loaded.size == 9 and loaded.obs_dim == 11 and loaded.action_dim == 3
  assert info["source"] == "d4rl" and info["env_id"] == "Hopper-v4" and info["reward_kind"] == "locomotion"
  assert (info["ref_min_score"], info["ref_max_score"]) == (-20.272305, 3234.3)


def test_d4rl_name_checks_env_dims(tmp_path, monkeypatch):
  monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
  datasets.d4rl_hdf5(tmp_path / "hopper_medium-v2.hdf5", obs_dim=5, action_dim=3)
  with pytest.raises(DatasetError, match=r"obs dim 5 != env obs dim 11"):
    data.load_dataset("hopper-medium-v2", download=False)


def test_d4rl_name_missing_without_download_names_the_path(tmp_path, monkeypatch):
  monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
  with pytest.raises(DatasetError) as e:
    data.load_dataset("walker2d-medium-replay-v2", download=False)
  assert str(tmp_path / "walker2d_medium_replay-v2.hdf5") in str(e.value)
  assert "gym_mujoco_v2/walker2d_medium_replay-v2.hdf5" in str(e.value)


def test_failed_download_names_url_and_path(tmp_path, monkeypatch):
  monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))

  def offline(url, timeout=None):
    raise urllib.error.URLError("no network")

  monkeypatch.setattr(urllib.request, "urlopen", offline)
  with pytest.raises(DatasetError) as e:
    data.load_dataset("antmaze-umaze-v0")
  msg = str(e.value)
  assert "ant_maze_new/Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse.hdf5" in msg
  assert str(tmp_path / "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse.hdf5") in msg
  assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_download_is_renamed_into_place(tmp_path, monkeypatch):
  monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
  payload = datasets.d4rl_hdf5(tmp_path / "src.hdf5", obs_dim=17, action_dim=6).read_bytes()
  urls = []

  def fake_urlopen(url, timeout=None):
    urls.append(url)
    return io.BytesIO(payload)

  monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
  loaded, info = data.load_dataset("halfcheetah-medium-expert-v2")
  assert urls == [data.D4RL_DATASETS["halfcheetah-medium-expert-v2"].url]
  assert sorted(p.name for p in (tmp_path / "d4rl").iterdir()) == ["halfcheetah_medium_expert-v2.hdf5"]
  assert info["path"] == str(tmp_path / "d4rl" / "halfcheetah_medium_expert-v2.hdf5")
  assert info["env_id"] == "HalfCheetah-v4" and loaded.obs_dim == 17


def test_d4rl_table_covers_both_papers():
  for env in ("halfcheetah", "hopper", "walker2d"):
    for level in ("medium", "medium-replay", "medium-expert"):
      spec = data.D4RL_DATASETS[f"{env}-{level}-v2"]
      assert spec.filename == f"{env}_{level.replace('-', '_')}-v2.hdf5"
      assert spec.env_id.endswith("-v4")
  env_names = {"umaze": "UMaze", "medium": "Medium", "large": "Large"}
  for maze in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse"):
    for version in ("v0", "v2"):
      spec = data.D4RL_DATASETS[f"antmaze-{maze}-{version}"]
      assert (spec.ref_min_score, spec.ref_max_score, spec.obs_dim) == (0.0, 1.0, 29)
      assert spec.env_id == f"D4RLAntMaze_{env_names[maze.split('-')[0]]}-v0"
  assert data.infer_reward_kind("antmaze-large-play-v0") == "antmaze"
  assert data.infer_reward_kind("mujoco/walker2d/medium-v0") == "locomotion"
  assert data.infer_reward_kind("kitchen-mixed-v0") == "none"


# ------------------------------------------------------------------------------------------------------------------
# Minari, from a real MuJoCo env
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
  root = tmp_path / "minari"
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
  return root


def test_minari_hopper_invariants(minari_root):
  ds = datasets.make_minari_dataset("test/hopper/tiny-v0", num_episodes=4, max_episode_steps=20, ref_scores=(0, 50))
  episodes = list(ds.iterate_episodes())
  assert [bool(ep.terminations[-1]) for ep in episodes] == [False, True, False, True]
  assert [bool(ep.truncations[-1]) for ep in episodes] == [True, False, True, False]

  loaded, info = data.load_dataset("test/hopper/tiny-v0")
  assert info["source"] == "minari" and info["env_id"] == "Hopper-v5" and info["reward_kind"] == "locomotion"
  assert (info["ref_min_score"], info["ref_max_score"]) == (0, 50)
  assert loaded.size == sum(len(ep) for ep in episodes) == info["size"]
  plain = data.load_minari("test/hopper/tiny-v0")
  start = 0
  for ep in episodes:
    t = len(ep)
    rows = slice(start, start + t)
    np.testing.assert_allclose(plain.observations[rows], ep.observations[:-1], rtol=1e-6)
    np.testing.assert_allclose(plain.next_observations[rows], ep.observations[1:], rtol=1e-6)
    np.testing.assert_array_equal(plain.next_observations[rows][:-1], plain.observations[rows][1:])
    np.testing.assert_array_equal(plain.actions[rows], ep.actions)
    np.testing.assert_allclose(plain.rewards[rows], ep.rewards, rtol=1e-6)
    want_masks = np.ones(t, np.float32)
    want_masks[-1] = 0.0 if ep.terminations[-1] else 1.0  # a truncation keeps mask 1
    np.testing.assert_array_equal(plain.masks[rows], want_masks)
    start += t
  # Locomotion scaling over the four episodes' returns.
  returns = [float(np.sum(ep.rewards)) for ep in episodes]
  np.testing.assert_allclose(loaded.rewards, plain.rewards * 1000 / (max(returns) - min(returns)), rtol=1e-5)


def test_minari_goal_dict_observations_flatten_to_d4rl_layout(minari_root):
  datasets.make_minari_dataset("test/hopper/flat-v0", num_episodes=2, seed=3)
  datasets.make_minari_dataset("test/hopper/dict-v0", num_episodes=2, seed=3, goal_dict_obs=True)
  flat, dicts = data.load_minari("test/hopper/flat-v0"), data.load_minari("test/hopper/dict-v0")
  np.testing.assert_array_equal(dicts.observations, flat.observations)  # concat(achieved_goal, observation)
  np.testing.assert_array_equal(dicts.next_observations, flat.next_observations)
  with pytest.raises(DatasetError, match=r"'achieved_goal' and 'observation'"):
    data.minari_observation_vector({"pixels": np.zeros((3, 2)), "state": np.zeros((3, 4))})


def test_minari_id_not_stored_locally(minari_root):
  with pytest.raises(DatasetError, match=r"minari download mujoco/hopper/medium-v0"):
    data.load_dataset("mujoco/hopper/medium-v0")


@pytest.mark.parametrize("dataset_id,how", [
    ("builtin/reacher/noisy-v0", "experiments.make_dataset --dataset_id=builtin/reacher/noisy-v0"),
    ("recipes/hopper/medium-replay-v0", "experiments.make_dataset --recipe=medium-replay --env=Hopper-v5` or `make datasets"),
])
def test_a_missing_dataset_this_project_builds_names_the_command_that_builds_it(minari_root, dataset_id, how):
  with pytest.raises(DatasetError) as e:
    data.load_minari(dataset_id)
  assert how in str(e.value) and "minari download" not in str(e.value)


# ------------------------------------------------------------------------------------------------------------------
# Bad input: one test each
# ------------------------------------------------------------------------------------------------------------------


def _good_transitions(n=6):
  rng = np.random.default_rng(0)
  return {
      "observations": rng.normal(size=(n, 3)).astype(np.float32),
      "actions": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
      "rewards": rng.normal(size=n).astype(np.float32),
      "next_observations": rng.normal(size=(n, 3)).astype(np.float32),
      "terminals": np.zeros(n, np.float32),
  }


def test_validate_accepts_good_data():
  assert data.validate(_good_transitions(), env_obs_dim=3, env_action_dim=2) == 6


def test_missing_key(tmp_path):
  arrays = datasets.d4rl_arrays()
  del arrays["rewards"]
  with pytest.raises(DatasetError, match=r"missing key 'rewards'"):
    data.load_d4rl_hdf5(datasets.write_hdf5(tmp_path / "x.hdf5", arrays))
  bad = _good_transitions()
  del bad["next_observations"]
  with pytest.raises(DatasetError, match=r"missing key 'next_observations'"):
    data.validate(bad)


def test_nan_names_key_and_index(tmp_path):
  arrays = datasets.d4rl_arrays()
  arrays["observations"][7, 1] = np.nan
  with pytest.raises(DatasetError, match=r"observations has a non-finite value \(nan\) at index 7"):
    data.load_d4rl_hdf5(datasets.write_hdf5(tmp_path / "x.hdf5", arrays))


def test_inf_names_key_and_index():
  bad = _good_transitions()
  bad["rewards"][4] = -np.inf
  with pytest.raises(DatasetError, match=r"rewards has a non-finite value \(-inf\) at index 4"):
    data.validate(bad)


def test_row_count_mismatch_between_keys(tmp_path):
  arrays = datasets.d4rl_arrays()
  arrays["actions"] = arrays["actions"][:-3]
  with pytest.raises(DatasetError, match=r"actions has 19 rows but observations has 22"):
    data.load_d4rl_hdf5(datasets.write_hdf5(tmp_path / "x.hdf5", arrays))
  bad = _good_transitions()
  bad["next_observations"] = bad["next_observations"][:, :2]
  with pytest.raises(DatasetError, match=r"next_observations has shape \(6, 2\) but observations has \(6, 3\)"):
    data.validate(bad)
  bad = _good_transitions()
  bad["rewards"] = bad["rewards"][:, None, None]
  with pytest.raises(DatasetError, match=r"rewards has shape \(6, 1, 1\); expected \[N\]"):
    data.validate(bad)


def test_mismatch_against_env_dims():
  with pytest.raises(DatasetError, match=r"obs dim 3 != env obs dim 11"):
    data.validate(_good_transitions(), env_obs_dim=11)
  with pytest.raises(DatasetError, match=r"action dim 2 != env action dim 3"):
    data.validate(_good_transitions(), env_action_dim=3)


def test_actions_outside_unit_box(tmp_path):
  arrays = datasets.d4rl_arrays()
  arrays["actions"][9, 0] = -1.5
  with pytest.raises(DatasetError, match=r"max \|a\| = 1.5 at index 9"):
    data.load_d4rl_hdf5(datasets.write_hdf5(tmp_path / "x.hdf5", arrays))
  ok = _good_transitions()
  ok["actions"][0, 0] = 1.0 + 1e-6  # float round-off at the bound is tolerated
  data.validate(ok)


def test_empty_dataset(tmp_path):
  arrays = {k: v[:0] for k, v in datasets.d4rl_arrays().items()}
  with pytest.raises(DatasetError, match=r"empty dataset"):
    data.load_d4rl_hdf5(datasets.write_hdf5(tmp_path / "empty.hdf5", arrays))
  one_row = {k: v[:1] for k, v in datasets.d4rl_arrays().items()}  # the last row has no successor: 0 transitions
  with pytest.raises(DatasetError, match=r"empty dataset"):
    data.load_d4rl_hdf5(datasets.write_hdf5(tmp_path / "one.hdf5", one_row))


def test_unknown_dataset_id_has_hint():
  with pytest.raises(DatasetError) as e:
    data.load_dataset("hopper-mediocre-v9")
  msg = str(e.value)
  assert "unknown dataset id 'hopper-mediocre-v9'" in msg
  assert "hopper-medium-v2" in msg and ".hdf5" in msg and "minari download" in msg


def test_existing_file_of_another_format_is_named_as_such(tmp_path):
  csv = tmp_path / "hopper.csv"
  csv.write_text("obs,action\n")
  with pytest.raises(DatasetError) as e:
    data.load_dataset(str(csv))
  msg = str(e.value)
  assert f"{str(csv)!r} exists but is a .csv file" in msg and "unknown dataset id" not in msg
  assert ".hdf5 or .h5" in msg and "Minari ids" in msg and "D4RL names" in msg
  assert len(msg) < 600  # not the long list of D4RL names
  with pytest.raises(DatasetError, match=r"exists but is a directory, which is not a dataset format read here\. "):
    data.load_dataset(str(tmp_path))


def test_corrupt_and_truncated_hdf5(tmp_path):
  junk = tmp_path / "junk.hdf5"
  junk.write_bytes(b"this is not an hdf5 file" * 100)
  with pytest.raises(DatasetError, match=r"(?s)junk.hdf5.*corrupt or truncated"):
    data.load_dataset(str(junk))
  good = datasets.d4rl_hdf5(tmp_path / "good.hdf5", episode_lengths=(500, 500), episode_ends=("terminal", "timeout"))
  cut = tmp_path / "cut.hdf5"
  cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
  with pytest.raises(DatasetError, match=r"(?s)cut.hdf5.*corrupt or truncated"):
    data.load_dataset(str(cut))
  with pytest.raises(DatasetError, match=r"no such D4RL hdf5 file"):
    data.load_dataset(str(tmp_path / "absent.hdf5"))


# ------------------------------------------------------------------------------------------------------------------
# Device side
# ------------------------------------------------------------------------------------------------------------------


class SampleBatchTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_sample_batch_returns_dataset_rows(self):
    with tempfile.TemporaryDirectory() as tmp:
      loaded = data.load_d4rl_hdf5(datasets.d4rl_hdf5(pathlib.Path(tmp) / "x.hdf5"))
    batch = self.variant(data.sample_batch, static_argnums=2)(loaded, jax.random.key(0), 64)
    chex.assert_shape((batch.observations, batch.masks), ((64, 3), (64,)))

    def rows(d):
      return np.concatenate([np.asarray(d.observations), np.asarray(d.actions), np.asarray(d.rewards)[:, None],
                             np.asarray(d.next_observations), np.asarray(d.masks)[:, None]], axis=1)

    table = {tuple(r) for r in rows(loaded)}
    assert all(tuple(r) in table for r in rows(batch))
    assert len({tuple(r) for r in rows(batch)}) > 1


def test_minari_eval_env_kwargs_reach_the_evaluation(minari_root, tmp_path, monkeypatch):
  # An eval env spec with a non-default kwarg: evaluation must build that env, not the registered default.
  monkeypatch.chdir(tmp_path)
  import dataclasses

  import gymnasium as gym

  from common.envs import evaluation
  from common.run import evaluate_policy, load_run_data
  from srpo_jax import get_config

  spec = gym.spec("Hopper-v5")
  spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "healthy_reward": 3.0})
  datasets.make_minari_dataset("test/hopper/kwargs-v0", num_episodes=4, eval_env=spec)
  config = get_config("test/hopper/kwargs-v0:smoke")
  config.eval.episodes, config.eval.max_episode_steps = 3, 30
  _, info = load_run_data(config)
  assert info["eval_env_id"] == "Hopper-v5" and info["env_kwargs"]["healthy_reward"] == 3.0

  def still(obs, key):
    return np.zeros(obs.shape[:2] + (3,), np.float32)

  with_kwargs = np.array(evaluate_policy(still, config, info, None, "still")["returns"])
  default = evaluation.evaluate(still, "Hopper-v5", num_seeds=len(config.seeds), episodes_per_seed=3,
                                seed=config.eval.seed, max_episode_steps=30)
  # Same trajectories, healthy reward 3 instead of 1 per step.
  np.testing.assert_allclose(with_kwargs - default.returns, 2.0 * default.lengths, rtol=1e-9)
  # A user-chosen env drops the dataset's kwargs, which belong to its own env.
  config = get_config("test/hopper/kwargs-v0:smoke")
  config.env_id = "Hopper-v4"
  assert load_run_data(config)[1]["env_kwargs"] is None
