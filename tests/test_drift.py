"""SRPO's drift metrics and its rule for beta, against a Gaussian behaviour policy whose exact eps is written here:
behaviour N(mean(s), sigma^2 I), whose noised marginal at t is N(alpha mean, alpha^2 sigma^2 + s_t^2), so
eps*(a_t) = s_t (a_t - alpha mean) / (alpha^2 sigma^2 + s_t^2)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srpo_jax import configs, drift, policy
from srpo_jax.behavior import SCHEDULE

OBS_DIM, ACTION_DIM, SIGMA, GRAD = 3, 2, 0.05, 40.0


def mean_action(s):
  return 0.3 * jnp.tanh(s[:, :ACTION_DIM])


def exact_eps(a_t, t_model, s, sigma=SIGMA):
  alpha, st = SCHEDULE.alpha_sigma(SCHEDULE.t_from_model_time(t_model))
  if jnp.ndim(alpha):  # per-sample times [B] (the policy loss), else one time for all (the sampler)
    alpha, st = alpha[:, None], st[:, None]
  return st * (a_t - alpha * mean_action(s)) / (alpha**2 * sigma**2 + st**2)


def linear_q(s, a):  # grad_a Q = GRAD in every coordinate
  return GRAD * jnp.sum(a, axis=-1)


def states(n=512):
  return jax.random.normal(jax.random.PRNGKey(1), (n, OBS_DIM))


def policy_config(**kw):
  c = configs.get_config("validate").policy
  c.update(kw)
  return c


def test_the_regulariser_pulls_an_offset_action_back_by_c_times_the_offset():
  config = policy_config(beta=0.0)
  s = states()
  for offset in (0.02, 0.1):
    act = lambda obs, d=offset: mean_action(obs) + d
    m = drift.drift_metrics(act, exact_eps, linear_q, s, jax.random.PRNGKey(0), config, num_levels=4096)
    assert float(m["reg_pull"]) == pytest.approx(drift.pull_per_offset(SIGMA, config) * offset, rel=0.03)
  assert drift.pull_per_offset(1e-3, config) == pytest.approx(0.2357, abs=5e-4)  # narrow data: about 0.23 d
  assert drift.pull_per_offset(0.5, config) < drift.pull_per_offset(0.05, config)  # wide data pulls less


def test_drift_metrics_measure_distance_bounds_and_the_q_pull():
  config = policy_config(beta=0.02)
  s = states(256)
  key = jax.random.PRNGKey(2)
  at_mean = drift.drift_metrics(mean_action, exact_eps, linear_q, s, key, config)
  far = drift.drift_metrics(lambda obs: mean_action(obs) + 10 * SIGMA, exact_eps, linear_q, s, key, config)
  bounds = drift.drift_metrics(lambda obs: jnp.ones((obs.shape[0], ACTION_DIM)), exact_eps, linear_q, s, key, config)
  assert float(at_mean["behaviour_distance"]) < 0.7 < 8 < float(far["behaviour_distance"])
  assert float(at_mean["at_bounds"]) == 0.0 and float(bounds["at_bounds"]) == 1.0
  assert float(at_mean["q_pull"]) == pytest.approx(0.02 * GRAD, rel=1e-5)


def test_behaviour_scale_reads_the_spread_and_the_gradient_of_q():
  scale = drift.behaviour_scale(lambda a_t, t, s: exact_eps(a_t, t, s), linear_q, states(256), ACTION_DIM,
                                jax.random.PRNGKey(3))
  assert float(scale["sigma"]) == pytest.approx(SIGMA, rel=0.1)
  assert float(scale["grad_q"]) == pytest.approx(GRAD, rel=1e-5)


@pytest.mark.parametrize("distance", [0.5, 2.0])
def test_a_policy_trained_at_the_rules_beta_settles_that_many_spreads_from_the_mean(distance):
  beta = drift.beta_for_distance(SIGMA, GRAD, policy_config(), distance)
  assert drift.predicted_distance(beta, SIGMA, GRAD, policy_config()) == pytest.approx(distance)
  config = policy_config(beta=beta, hidden=32, num_steps=3000, lr=3e-3, batch_size=256, baseline=True)
  state = policy.PolicyStageState(policy=policy.init_policy(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, config))
  step = jax.jit(policy.make_policy_step(lambda p, a_t, t, s: exact_eps(a_t, t, s), lambda p, s, a: linear_q(s, a),
                                         config))
  data = states(2048)
  run = jax.jit(lambda st, keys: jax.lax.scan(lambda c, k: (step(c, data, k)[0], None), st, keys)[0])
  state = run(state, jax.random.split(jax.random.PRNGKey(4), config.num_steps))
  s = states(256)
  offset = np.asarray(state.policy.apply_fn(state.policy.params, s) - mean_action(s))
  # every coordinate sits `distance` spreads (sigma) above the mean, where beta * grad Q meets the pull
  assert np.mean(offset) / SIGMA == pytest.approx(distance, rel=0.1)
