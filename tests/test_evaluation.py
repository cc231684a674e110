"""Evaluation: vectorised rollouts against a plain single-env Python loop; normalised scores against hand numbers."""
import gymnasium as gym
import jax
import jax.numpy as jnp
import minari
import numpy as np
import pytest

from common import data, run
from common.envs import evaluation as ev

HOPPER = "Hopper-v4"


def reference_episode(env_id, reset_seed, act_fn, max_episode_steps):
  """The oracle: one env, one episode, a plain loop. act_fn(obs float32 [S], t) -> action [A]."""
  env = gym.make(env_id, max_episode_steps=max_episode_steps)
  obs, _ = env.reset(seed=int(reset_seed))
  low, high = env.action_space.low, env.action_space.high
  total, t, observations = 0.0, 0, []
  while True:
    obs32 = obs.astype(np.float32)
    observations.append(obs32)
    action = np.clip(act_fn(obs32, t), low, high).astype(np.float32)
    obs, reward, terminated, truncated, _ = env.step(action)
    total += reward
    t += 1
    if terminated or truncated:
      env.close()
      return total, t, terminated, observations


def assert_matches_reference(result, act_fn_for, max_episode_steps):
  for i in range(result.returns.shape[0]):
    for j in range(result.returns.shape[1]):
      ret, length, terminated, _ = reference_episode(HOPPER, result.reset_seeds[i, j], act_fn_for(i, j),
                                                     max_episode_steps)
      assert result.lengths[i, j] == length, (i, j)
      assert result.terminated[i, j] == terminated, (i, j)
      # Same float64 rewards summed in the same order: exact.
      assert result.returns[i, j] == ret, (i, j, result.returns[i, j], ret)


def linear_numpy_policy(gain, bias):
  """Elementwise float32 policy a = gain * obs[2:5] + bias (no reductions, so batched == per-env bit for bit)."""
  gain, bias = np.float32(gain), np.float32(bias)

  def policy(obs, key):
    return gain * obs[..., 2:5] + bias
  return policy


def test_matches_single_env_loop():
  # Gain 2 on joint angles drives actions past [-1, 1] at times, so the clipping is exercised too.
  policy = linear_numpy_policy(2.0, 0.3)
  result = ev.evaluate(policy, HOPPER, num_seeds=2, episodes_per_seed=3, seed=7, max_episode_steps=60)
  assert result.returns.shape == result.lengths.shape == result.reset_seeds.shape == (2, 3)
  assert len(np.unique(result.reset_seeds)) == 6
  assert result.env_id == HOPPER and result.max_episode_steps == 60
  assert result.gymnasium_version == gym.__version__
  assert_matches_reference(result, lambda i, j: lambda o, t: policy(o, None), 60)


def test_mixed_episode_lengths_mask_post_episode_rewards():
  # Per-(seed, episode) parameters, like a seed-vmapped policy: zero action survives to the time limit, constant
  # +1 / -1 / 0.5 actions and a feedback law make Hopper fall after ~21 / 6 / 13 / 30 steps. The vector env keeps
  # stepping (and auto-resetting) the fallen ones, so their later rewards must be masked.
  gain = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]], np.float32)[..., None]
  bias = np.array([[0.0, 1.0, -1.0], [0.3, 0.5, 0.0]], np.float32)[..., None]
  horizon = 60

  def policy(obs, key):
    return gain * obs[..., 2:5] + bias

  result = ev.evaluate(policy, HOPPER, num_seeds=2, episodes_per_seed=3, seed=1, max_episode_steps=horizon)
  assert len(np.unique(result.lengths)) >= 4, result.lengths
  assert result.lengths.min() < 15 and result.lengths.max() == horizon
  assert result.terminated.any() and not result.terminated.all()
  np.testing.assert_array_equal(result.terminated, result.lengths < horizon)
  assert_matches_reference(result, lambda i, j: lambda o, t: gain[i, j] * o[2:5] + bias[i, j], horizon)


