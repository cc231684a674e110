"""SRPO against known answers.

The behaviour is an analytic Gaussian mixture whose eps is exact at every t (p_t = sum_k pi_k N(alpha mu_k,
(alpha^2 s_k^2 + sigma^2) I), eps = -sigma grad log p_t), and Q(a) = -||a - a_target||^2. For a Dirac policy the
SRPO loss follows the gradient of the scalar objective

  F(a) = E_{t, z}[ w(t) sigma_t / alpha_t * (-log p_t(alpha_t a + sigma_t z)) ] - beta Q(a),

because d/da -log p_t(alpha a + sigma z) = alpha eps(a_t) / sigma (and E[w z] = 0, so the baseline does not change
it). The oracle minimises F by brute force on a grid, with t on a midpoint grid and z by Gauss-Hermite quadrature
(float64 numpy, independent of the library code).
"""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import srpo_jax
from common.data import OfflineData
from common.diffusion import VPContinuous
from common.networks import param_count
from srpo_jax import behavior, configs, policy

SCHEDULE = VPContinuous()


def gmm_eps(weights, means, stds):
  """Exact eps(x, t) of the VP-noised isotropic Gaussian mixture. weights [K], means [K, A], stds [K]."""
  weights, means, stds = (jnp.asarray(x, jnp.float32) for x in (weights, means, stds))

  def eps(x, t, s=None):
    alpha, sigma = SCHEDULE.alpha_sigma(jnp.asarray(t, jnp.float32))
    expand = lambda v: jnp.reshape(v, jnp.shape(v) + (1,) * (x.ndim - jnp.ndim(v)))[..., None]
    alpha, sigma = expand(alpha), expand(sigma)  # [..., 1, 1]
    var = alpha**2 * stds[:, None] ** 2 + sigma**2  # [..., K, 1]
    d = x[..., None, :] - alpha * means  # [..., K, A]
    logits = jnp.log(weights)[:, None] - 0.5 * jnp.sum(d**2, -1, keepdims=True) / var - 0.5 * x.shape[-1] * jnp.log(var)
    resp = jax.nn.softmax(logits, axis=-2)
    return sigma[..., 0, :] * jnp.sum(resp * d / var, axis=-2)

  return eps


def np_alpha_sigma(t):
  log_alpha = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1
  return np.exp(log_alpha), np.sqrt(-np.expm1(2 * log_alpha))


def oracle_1d(weights, means, stds, target, beta, weighting="sigma2", fixed_t=None, n_t=400, n_gh=80):
  """argmin over a grid of F(a) (module docstring) for a 1-D action and Q(a) = -(a - target)^2."""
  weights, stds = np.asarray(weights, np.float64), np.asarray(stds, np.float64)
  means = np.asarray(means, np.float64)[:, 0]
  grid = np.linspace(-0.99, 0.99, 397)
  t = np.array([fixed_t]) if fixed_t is not None else 0.02 + 0.96 * (np.arange(n_t) + 0.5) / n_t
  alpha, sigma = np_alpha_sigma(t)
  z, wz = np.polynomial.hermite_e.hermegauss(n_gh)
  wz = wz / wz.sum()
  w = {"sigma2": sigma**2, "one": np.ones_like(t), "alpha_over_sigma": alpha / sigma}[weighting]
  x = alpha[:, None, None] * grid[None, :, None] + sigma[:, None, None] * z[None, None, :]  # [T, G, Z]
  var = (alpha[:, None] ** 2 * stds[None] ** 2 + sigma[:, None] ** 2)[:, None, None]  # [T, 1, 1, K]
  mu = (alpha[:, None] * means[None])[:, None, None]
  log_comp = np.log(weights) - 0.5 * (x[..., None] - mu) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
  top = log_comp.max(-1)
  log_p = top + np.log(np.exp(log_comp - top[..., None]).sum(-1))  # [T, G, Z]
  reg = np.einsum("tgz,z->tg", -log_p, wz) * (w * sigma / alpha)[:, None]
  objective = reg.mean(0) + beta * (grid - target) ** 2
  return grid[np.argmin(objective)]


