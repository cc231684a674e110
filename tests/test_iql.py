"""IQL critic against known answers: an expectile on synthetic data, and the exact Q of a tiny deterministic MDP."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from common import iql
from common.data import OfflineData
from common.training import Trainer, init_seeds, seed_keys


def critic_config(**overrides):
  cfg = ml_collections.ConfigDict(dict(hidden=(64, 64), value_layer_norm=False, lr=1e-3, expectile=0.7,
                                       discount=0.9, polyak=0.05, batch_size=256))
  cfg.update(overrides)
  return cfg


def brute_force_expectile(values, tau):
  """The tau-expectile: root of tau * E[(y - m)+] = (1 - tau) * E[(m - y)+], by bisection."""
  lo, hi = values.min(), values.max()
  for _ in range(100):
    m = 0.5 * (lo + hi)
    g = tau * np.mean(np.maximum(values - m, 0)) - (1 - tau) * np.mean(np.maximum(m - values, 0))
    lo, hi = (m, hi) if g > 0 else (lo, m)
  return 0.5 * (lo + hi)


def train_critic(data, cfg, steps):
  keys = seed_keys([0])
  state = init_seeds(lambda k: iql.init_critic(k, data.obs_dim, data.action_dim, cfg), keys)
  state = Trainer(iql.make_critic_step(cfg), num_steps=steps, steps_per_call=steps, progress=False).run(
      state, data, keys)
  return jax.tree.map(lambda x: x[0], state)


def test_expectile_loss_minimiser_is_the_expectile():
  values = np.random.default_rng(0).exponential(size=500)
  for tau in (0.5, 0.7, 0.9):
    grad = jax.jit(jax.grad(lambda m: iql.expectile_loss(jnp.asarray(values) - m, tau)))
    m = 0.0
    for _ in range(2000):
      m = m - 0.5 * grad(m)
    np.testing.assert_allclose(m, brute_force_expectile(values, tau), atol=1e-4)


def test_value_recovers_expectile_of_terminal_rewards():
  # One state, all transitions terminal: Q(s, a) = r(a), so V(s) must be the tau-expectile of r over dataset actions.
  rng = np.random.default_rng(1)
  n = 2048
  actions = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
  rewards = (actions[:, 0] ** 2 + actions[:, 0]).astype(np.float32)
  obs = np.ones((n, 2), np.float32)
  data = OfflineData(observations=jnp.asarray(obs), actions=jnp.asarray(actions), rewards=jnp.asarray(rewards),
                     next_observations=jnp.asarray(obs), masks=jnp.zeros(n))
  state = train_critic(data, critic_config(expectile=0.9, lr=3e-4), steps=6000)
  v = state.v.apply_fn(state.v.params, obs[:1])[0]
  expected = brute_force_expectile(rewards, 0.9)
  assert abs(float(v) - expected) < 0.03, (float(v), expected)
  q = iql.target_q(state, jnp.asarray(obs[:64]), jnp.asarray(actions[:64]))
  np.testing.assert_allclose(q, rewards[:64], atol=0.06)


def tabular_expectile_q(rewards, next_state, terminal, tau, gamma, iters=500):
  """Independent oracle: fixed point of Q = r + gamma (1 - done) V(s'), V(s) = tau-expectile of Q(s, .) over the
  (uniform, every action present once) dataset actions, by plain iteration."""
  num_states, num_actions = rewards.shape
  q = np.zeros((num_states, num_actions))
  for _ in range(iters):
    v = np.array([brute_force_expectile(q[s], tau) for s in range(num_states)])
    q = rewards + gamma * (1 - terminal) * v[next_state]
  return q, v


def test_critic_matches_tabular_q_of_deterministic_mdp():
  # A 4-state chain, 2 actions: action 0 stays, action 1 moves right; reaching state 3 ends the episode.
  num_states, num_actions, gamma, tau = 4, 2, 0.9, 0.7
  next_state = np.array([[0, 1], [1, 2], [2, 3], [3, 3]])
  rewards = np.array([[0.0, 0.1], [0.2, 0.0], [0.0, 1.0], [0.5, 0.5]])
  terminal = np.array([[0, 0], [0, 0], [0, 1], [1, 1]], dtype=np.float64)
  q_true, _ = tabular_expectile_q(rewards, next_state, terminal, tau, gamma)

  s_idx, a_idx = np.meshgrid(np.arange(num_states), np.arange(num_actions), indexing="ij")
  s_idx, a_idx = s_idx.ravel(), a_idx.ravel()
  eye = np.eye(num_states, dtype=np.float32)
  actions = np.where(a_idx == 1, 1.0, -1.0)[:, None].astype(np.float32)
  data = OfflineData(observations=jnp.asarray(eye[s_idx]), actions=jnp.asarray(actions),
                     rewards=jnp.asarray(rewards[s_idx, a_idx], jnp.float32),
                     next_observations=jnp.asarray(eye[next_state[s_idx, a_idx]]),
                     masks=jnp.asarray(1.0 - terminal[s_idx, a_idx], jnp.float32))
  state = train_critic(data, critic_config(expectile=tau, discount=gamma, batch_size=64), steps=4000)
  q = iql.target_q(state, data.observations, data.actions)
  np.testing.assert_allclose(np.asarray(q), q_true[s_idx, a_idx], atol=0.05)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_critic_parameter_counts(layer_norm):
  cfg = critic_config(hidden=(256, 256), value_layer_norm=layer_norm)
  state = iql.init_critic(jax.random.PRNGKey(0), 11, 3, cfg)
  count = lambda p: sum(x.size for x in jax.tree.leaves(p))
  mlp = lambda d_in: d_in * 256 + 256 + 256 * 256 + 256 + 256 + 1
  assert count(state.q.params) == 2 * mlp(14)
  assert count(state.v.params) == mlp(11) + (22 if layer_norm else 0)