def test_stochastic_jitted_policy_protocol_and_replay():
  """policy_fn gets obs [num_seeds, episodes, S] float32 and the documented key each step; replaying the actions
  it returned in single envs reproduces every return, length and observation."""
  num_seeds, episodes, horizon, seed = 2, 3, 40, 3
  weights = jnp.array([0.5, -1.0])

  @jax.jit
  def policy(obs, key):
    def per_seed(w, o, k):  # o: [episodes, S]
      return jnp.tanh(w * o[:, 2:5] + 0.3 + 0.5 * jax.random.normal(k, (o.shape[0], 3)))
    return jax.vmap(per_seed)(weights, obs, jax.random.split(key, obs.shape[0]))

  calls = []

  def recording_policy(obs, key):
    actions = np.asarray(policy(obs, key))
    calls.append((obs.copy(), np.asarray(key), actions))
    return actions

  result = ev.evaluate(recording_policy, HOPPER, num_seeds=num_seeds, episodes_per_seed=episodes, seed=seed,
                       max_episode_steps=horizon)
  assert result.lengths.min() < result.lengths.max()  # the stochastic policy makes some envs fall
  # One call per step, and no more steps once every env is done.
  assert len(calls) == result.lengths.max()
  key = jax.random.PRNGKey(seed)
  for obs, step_key, actions in calls:
    assert obs.shape == (num_seeds, episodes, 11) and obs.dtype == np.float32
    assert actions.shape == (num_seeds, episodes, 3)
    key, expected = jax.random.split(key)
    np.testing.assert_array_equal(step_key, np.asarray(expected))
  assert len({tuple(k) for _, k, _ in calls}) == len(calls)

  for i in range(num_seeds):
    for j in range(episodes):
      ret, length, _, ref_obs = reference_episode(HOPPER, result.reset_seeds[i, j],
                                                  lambda o, t: calls[t][2][i, j], horizon)
      assert (result.lengths[i, j], result.returns[i, j]) == (length, ret)
      for t in range(length):
        np.testing.assert_array_equal(calls[t][0][i, j], ref_obs[t])

  again = ev.evaluate(lambda o, k: np.asarray(policy(o, k)), HOPPER, num_seeds=num_seeds, episodes_per_seed=episodes,
                      seed=seed, max_episode_steps=horizon)
  np.testing.assert_array_equal(again.returns, result.returns)
  other = ev.evaluate(lambda o, k: np.asarray(policy(o, k)), HOPPER, num_seeds=num_seeds, episodes_per_seed=episodes,
                      seed=seed + 1, max_episode_steps=horizon)
  assert not np.any(other.returns == result.returns)


def test_reset_seeds_do_not_depend_on_num_seeds():
  seeds = ev.episode_reset_seeds(0, 5, 20)
  assert seeds.shape == (5, 20) and len(np.unique(seeds)) == 100
  np.testing.assert_array_equal(ev.episode_reset_seeds(0, 2, 20), seeds[:2])
  assert not np.intersect1d(ev.episode_reset_seeds(1, 5, 20), seeds).size
  policy = linear_numpy_policy(2.0, 0.3)
  one = ev.evaluate(policy, HOPPER, num_seeds=1, episodes_per_seed=2, seed=5, max_episode_steps=30)
  two = ev.evaluate(policy, HOPPER, num_seeds=2, episodes_per_seed=2, seed=5, max_episode_steps=30)
  np.testing.assert_array_equal(one.returns[0], two.returns[0])


def test_default_time_limit_and_progress_bar():
  # A constant -1 action makes Hopper fall within a few steps, so the registered 1000-step limit costs nothing.
  result = ev.evaluate(lambda o, k: -np.ones(o.shape[:2] + (3,)), HOPPER, num_seeds=1, episodes_per_seed=2,
                       progress=True)
  assert result.max_episode_steps == 1000
  assert result.terminated.all() and result.lengths.max() < 20
  assert "Hopper-v4" in result.describe() and gym.__version__ in result.describe()


@pytest.mark.parametrize("bad, match", [
    (lambda o, k: np.zeros((o.shape[0], 3)), r"shape \(2, 3\), expected \(2, 1, 3\)"),
    (lambda o, k: np.full(o.shape[:2] + (3,), np.nan), "non-finite"),
])
def test_bad_policy_output(bad, match):
  with pytest.raises(ValueError, match=match):
    ev.evaluate(bad, HOPPER, num_seeds=2, episodes_per_seed=1, max_episode_steps=5)


def test_bad_arguments():
  with pytest.raises(ValueError, match="num_seeds"):
    ev.evaluate(lambda o, k: o, HOPPER, num_seeds=0)
  with pytest.raises(ValueError, match="max_episode_steps"):
    ev.evaluate(lambda o, k: o, HOPPER, num_seeds=1, max_episode_steps=0)


def test_antmaze_without_gymnasium_robotics():
  try:
    import gymnasium_robotics  # noqa: F401
    pytest.skip("gymnasium_robotics is installed")
  except ImportError:
    pass
  with pytest.raises(ImportError, match="gymnasium-robotics"):  # the env of Minari's D4RL/antmaze/large-diverse-v1
    ev.evaluate(lambda o, k: o, "AntMaze_Large_Diverse_GR-v4", num_seeds=1, episodes_per_seed=1)