def policy_config(**overrides):
  c = ml_collections.ConfigDict(dict(
      hidden=64, num_layers=2, lr=1e-3, lr_schedule="cosine", num_steps=3000, batch_size=256, beta=1.0,
      weighting="sigma2", baseline=True, t_sampling="uniform", t_min=0.02, t_max=0.98, fixed_t=0.5,
      normalize_q_grad=False))
  c.update(overrides)
  return c


def quadratic_q(target):
  target = jnp.asarray(target, jnp.float32)
  return lambda s, a: -jnp.sum((a - target) ** 2, axis=-1)


def extracted_action(eps_fn, q_fn, obs, cfg, action_dim=1, seed=0):
  pol = srpo_jax.extract_policy(eps_fn, q_fn, obs, cfg, jax.random.PRNGKey(seed), action_dim=action_dim)
  return np.asarray(srpo_jax.act(pol, obs))


BIMODAL = dict(weights=[0.3, 0.7], means=[[-0.6], [0.5]], stds=[0.1, 0.1])
BANDIT_OBS = jnp.ones((64, 1))


@pytest.mark.parametrize("target,beta,weighting,baseline,fixed_t", [
    (0.9, 1.0, "sigma2", False, None),  # the released code's default loss
    (0.9, 0.05, "sigma2", True, None),
    (-0.2, 1.0, "one", True, None),
    (0.9, 0.2, "sigma2", True, 0.3),
])
def test_bandit_action_matches_grid_optimum(target, beta, weighting, baseline, fixed_t):
  cfg = policy_config(beta=beta, weighting=weighting, baseline=baseline,
                      t_sampling="fixed" if fixed_t is not None else "uniform", fixed_t=fixed_t or 0.5)
  a = extracted_action(gmm_eps(**BIMODAL), quadratic_q([target]), BANDIT_OBS, cfg)
  expected = oracle_1d(**BIMODAL, target=target, beta=beta, weighting=weighting, fixed_t=fixed_t)
  np.testing.assert_allclose(a, expected, atol=0.05)
  assert np.ptp(a) < 1e-5  # one state, one action


def test_weak_regularisation_approaches_argmax_q():
  a = extracted_action(gmm_eps(**BIMODAL), quadratic_q([0.9]), BANDIT_OBS, policy_config(beta=100.0))
  np.testing.assert_allclose(a, 0.9, atol=0.02)


def test_strong_regularisation_goes_to_a_behaviour_mode():
  # Unimodal behaviour: the mode, whatever Q says.
  unimodal = dict(weights=[1.0], means=[[0.4]], stds=[0.1])
  a = extracted_action(gmm_eps(**unimodal), quadratic_q([-0.9]), BANDIT_OBS, policy_config(beta=1e-3))
  np.testing.assert_allclose(a, 0.4, atol=0.05)
  # Bimodal with the small-t-heavy weighting alpha/sigma: next to the heavier mode (0.5), even though Q prefers the
  # other one; the large-t terms of the ensemble pull it slightly towards the mixture mean (the oracle agrees).
  cfg = policy_config(beta=1e-3, weighting="alpha_over_sigma")
  a = extracted_action(gmm_eps(**BIMODAL), quadratic_q([-0.9]), BANDIT_OBS, cfg)
  np.testing.assert_allclose(a, 0.5, atol=0.08)
  np.testing.assert_allclose(a, oracle_1d(**BIMODAL, target=-0.9, beta=1e-3, weighting="alpha_over_sigma"),
                             atol=0.05)


def test_two_states_get_their_own_actions():
  mix = [BIMODAL, dict(weights=[0.5, 0.5], means=[[-0.7], [0.1]], stds=[0.15, 0.1])]
  targets = [0.9, -0.9]
  eps = [gmm_eps(**m) for m in mix]

  def eps_fn(a_t, t, s):
    return jnp.where(s > 0, eps[1](a_t, t), eps[0](a_t, t))

  def q_fn(s, a):
    target = jnp.where(s > 0, targets[1], targets[0])
    return -jnp.sum((a - target) ** 2, axis=-1)

  obs = jnp.concatenate([-jnp.ones((32, 1)), jnp.ones((32, 1))])
  a = extracted_action(eps_fn, q_fn, obs, policy_config(beta=0.5, num_steps=4000))
  for i, sl in enumerate([slice(0, 32), slice(32, 64)]):
    np.testing.assert_allclose(a[sl], oracle_1d(**mix[i], target=targets[i], beta=0.5), atol=0.05)
  assert abs(a[0, 0] - a[-1, 0]) > 0.3


