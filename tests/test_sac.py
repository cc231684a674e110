"""SAC (common/recipes/sac.py): its losses against a NumPy re-derivation on a tiny batch, the Polyak target step, and
learning on a one-step problem whose best action is known."""
import jax
import jax.numpy as jnp
import numpy as np

from common.recipes.sac import Batch, SACConfig, alpha_of, init_sac, make_update_chunk, mean_actions, sac_losses, sac_update

B, S, A = 5, 3, 2
CONFIG = SACConfig(hidden=(16, 16), lr=1e-3, discount=0.9, tau=0.1, batch_size=B, init_alpha=0.5)


def tiny_batch(seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return Batch(observations=f(B, S), actions=jnp.tanh(f(B, A)), rewards=f(B), next_observations=f(B, S),
               masks=jnp.asarray([1.0, 0.0, 1.0, 1.0, 0.0]))


def test_losses_match_numpy():
  state = init_sac(jax.random.PRNGKey(0), S, A, CONFIG)
  batch = tiny_batch()
  rng = np.random.default_rng(1)
  next_noise, noise = rng.normal(size=(B, A)).astype(np.float32), rng.normal(size=(B, A)).astype(np.float32)

  @jax.jit  # one compiled call: op-by-op execution compiles every primitive anew
  def losses(state, batch, next_noise, noise):
    critic_loss, actor_loss, alpha_loss = sac_losses(state, batch, next_noise, noise, CONFIG)
    pi_loss, logp = actor_loss(state.actor.params)
    return critic_loss(state.critic.params)[0], pi_loss, logp, alpha_loss(state.log_alpha.params, logp)

  got_critic, got_actor, got_logp, got_alpha = losses(state, batch, jnp.asarray(next_noise), jnp.asarray(noise))

  # NumPy: the tanh-Gaussian log-density by the textbook formula log N(u; mean, std) - sum log(1 - tanh(u)^2).
  def policy(obs, eps):
    mean, log_std = (np.asarray(x, np.float64) for x in jax.jit(state.actor.apply_fn)(state.actor.params, obs))
    std = np.exp(log_std)
    u = mean + std * eps
    log_n = -0.5 * ((u - mean) / std) ** 2 - np.log(std * np.sqrt(2 * np.pi))
    return np.tanh(u), np.sum(log_n - np.log(1 - np.tanh(u) ** 2), axis=-1)

  q_apply = jax.jit(state.critic.apply_fn)
  q = lambda params, obs, act: np.asarray(q_apply(params, obs, jnp.asarray(act, jnp.float32)), np.float64)
  alpha = 0.5
  a2, logp2 = policy(batch.next_observations, next_noise)
  y = np.asarray(batch.rewards) + 0.9 * np.asarray(batch.masks) * (
      q(state.critic_target_params, batch.next_observations, a2).min(0) - alpha * logp2)
  want_critic = sum(np.mean((qi - y) ** 2) for qi in q(state.critic.params, batch.observations, batch.actions))
  a, logp = policy(batch.observations, noise)
  want_actor = np.mean(alpha * logp - q(state.critic.params, batch.observations, a).min(0))
  want_alpha = -np.mean(np.log(alpha) * (logp - A))  # target entropy -A

  np.testing.assert_allclose(got_critic, want_critic, rtol=1e-4)
  np.testing.assert_allclose(got_actor, want_actor, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got_logp, logp, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got_alpha, want_alpha, rtol=1e-4)


def test_update_moves_targets_by_polyak_and_alpha_by_entropy():
  state = init_sac(jax.random.PRNGKey(0), S, A, CONFIG)
  old_target = jax.tree.map(np.asarray, state.critic_target_params)
  new, metrics = jax.jit(sac_update, static_argnums=3)(state, tiny_batch(), jax.random.PRNGKey(3), CONFIG)
  jax.tree.map(lambda t, p, o: np.testing.assert_allclose(t, 0.1 * np.asarray(p) + 0.9 * o, rtol=1e-5, atol=1e-7),
               new.critic_target_params, new.critic.params, old_target)
  # Adam's first step moves log_alpha by -lr * sign(grad); grad = -(logp + target) = entropy - target_entropy.
  direction = np.sign(float(metrics["entropy"]) - (-A))
  np.testing.assert_allclose(float(jnp.log(alpha_of(new))) - np.log(0.5), -1e-3 * direction, rtol=1e-2)


def test_sac_learns_the_best_action_of_a_one_step_problem():
  """Reward -|a - a*|^2 with a* = (0.5, -0.3), every step terminal: the learned mean action moves to a*."""
  best = np.array([0.5, -0.3], np.float32)
  rng = np.random.default_rng(0)
  config = SACConfig(hidden=(32, 32), lr=3e-3, batch_size=64, init_alpha=0.05)
  state = init_sac(jax.random.PRNGKey(0), S, A, config)
  chunk = make_update_chunk(config)
  probe = jnp.asarray(rng.normal(size=(64, S)), jnp.float32)
  reward = lambda a: -np.sum((np.asarray(a) - best) ** 2, axis=-1)
  before = float(np.mean(reward(mean_actions(state.actor, probe))))
  for i in range(12):
    obs = rng.normal(size=(100, 64, S)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(100, 64, A)).astype(np.float32)
    batches = Batch(observations=obs, actions=act, rewards=reward(act).astype(np.float32), next_observations=obs,
                    masks=np.zeros((100, 64), np.float32))
    state, metrics = chunk(state, batches, jax.random.PRNGKey(i))
  after = mean_actions(state.actor, probe)
  assert float(np.mean(reward(after))) > max(-0.03, before + 0.1), (before, float(np.mean(reward(after))))
  np.testing.assert_allclose(np.mean(np.asarray(after), 0), best, atol=0.1)