def test_flat_observation_uses_d4rl_antmaze_layout():
  obs = {"achieved_goal": np.array([[1.0, 2.0]]), "observation": np.arange(27.0)[None],
         "desired_goal": np.zeros((1, 2))}
  flat = ev._flat_observation(obs)
  assert flat.shape == (1, 29)
  np.testing.assert_array_equal(flat[0, :2], [1.0, 2.0])
  np.testing.assert_array_equal(flat[0, 2:], np.arange(27.0))


# ---------------------------------------------------------------------------------------------------------------------
# Scores and env ids


def _table_scores(name, returns):
  spec = data.D4RL_DATASETS[name]
  return run.normalized_scores(np.asarray(returns), {"ref_min_score": spec.ref_min_score,
                                                     "ref_max_score": spec.ref_max_score})


def test_d4rl_normalized_score_hand_computed():
  # 100 (R - min) / (max - min) with d4rl/infos.py's reference returns, evaluated by hand with exact fractions.
  assert _table_scores("hopper-medium-v2", 1000.0) == pytest.approx(31.348890403588683, rel=1e-12)
  np.testing.assert_allclose(_table_scores("halfcheetah-medium-expert-v2", [0.0, 4000.0]),
                             [2.256745183139689, 34.47537058630749], rtol=1e-12)
  assert _table_scores("walker2d-medium-replay-v2", 3000.0) == pytest.approx(65.31443872203334, rel=1e-12)
  np.testing.assert_allclose(_table_scores("antmaze-large-diverse-v0", np.array([[0.0, 0.5, 1.0]])),
                             [[0.0, 50.0, 100.0]])


def _tiny_minari_dataset(dataset_id, **refs):
  env = minari.DataCollector(gym.make("Hopper-v5", max_episode_steps=10))
  for episode in range(3):
    env.reset(seed=episode)
    done = False
    while not done:
      _, _, terminated, truncated, _ = env.step(env.action_space.sample())
      done = terminated or truncated
  dataset = env.create_dataset(dataset_id=dataset_id, algorithm_name="random", author="test", author_email="test@test",
                               code_permalink="tests/test_evaluation.py", description="random Hopper-v5 episodes",
                               eval_env="Hopper-v5", **refs)
  env.close()
  return dataset


def test_minari_normalized_score(tmp_path, monkeypatch):
  """A Minari dataset's reference returns reach the score through load_dataset's info, as minari computes it."""
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  dataset = _tiny_minari_dataset("mujoco/hopper/tiny-v0", ref_min_score=-20.0, ref_max_score=3000.0)
  returns = np.array([-20.0, 100.0, 3000.0])
  expected = [0.0, 100.0 * 120.0 / 3020.0, 100.0]
  _, info = data.load_dataset("mujoco/hopper/tiny-v0")
  np.testing.assert_allclose(run.normalized_scores(returns, info), expected, rtol=1e-12)
  np.testing.assert_allclose(run.normalized_scores(returns, info),
                             100.0 * minari.get_normalized_score(dataset, returns), rtol=1e-12)
  # No reference scores (like Minari's mujoco/*-v0): no normalised score rather than a made-up one.
  _tiny_minari_dataset("mujoco/hopper/noref-v0")
  _, bare = data.load_dataset("mujoco/hopper/noref-v0")
  assert run.normalized_scores(returns, bare) is None


def test_d4rl_locomotion_envs_have_d4rl_shapes(tmp_path, monkeypatch):
  # D4RL v2 data: hopper obs 11 / act 3, halfcheetah and walker2d obs 17 / act 6.
  monkeypatch.chdir(tmp_path)  # MuJoCo 4 writes a MUJOCO_LOG.TXT deprecation warning (settotalmass) for HalfCheetah-v4
  cases = [("hopper-medium-v2", "Hopper-v4", (11, 3)), ("halfcheetah-medium-v2", "HalfCheetah-v4", (17, 6)),
           ("walker2d-medium-replay-v2", "Walker2d-v4", (17, 6))]
  for name, env_id, dims in cases:
    spec = data.D4RL_DATASETS[name]
    assert spec.env_id == env_id and (spec.obs_dim, spec.action_dim) == dims
    env = gym.make(spec.env_id)
    assert (env.observation_space.shape[0], env.action_space.shape[0]) == dims
    env.close()