def test_2d_gaussian_closed_form():
  # One Gaussian N(m, s^2 I): E_z w eps(a_t) = w sigma alpha (a - m) / v_t, so the optimum is
  # a = (c m + 2 beta a*) / (c + 2 beta) with c = E_t[w sigma alpha / v_t].
  m, s, target, beta = np.array([0.3, -0.4]), 0.2, np.array([-0.5, 0.6]), 0.3
  t = 0.02 + 0.96 * (np.arange(20000) + 0.5) / 20000
  alpha, sigma = np_alpha_sigma(t)
  c = np.mean(sigma**2 * sigma * alpha / (alpha**2 * s**2 + sigma**2))
  expected = (c * m + 2 * beta * target) / (c + 2 * beta)
  a = extracted_action(gmm_eps([1.0], [m], [s]), quadratic_q(target), jnp.ones((16, 3)), policy_config(beta=beta),
                       action_dim=2)
  np.testing.assert_allclose(a, np.broadcast_to(expected, a.shape), atol=0.03)


def test_baseline_keeps_the_expected_direction_and_lowers_its_variance():
  # The validate preset turns the "- eps" baseline on for its short policy stage on this claim: per-sample
  # directions w(t) (eps(a_t) - [z]) at one action, over many (t, z) draws, have the same mean (E[w z] = 0) and,
  # with a behaviour model whose eps is close to z (a wide unimodal behaviour), a far smaller variance.
  n = 200_000
  t_key, z_key = jax.random.split(jax.random.PRNGKey(7))
  t = jax.random.uniform(t_key, (n,), minval=0.02, maxval=0.98)
  z = jax.random.normal(z_key, (n, 2))
  alpha, sigma = SCHEDULE.alpha_sigma(t)
  a = jnp.array([0.3, -0.2])
  eps = gmm_eps([1.0], [[0.0, 0.1]], [0.5])(alpha[:, None] * a + sigma[:, None] * z, t)
  plain, with_baseline = sigma[:, None] ** 2 * eps, sigma[:, None] ** 2 * (eps - z)
  stderr = float(jnp.max(jnp.std(plain, axis=0))) / np.sqrt(n)
  np.testing.assert_allclose(jnp.mean(plain, axis=0), jnp.mean(with_baseline, axis=0), atol=5 * stderr)
  assert float(jnp.max(jnp.var(with_baseline, axis=0) / jnp.var(plain, axis=0))) < 0.2


