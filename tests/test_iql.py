"""IQL critic against known answers: an expectile on synthetic data, one update against its formulas, and the exact
Q of a tiny deterministic MDP."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from common import iql
from common.data import OfflineData
from common.networks import param_count
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


class CriticMathsTest(chex.TestCase):
  """The IQL losses and one critic update, run jitted and eagerly (chex variants), against independent oracles."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_expectile_loss_minimiser_is_the_expectile(self):
    values = np.random.default_rng(0).exponential(size=500)
    for tau in (0.5, 0.7, 0.9):
      grad = jax.grad(lambda m: iql.expectile_loss(jnp.asarray(values) - m, tau))
      # 2000 gradient steps in one fori_loop: the eager variant still runs the loss op by op outside jit.
      descend = self.variant(lambda m0: jax.lax.fori_loop(0, 2000, lambda _, m: m - 0.5 * grad(m), m0))
      np.testing.assert_allclose(descend(0.0), brute_force_expectile(values, tau), atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_one_critic_update_is_adam_on_the_iql_losses(self):
    # Oracle written from the formulas in the iql docstring: the value step regresses the tau-expectile of the
    # *target* twin-Q minimum, the Q step uses the *updated* V(s'), both take Adam's first step
    # (m_hat = g, v_hat = g^2, so -lr g / (|g| + eps)), then the targets move by Polyak averaging.
    cfg = critic_config(hidden=(16, 16), expectile=0.8, discount=0.9, polyak=0.05, lr=1e-3)
    state = iql.init_critic(jax.random.PRNGKey(0), 3, 2, cfg)
    # Targets unlike the online Q, so that using the wrong one changes the result.
    state = state.replace(q_target_params=jax.tree.map(lambda p: p + 0.1, state.q_target_params))
    rng = np.random.default_rng(0)
    f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    batch = OfflineData(observations=f(32, 3), actions=jnp.tanh(f(32, 2)), rewards=f(32), next_observations=f(32, 3),
                        masks=jnp.asarray(rng.integers(0, 2, 32), jnp.float32))
    new, metrics = self.variant(lambda s, b: iql.critic_update(s, b, cfg))(state, batch)

    q_net, v_net = state.q.apply_fn, state.v.apply_fn
    q_min = jnp.min(q_net(state.q_target_params, batch.observations, batch.actions), axis=0)

    def v_loss(p):
      u = q_min - v_net(p, batch.observations)
      return jnp.mean(jnp.where(u < 0, 1 - 0.8, 0.8) * u**2)

    adam_first_step = lambda p, g: p - 1e-3 * g / (jnp.abs(g) + 1e-8)
    v_params = jax.tree.map(adam_first_step, state.v.params, jax.grad(v_loss)(state.v.params))
    y = batch.rewards + 0.9 * batch.masks * v_net(v_params, batch.next_observations)
    q_loss = lambda p: jnp.mean((q_net(p, batch.observations, batch.actions) - y) ** 2)
    q_params = jax.tree.map(adam_first_step, state.q.params, jax.grad(q_loss)(state.q.params))
    q_target = jax.tree.map(lambda n, o: 0.05 * n + 0.95 * o, q_params, state.q_target_params)

    chex.assert_trees_all_close(new.v.params, v_params, atol=1e-6)
    chex.assert_trees_all_close(new.q.params, q_params, atol=1e-6)
    chex.assert_trees_all_close(new.q_target_params, q_target, atol=1e-6)
    # The losses reported are those of the parameters before the step.
    chex.assert_trees_all_close((metrics["value_loss"], metrics["q_loss"]),
                                (v_loss(state.v.params), q_loss(state.q.params)), rtol=1e-5)
    assert int(new.q.step) == int(new.v.step) == 1


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
  mlp = lambda d_in: d_in * 256 + 256 + 256 * 256 + 256 + 256 + 1
  assert param_count(state.q.params) == 2 * mlp(14)
  assert param_count(state.v.params) == mlp(11) + (22 if layer_norm else 0)