class PolicyUpdateTest(chex.TestCase):
  """The SRPO loss gradient, Q gradient and one policy step, run jitted and eagerly (chex variants)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_loss_gradient_is_the_srpo_direction(self):
    # With a "policy" that outputs its parameters, d loss / d a = mean(w(t) (eps(a_t) - z) - beta grad Q).
    eps_fn = gmm_eps(**BIMODAL)
    q_fn = quadratic_q([0.7])
    cfg = policy_config(beta=0.3, baseline=True)
    obs = jnp.ones((512, 1))
    a0 = jnp.array([0.2])
    key = jax.random.PRNGKey(3)
    apply = lambda p, s: jnp.broadcast_to(p, (s.shape[0], 1))
    grad = self.variant(jax.grad(lambda p, k: policy.srpo_loss(p, apply, eps_fn, q_fn, obs, k, cfg)[0]))(a0, key)
    t_key, z_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (512,), minval=0.02, maxval=0.98)
    z = jax.random.normal(z_key, (512, 1))
    alpha, sigma = SCHEDULE.alpha_sigma(t)
    a_t = alpha[:, None] * a0 + sigma[:, None] * z
    manual = jnp.mean(sigma[:, None] ** 2 * (eps_fn(a_t, t) - z) - 0.3 * 2 * (0.7 - a0), axis=0)
    np.testing.assert_allclose(grad, manual, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_normalized_q_grad_has_unit_rms(self):
    s = jnp.ones((5, 2))
    a = jax.random.uniform(jax.random.PRNGKey(0), (5, 3), minval=-1, maxval=1)
    q_fn = quadratic_q([0.5, -0.2, 0.1])
    g = self.variant(lambda s, a: policy.q_grad(q_fn, s, a, normalize=True))(s, a)
    np.testing.assert_allclose(jnp.sqrt(jnp.mean(g**2, -1)), 1.0, rtol=1e-5)
    raw = self.variant(lambda s, a: policy.q_grad(q_fn, s, a))(s, a)
    np.testing.assert_allclose(raw, 2 * (jnp.array([0.5, -0.2, 0.1]) - a), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_one_policy_step_is_adam_along_the_srpo_direction(self):
    # Oracle: the parameter gradient is the policy's VJP of the per-sample direction
    # (w(t) (eps(a_t) - z) - beta grad Q) / B on the step's own batch, t and z (drawn as make_policy_step draws them),
    # and the first Adam step moves each parameter by -lr g / (|g| + eps) (cosine schedule at step 0: lr).
    cfg = policy_config(beta=0.3, baseline=True, batch_size=16, lr=1e-3)
    eps_fn, q_fn = gmm_eps(**BIMODAL), quadratic_q([0.7])
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(40, 2)), jnp.float32)
    state = policy.PolicyStageState(policy=policy.init_policy(jax.random.PRNGKey(0), 2, 1, cfg))
    step = policy.make_policy_step(lambda _, a, t, s: eps_fn(a, t), lambda _, s, a: q_fn(s, a), cfg)
    key = jax.random.PRNGKey(4)
    new, metrics = self.variant(step)(state, obs, key)

    idx_key, loss_key = jax.random.split(key)
    s = obs[jax.random.randint(idx_key, (16,), 0, 40)]
    t_key, z_key = jax.random.split(loss_key)
    t = jax.random.uniform(t_key, (16,), minval=0.02, maxval=0.98)
    a, vjp = jax.vjp(lambda p: state.policy.apply_fn(p, s), state.policy.params)
    z = jax.random.normal(z_key, a.shape)
    alpha, sigma = SCHEDULE.alpha_sigma(t)
    direction = sigma[:, None] ** 2 * (eps_fn(alpha[:, None] * a + sigma[:, None] * z, t) - z) - 0.3 * 2 * (0.7 - a)
    (grads,) = vjp(direction / 16)
    expected = jax.tree.map(lambda p, g: p - 1e-3 * g / (jnp.abs(g) + 1e-8), state.policy.params, grads)
    chex.assert_trees_all_close(new.policy.params, expected, atol=1e-6)
    assert int(new.policy.step) == 1
    chex.assert_tree_all_finite(metrics)


def test_nan_q_gradients_or_behaviour_eps_raise_clear_errors_that_blame_the_right_model():
  nan_q = lambda s, a: jnp.sum(a, -1) * jnp.nan
  with pytest.raises(srpo_jax.NonFiniteQGradError, match="NaN"):
    srpo_jax.extract_policy(gmm_eps(**BIMODAL), nan_q, BANDIT_OBS, policy_config(num_steps=5),
                            jax.random.PRNGKey(0), action_dim=1)
  nan_eps = lambda a_t, t, s: a_t * jnp.nan
  with pytest.raises(policy.NonFiniteBehaviorError, match="behaviour model is broken.*critic is not at fault"):
    srpo_jax.extract_policy(nan_eps, quadratic_q([0.5]), BANDIT_OBS, policy_config(num_steps=5),
                            jax.random.PRNGKey(0), action_dim=1)


def small_behavior_config(**overrides):
  c = configs.get_config("smoke").behavior
  c.update(dict(lr=1e-3, batch_size=128), **overrides)
  return c


def test_behavior_action_dim_mismatch_raises():
  cfg = small_behavior_config()
  state = behavior.init_behavior(jax.random.PRNGKey(0), 4, 3, cfg)
  eps_fn = behavior.behavior_eps_fn(state.params, apply_fn=state.apply_fn)
  with pytest.raises(ValueError, match="action dim 2"):
    srpo_jax.extract_policy(eps_fn, quadratic_q([0.0, 0.0]), jnp.ones((8, 4)), policy_config(num_steps=5),
                            jax.random.PRNGKey(0), action_dim=2)
  assert behavior.behavior_action_dim(state.params) == 3


def test_behavior_net_is_the_paper_size():
  cfg = configs.get_config("paper").behavior
  state = behavior.init_behavior(jax.random.PRNGKey(0), 11, 3, cfg)
  assert param_count(state.params) == 1_640_483


def test_behavior_training_reduces_loss():
  rng = np.random.default_rng(0)
  n = 256
  obs = rng.normal(size=(n, 2)).astype(np.float32)
  actions = np.tanh(obs[:, :1] + 0.05 * rng.normal(size=(n, 1))).astype(np.float32)
  cfg = small_behavior_config(num_steps=300)
  key = jax.random.PRNGKey(0)
  eval_loss = jax.jit(lambda p, apply_fn: behavior.behavior_loss(
      p, apply_fn, jnp.asarray(np.repeat(obs, 8, 0)), jnp.asarray(np.repeat(actions, 8, 0)),
      jax.random.PRNGKey(7), train=False), static_argnums=1)
  init = behavior.init_behavior(jax.random.split(key)[0], 2, 1, cfg)  # fit_behavior's own initial state
  trained = srpo_jax.fit_behavior(obs, actions, cfg, key, steps_per_call=100)
  before, after = float(eval_loss(init.params, init.apply_fn)), float(eval_loss(trained.params, trained.apply_fn))
  assert after < 0.8 * before, (before, after)
  assert int(trained.step) == 300
  # The frozen Fourier features did not move (AdamW weight decay included).
  chex.assert_trees_all_equal(init.params["params"]["GaussianFourierTime_0"],
                              trained.params["params"]["GaussianFourierTime_0"])


def test_sample_behavior_recovers_analytic_modes():
  eps_fn = gmm_eps(**BIMODAL)
  obs = jnp.zeros((4000, 1))
  x = np.asarray(behavior.sample_behavior(lambda a, t, s: eps_fn(a, t), obs, 1, jax.random.PRNGKey(0),
                                          num_steps=30))
  assert x.shape == (4000, 1) and np.all(np.abs(x) <= 1.0)
  frac_right = np.mean(x[:, 0] > 0)
  assert abs(frac_right - 0.7) < 0.03
  np.testing.assert_allclose(np.mean(x[x[:, 0] > 0]), 0.5, atol=0.02)


def test_policy_inference_shape_and_single_compile():
  pol = srpo_jax.Policy(params=policy.init_policy(jax.random.PRNGKey(0), 5, 3, policy_config()).params,
                        action_dim=3, hidden=64, num_layers=2)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(p, obs):
    return srpo_jax.act(p, obs)

  for i in range(3):
    out = run(pol, jnp.full((7, 5), float(i)))
  assert out.shape == (7, 3) and np.all(np.abs(np.asarray(out)) < 1)
  stacked = pol.replace(params=jax.tree.map(lambda x: jnp.stack([x, x + 0.1]), pol.params), stacked=True)
  out = srpo_jax.act(stacked, jnp.ones((7, 5)))
  assert out.shape == (2, 7, 3)
  np.testing.assert_allclose(out[0], srpo_jax.act(pol, jnp.ones((7, 5))), rtol=1e-6)
  np.testing.assert_allclose(out[1], srpo_jax.act(stacked.seed(1), jnp.ones((7, 5))), rtol=1e-6)


def test_configs():
  paper = configs.get_config("paper")
  assert (paper.critic.num_steps, paper.behavior.num_steps, paper.policy.num_steps) == (1_500_000, 2_000_000,
                                                                                         1_000_000)
  assert (paper.behavior.batch_size, paper.policy.batch_size, paper.critic.batch_size) == (2048, 256, 256)
  assert paper.behavior.weight_decay == 0.01 and paper.policy.weighting == "sigma2" and not paper.policy.baseline
  hop = configs.get_config("hopper-medium-replay-v2:paper")
  assert (hop.policy.beta, hop.critic.expectile, hop.policy.num_layers, hop.policy.normalize_q_grad) == (
      0.2, 0.7, 2, False)
  ant = configs.get_config("antmaze-large-play-v2")
  assert (ant.policy.beta, ant.critic.expectile, ant.policy.num_layers, ant.policy.normalize_q_grad) == (
      0.06, 0.9, 4, True)
  assert ant.reward_kind == "antmaze"
  assert configs.get_config("antmaze-medium-diverse-v0").policy.beta == 0.05
  short = configs.get_config("recipes/hopper/medium-v0:validate")  # baseline on, the paper's per-dataset beta kept
  assert short.policy.baseline and short.policy.beta == 0.05 and short.policy.num_steps == 20_000
  smoke = configs.get_config("walker2d-medium-expert-v2:smoke")
  assert smoke.policy.beta == 0.1 and smoke.policy.num_steps < 100
  other = configs.get_config("builtin/reacher/noisy-v0:demo")  # not in the paper's table: defaults
  assert (other.dataset, other.policy.beta, other.reward_kind, other.policy.num_layers) == (
      "builtin/reacher/noisy-v0", 0.05, "none", 2)
  with pytest.raises(ValueError, match="unknown SRPO preset"):
    configs.get_config("hopper-medium-v2:huge")


def test_train_end_to_end_smoke_and_resume(tmp_path):
  rng = np.random.default_rng(0)
  n = 200
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  data = OfflineData(observations=f(n, 3), actions=jnp.tanh(f(n, 2)), rewards=f(n), next_observations=f(n, 3),
                     masks=jnp.ones(n))
  cfg = configs.get_config("hopper-medium-v2:smoke")
  cfg.seeds = (0, 1)
  result = srpo_jax.train(cfg, data, workdir=str(tmp_path))
  out = srpo_jax.act(result.policy, data.observations[:5])
  assert out.shape == (2, 5, 2) and np.all(np.isfinite(np.asarray(out)))
  assert int(result.behavior.step[0]) == cfg.behavior.num_steps
  assert int(result.policy.seed(0).params["params"]["MLP_0"]["Dense_0"]["kernel"].shape[0]) == 3
  per_seed = srpo_jax.seed_act(result.policy, jnp.stack([data.observations[:5], data.observations[5:10]]))
  np.testing.assert_allclose(per_seed[1], srpo_jax.act(result.policy.seed(1), data.observations[5:10]), atol=1e-6)
  # A second call finds every stage finished in the workdir and returns the same policy without training.
  again = srpo_jax.train(cfg, data, workdir=str(tmp_path))
  chex.assert_trees_all_close(again.policy.params, result.policy.params)


def test_policy_step_compiles_once_across_chunks():
  cfg = policy_config(num_steps=15, batch_size=32)
  eps_fn, q_fn = gmm_eps(**BIMODAL), quadratic_q([0.3])
  step = chex.assert_max_traces(policy.make_policy_step(lambda _, a, t, s: eps_fn(a, t), lambda _, s, a: q_fn(s, a),
                                                        cfg), n=1)
  state = jax.vmap(lambda k: policy.PolicyStageState(policy=policy.init_policy(k, 1, 1, cfg)))(
      jax.random.split(jax.random.PRNGKey(0), 2))
  state, history = policy.run_policy_stage(step, state, BANDIT_OBS, jax.random.split(jax.random.PRNGKey(1), 2), cfg,
                                           steps_per_call=5)
  assert len(history) == 3 and int(state.policy.step[0]) == 15
  assert np.asarray(history[-1]["metrics"]["policy_loss"]).shape == (2,)
