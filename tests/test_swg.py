"""SWG against known answers: weight functions vs numpy, guided eps vs a finite-difference gradient, rho = 0 vs the
plain sampler, the network's shape, bad input, and guided samples vs the exact weighted target on a 2-D toy."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl.testing import parameterized

import swg_jax
from common import iql
from common.data import OfflineData
from common.networks import param_count
from common.solvers import ddpm_sample, dpm_solver_pp
from common.data.toys import energy_distance, sample_toy, target_samples, toy_weights
from swg_jax import model as model_lib, sampling, weights as weights_lib


def tiny_diffusion_config(**overrides):
  c = swg_jax.get_config("smoke").diffusion
  c.update(hidden=32, num_blocks=2, dropout_rate=0.0, time_embed_dim=8, time_features=(32, 32))
  c.update(overrides)
  return c


def untrained_model(obs_dim=3, action_dim=2, seed=0, critic=None, **overrides):
  config = swg_jax.get_config("smoke")
  config.diffusion = tiny_diffusion_config(**overrides)
  state = model_lib.init_diffusion(jax.random.PRNGKey(seed), obs_dim, action_dim, config.diffusion)
  return swg_jax.SWGModel(params=state.params, critic=critic, net=model_lib.make_network(action_dim, config.diffusion),
                          schedule=model_lib.make_schedule(config.diffusion), obs_dim=obs_dim, action_dim=action_dim,
                          sampling_defaults=tuple(sorted(config.sampling.to_dict().items())))


# ---------------------------------------------------------------------------------------------------------------
# Weights


def numpy_weights(adv, kind, tau=0.7, k=3.0):
  adv = np.asarray(adv, np.float64)
  if kind == "expectile":
    return np.array([tau if a > 0 else 1 - tau for a in adv])
  if kind == "exp_advantage":
    return np.minimum(np.maximum(np.exp(k * adv), 1e-3), 80.0)
  if kind == "hard_advantage":
    return (adv >= -0.01).astype(np.float64)
  s = 1 / (1 + np.exp(-k * adv))
  return s * tau + (1 - s) * (1 - tau)


class WeightFunctionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*weights_lib.WEIGHT_KINDS)
  def test_weight_functions_match_numpy(self, kind):
    adv = np.concatenate([np.linspace(-3, 3, 41), [0.0, -0.01, -0.0099, -0.0101, 5.0, -5.0]]).astype(np.float32)
    got = self.variant(lambda a: weights_lib.weights_from_advantage(a, kind, expectile=0.8))(jnp.asarray(adv))
    np.testing.assert_allclose(got, numpy_weights(adv, kind, tau=0.8), rtol=1e-5, atol=1e-6)


def test_dataset_weights_in_chunks_equal_direct_advantage():
  cfg = ml_collections.ConfigDict(dict(hidden=(16, 16), value_layer_norm=True, lr=3e-4))
  critic = iql.init_critic(jax.random.PRNGKey(0), 4, 2, cfg)
  rng = np.random.default_rng(0)
  obs, act = rng.normal(size=(37, 4)).astype(np.float32), rng.uniform(-1, 1, (37, 2)).astype(np.float32)
  direct = np.asarray(iql.advantage(critic, jnp.asarray(obs), jnp.asarray(act)))
  wcfg = swg_jax.get_config("paper").weights
  wcfg.chunk_size = 16  # 3 chunks, the last one padded
  w, adv = weights_lib.compute_weights(critic, obs, act, wcfg)
  np.testing.assert_allclose(adv, direct, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(w, numpy_weights(direct, "expectile"), atol=1e-6)


def test_seed_stacked_weights_equal_each_seed_alone():
  cfg = ml_collections.ConfigDict(dict(hidden=(16, 16), value_layer_norm=True, lr=3e-4))
  per_seed = [iql.init_critic(jax.random.PRNGKey(i), 4, 2, cfg) for i in range(3)]
  stacked = [jnp.stack(leaves) for leaves in zip(*map(jax.tree.leaves, per_seed))]  # each init has its own apply_fn
  critics = jax.tree.unflatten(jax.tree.structure(per_seed[0]), stacked)
  rng = np.random.default_rng(1)
  obs, act = rng.normal(size=(37, 4)).astype(np.float32), rng.uniform(-1, 1, (37, 2)).astype(np.float32)
  wcfg = swg_jax.get_config("paper").weights
  wcfg.update(kind="exp_advantage", chunk_size=16)  # a continuous weight, so every seed's differs
  w, adv = weights_lib.compute_weights(critics, obs, act, wcfg, seed_axis=True)
  assert w.shape == adv.shape == (3, 37)
  for i in range(3):
    w_i, adv_i = weights_lib.compute_weights(per_seed[i], obs, act, wcfg)
    np.testing.assert_allclose(adv[i], adv_i, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w[i], w_i, rtol=1e-5, atol=1e-6)
  assert np.max(np.abs(adv[0] - adv[1])) > 1e-3  # the seeds' critics really differ
  empty_w, empty_adv = weights_lib.compute_weights(critics, obs[:0], act[:0], wcfg, seed_axis=True)
  assert empty_w.shape == empty_adv.shape == (3, 0)


# ---------------------------------------------------------------------------------------------------------------
# Network


def test_joint_network_size_and_weight_head_reads_block_2():
  cfg = swg_jax.get_config("paper").diffusion
  state = model_lib.init_diffusion(jax.random.PRNGKey(0), 11, 3, cfg)
  assert param_count(state.params) == 1_813_572
  net = model_lib.make_network(3, cfg)
  rng = np.random.default_rng(0)
  z, s = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32), jnp.asarray(rng.normal(size=(8, 11)), jnp.float32)
  t = jnp.arange(8, dtype=jnp.float32)
  out = net.apply(state.params, z, t, s)
  assert out.shape == (8, 4)

  def perturbed(module):
    p = jax.tree.map(lambda x: x, state.params)
    p["params"][module] = jax.tree.map(lambda x: x + 0.5, p["params"][module])
    return net.apply(p, z, t, s)

  after_block3 = perturbed("LNResNetBlock_2")
  np.testing.assert_array_equal(after_block3[:, -1], out[:, -1])  # w head untouched by block 3
  assert np.max(np.abs(after_block3[:, :-1] - out[:, :-1])) > 1e-3  # the action eps does read block 3
  assert np.max(np.abs(perturbed("LNResNetBlock_1")[:, -1] - out[:, -1])) > 1e-3  # the w head reads block 2


class DiffusionStepTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_train_step_ema_and_loss(self):
    cfg = tiny_diffusion_config(batch_size=16, ema=0.001)
    state = model_lib.init_diffusion(jax.random.PRNGKey(0), 3, 2, cfg)
    rng = np.random.default_rng(0)
    data = model_lib.WeightedData(jnp.asarray(rng.normal(size=(50, 3)), jnp.float32),
                                  jnp.asarray(rng.uniform(-1, 1, (50, 2)), jnp.float32),
                                  jnp.asarray(rng.uniform(size=50), jnp.float32))
    step = model_lib.make_diffusion_step(2, cfg)
    if self.variant.type == chex.ChexVariantType.WITH_JIT:
      step = chex.assert_max_traces(step, n=1)
    step = self.variant(step)
    new, metrics = step(state, data, jax.random.PRNGKey(1))
    step(new, data, jax.random.PRNGKey(2))  # jitted, it compiles once
    expected_ema = jax.tree.map(lambda p, e: 0.001 * p + 0.999 * e, new.params, state.ema_params)
    chex.assert_trees_all_close(new.ema_params, expected_ema, rtol=1e-6, atol=1e-7)
    assert int(new.step) == 1 and np.isfinite(float(metrics["loss"]))
    # The loss is the eps loss summed over A + 1 = 3 dims: near 3 at init for a network that outputs ~0.
    assert 0.5 < float(metrics["loss"]) < 20


# ---------------------------------------------------------------------------------------------------------------
# Guidance


class GuidedEpsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_guided_eps_equals_finite_difference_gradient(self):
    model = untrained_model(obs_dim=3, action_dim=2)
    schedule = model.schedule
    rng = np.random.default_rng(0)
    b = 6
    obs = jnp.asarray(rng.normal(size=(b, 3)), jnp.float32)
    eps_fn = model.eps_fn(obs)
    rho = 2.5
    guided = self.variant(sampling.guided_eps_fn(eps_fn, schedule, rho, w_min=1e-8, w_max=1e8))
    checked = 0
    for i in (0, 4, 9, 14):
      alpha, sigma = (float(v) for v in schedule.index_alpha_sigma(i))  # discrete view, independent of the wrapper
      z = np.concatenate([rng.uniform(-1, 1, (b, 2)), rng.uniform(0.5, 1.0, (b, 1))], axis=1).astype(np.float32)
      t = jnp.float32(i)

      def log_w0(zz):  # numpy-side oracle of log w0hat for every row
        e = np.asarray(eps_fn(jnp.asarray(zz, jnp.float32), t), np.float64)
        return np.log((zz[:, -1] - sigma * e[:, -1]) / alpha)

      base = log_w0(z.astype(np.float64))
      h = 1e-2
      grad = np.zeros_like(z, np.float64)
      for d in range(3):
        dz = np.zeros_like(z, np.float64)
        dz[:, d] = h
        grad[:, d] = (log_w0(z + dz) - log_w0(z - dz)) / (2 * h)  # rows are independent: one pass per dim
      expected = np.asarray(eps_fn(jnp.asarray(z), t), np.float64) - rho * sigma * grad
      got = np.asarray(guided(jnp.asarray(z), t))
      ok = np.isfinite(base)
      checked += ok.sum()
      np.testing.assert_allclose(got[ok], expected[ok], rtol=2e-2, atol=2e-3)
      # And the guidance actually moves eps (the test is not vacuous).
      assert np.max(np.abs(got[ok] - np.asarray(eps_fn(jnp.asarray(z), t))[ok])) > 1e-3
    assert checked >= 12

  @chex.variants(with_jit=True, without_jit=True)
  def test_guided_eps_clips_w0_and_zeroes_nan_gradients(self):
    schedule = model_lib.make_schedule(tiny_diffusion_config())
    eps_fn = lambda x, t: 0.0 * jnp.sqrt(jnp.abs(x))  # eps = 0, but d/dx is 0 * inf = NaN at x = 0
    z = jnp.asarray([[0.0, 0.5], [0.3, 0.5], [0.3, 2.0]], jnp.float32)
    out = np.asarray(self.variant(sampling.guided_eps_fn(eps_fn, schedule, 1.0))(z, jnp.float32(3.0)))
    assert np.all(np.isfinite(out))
    _, sigma = schedule.index_alpha_sigma(3)
    np.testing.assert_allclose(out[0], [0.0, -float(sigma) / 0.5], rtol=1e-5)  # the NaN d/da -> 0, d/dw kept
    # d log(w_t / alpha) / d w_t = 1 / w_t
    np.testing.assert_allclose(out[1], [0.0, -float(sigma) / 0.5], rtol=1e-5)
    np.testing.assert_array_equal(out[2], 0.0)  # w0hat = 2 / alpha > 1 is clipped: no gradient


def test_split_heads_give_the_same_guided_eps_without_a_backward_pass_through_block_3():
  hidden, b = 32, 8
  model = untrained_model(seed=1, hidden=hidden, num_blocks=3, weight_head_block=2)
  rng = np.random.default_rng(0)
  obs = jnp.asarray(rng.normal(size=(b, 3)), jnp.float32)
  z = jnp.asarray(np.concatenate([rng.uniform(-1, 1, (b, 2)), rng.uniform(0.2, 0.8, (b, 1))], 1), jnp.float32)
  guided = lambda **kw: sampling.guided_eps_fn(model.eps_fn(obs), model.schedule, 2.0, **kw)
  lower_and_compile = lambda fn: jax.jit(fn).lower(z, jnp.float32(0.0)).compile()
  joint, split = lower_and_compile(guided()), lower_and_compile(guided(heads_fn=model.heads_fn(obs)))
  for t in (0.0, 7.0, 14.0):
    np.testing.assert_allclose(split(z, jnp.float32(t)), joint(z, jnp.float32(t)), rtol=1e-5, atol=1e-6)

  def flops(compiled):
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])

  # Block 3's two dense layers, [B, h] -> [B, 4h] -> [B, h], are no longer transposed in the backward pass.
  assert flops(joint) - flops(split) >= 2 * (2 * b * hidden * 4 * hidden)


def test_rho_zero_is_the_plain_sampler():
  model = untrained_model()
  eps_fn = model.eps_fn(jnp.zeros((4, 3)))
  assert sampling.guided_eps_fn(eps_fn, model.schedule, 0) is eps_fn
  assert sampling.guided_eps_fn(eps_fn, model.schedule, 0.0) is eps_fn
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(4, 3)).astype(np.float32)
  key = jax.random.PRNGKey(3)
  plain_eps = model.eps_fn(jnp.asarray(obs))
  # Deterministic DDPM from z_T = 0.
  a, w = swg_jax.sample(model, obs, key, guidance_scale=0, temperature=0)
  ref = ddpm_sample(plain_eps, model.schedule, jnp.zeros((4, 3)), None, temperature=0, clip_fn=sampling.clip_z)
  np.testing.assert_array_equal(np.concatenate([a, w[:, None]], 1), ref)
  # Stochastic DDPM and DPM-Solver++, same keys.
  init_key, noise_key = jax.random.split(key)
  z_T = 0.7 * jax.random.normal(init_key, (4, 3))
  a, w = swg_jax.sample(model, obs, key, guidance_scale=0.0, temperature=0.7)
  ref = ddpm_sample(plain_eps, model.schedule, z_T, noise_key, temperature=0.7, clip_fn=sampling.clip_z)
  np.testing.assert_allclose(np.concatenate([a, w[:, None]], 1), ref, rtol=1e-6, atol=1e-6)
  a, w = swg_jax.sample(model, obs, key, guidance_scale=0, temperature=0.7, sampler="dpm", num_steps=5)
  ref = dpm_solver_pp(plain_eps, model.schedule, z_T, num_steps=5, order=2, x0_clip_fn=sampling.clip_z,
                      denoise_to_zero=True)
  np.testing.assert_allclose(np.concatenate([a, w[:, None]], 1), ref, rtol=1e-6, atol=1e-6)
  # Guidance changes the result (rho > 0 is not silently ignored).
  a1, _ = swg_jax.sample(model, obs, key, guidance_scale=5.0, temperature=0.7)
  a0, _ = swg_jax.sample(model, obs, key, guidance_scale=0, temperature=0.7)
  assert np.max(np.abs(np.asarray(a1) - np.asarray(a0))) > 1e-4


class SelectBestTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_swg_r_picks_best_candidate(self):
    cands = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 2)), jnp.float32)
    scores = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32)
    got = self.variant(sampling.select_best)(cands, scores)
    np.testing.assert_array_equal(got, np.asarray(cands)[np.arange(3), np.argmax(scores, 1)])


def test_swg_r_sample_picks_best_candidate_by_q_or_w():
  cfg = ml_collections.ConfigDict(dict(hidden=(16, 16), value_layer_norm=True, lr=3e-4))
  critic = iql.init_critic(jax.random.PRNGKey(0), 3, 2, cfg)
  model = untrained_model(critic=critic)
  obs = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
  key = jax.random.PRNGKey(7)
  obs_rep = jnp.repeat(jnp.asarray(obs), 6, axis=0)
  z = sampling.sample_z(model.eps_fn(obs_rep), model.schedule, 24, 3, key, guidance_scale=1.0, temperature=1.0)
  q = np.asarray(iql.target_q(critic, obs_rep, z[:, :-1])).reshape(4, 6)
  a_q, _ = swg_jax.sample(model, obs, key, temperature=1.0, num_candidates=6, select="q")
  np.testing.assert_allclose(a_q, np.asarray(z[:, :-1]).reshape(4, 6, 2)[np.arange(4), q.argmax(1)], atol=1e-6)
  _, w_w = swg_jax.sample(model, obs, key, temperature=1.0, num_candidates=6, select="w")
  np.testing.assert_allclose(w_w, np.asarray(z[:, -1]).reshape(4, 6).max(1), atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("weights, match", [
    (np.array([0.5, -0.1, 0.5, 0.5]), r"weights must be >= 0, got -0.1 at index 1"),
    (np.array([0.5, 0.5, np.nan, 0.5]), r"weights has a non-finite value nan at index 2"),
    (np.ones(3), r"weights must have shape \[N\] = \[4\], got shape \(3,\)"),
    (np.ones((4, 2)), r"weights must have shape \[N\] = \[4\], got shape \(4, 2\)"),
])
def test_fit_rejects_bad_weights(weights, match):
  with pytest.raises(ValueError, match=match):
    swg_jax.fit(np.zeros((4, 2)), np.zeros((4, 1)), weights)


def test_fit_warns_when_weights_exceed_w_max():
  config = swg_jax.get_config("smoke")
  config.diffusion = tiny_diffusion_config(num_steps=1, batch_size=4)
  with pytest.warns(UserWarning, match=r"weights reach 80 > sampling.w_max = 1"):
    swg_jax.fit(np.zeros((4, 0)), np.zeros((4, 1)), np.array([1.0, 80.0, 0.5, 0.5]), config)


def test_fit_rejects_bad_observations_and_actions():
  with pytest.raises(ValueError, match=r"observations has 3 rows \(shape \(3, 2\)\) but expected N = 4"):
    swg_jax.fit(np.zeros((3, 2)), np.zeros((4, 1)), np.ones(4))
  with pytest.raises(ValueError, match=r"actions must lie in \[-1, 1\], got max \|a\| = 2 at index 1"):
    swg_jax.fit(np.zeros((4, 0)), np.array([[0.0], [2.0], [0.0], [0.0]]), np.ones(4))
  with pytest.raises(ValueError, match=r"actions must have shape \[N, D\], got shape \(4,\)"):
    swg_jax.fit(np.zeros((4, 0)), np.zeros(4), np.ones(4))
  with pytest.raises(ValueError, match=r"observations has a non-finite value inf at index 2"):
    obs = np.zeros((4, 1))
    obs[2, 0] = np.inf
    swg_jax.fit(obs, np.zeros((4, 1)), np.ones(4))


def test_sample_rejects_bad_options():
  model = untrained_model()
  obs, key = np.zeros((2, 3)), jax.random.PRNGKey(0)
  for rho in (-1.0, float("nan")):
    with pytest.raises(ValueError, match=r"guidance_scale \(rho\) must be a finite number >= 0, got"):
      swg_jax.sample(model, obs, key, guidance_scale=rho)
  with pytest.raises(ValueError, match=r"observations must have shape \[B, 3\], got shape \(2, 4\)"):
    swg_jax.sample(model, np.zeros((2, 4)), key)
  with pytest.raises(ValueError, match="sampler must be one of"):
    swg_jax.sample(model, obs, key, sampler="euler")
  with pytest.raises(ValueError, match="needs temperature > 0"):
    swg_jax.sample(model, obs, key, num_candidates=4, temperature=0)
  with pytest.raises(ValueError, match="needs a critic"):
    swg_jax.sample(model, obs, key, num_candidates=4, temperature=1.0, select="q")
  with pytest.raises(ValueError, match=r"unknown sampling option\(s\) \['rho'\]"):
    swg_jax.sample(model, obs, key, rho=1.0)
  with pytest.raises(ValueError, match="unknown SWG preset 'fast'"):
    swg_jax.get_config("hopper-medium-v2:fast")


# ---------------------------------------------------------------------------------------------------------------
# End to end


def test_train_pipeline_smoke():
  rng = np.random.default_rng(0)
  n, s, a = 256, 3, 2
  obs = rng.normal(size=(n, s)).astype(np.float32)
  data = OfflineData(observations=jnp.asarray(obs), actions=jnp.asarray(rng.uniform(-1, 1, (n, a)), jnp.float32),
                     rewards=jnp.asarray(rng.normal(size=n), jnp.float32),
                     next_observations=jnp.asarray(rng.normal(size=(n, s)), jnp.float32), masks=jnp.ones(n))
  config = swg_jax.get_config("smoke")
  config.seeds = (0, 1)
  config.steps_per_call = 20
  config.critic.update(num_steps=20)
  config.diffusion.update(num_steps=20, hidden=32, num_blocks=2, time_features=(32, 32))
  result = swg_jax.train(config, data)
  assert result.weights.shape == (2, n) and set(np.unique(result.weights)) <= {np.float32(0.3), np.float32(0.7)}
  model = result.model.seed(1)
  actions = swg_jax.act(model, obs[:5], jax.random.PRNGKey(0))
  assert actions.shape == (5, a) and np.all(np.abs(np.asarray(actions)) <= 1)
  actions, w = swg_jax.sample(model, obs[:5], jax.random.PRNGKey(0), temperature=1.0, num_candidates=3)
  assert actions.shape == (5, a) and w.shape == (5,)
  assert swg_jax.act(model, obs[0], jax.random.PRNGKey(0)).shape == (a,)
  # The seed-stacked policy used for evaluation: seed i samples with its own parameters and key.
  policy = swg_jax.seed_policy(result.model, guidance_scale=1.0)
  key = jax.random.PRNGKey(3)
  both = policy(jnp.stack([obs[:5], obs[5:10]]), key)
  alone = swg_jax.act(model, obs[5:10], jax.random.split(key, 2)[1], guidance_scale=1.0)
  assert both.shape == (2, 5, a)
  np.testing.assert_allclose(both[1], alone, atol=1e-5)


def toy_config(steps=2000):
  config = swg_jax.get_config("smoke")
  config.diffusion.update(hidden=64, num_blocks=2, dropout_rate=0.0, time_embed_dim=16, time_features=(64, 64),
                          batch_size=256, num_steps=steps, decay_steps=steps, lr=2e-3, ema=0.01)
  config.steps_per_call = steps
  return config


def test_toy_8gaussians_guided_samples_match_weighted_target():
  """A bandit (S = 0): at beta = 5 rho = 1 samples the exact target mu exp(beta E); at beta = 0 the data."""
  rng = np.random.default_rng(0)
  pts, energy = sample_toy("8gaussians", 20_000, rng)
  n = 1000
  obs = np.zeros((n, 0), np.float32)
  key = jax.random.PRNGKey(5)
  truth = target_samples("8gaussians", 5.0, n, np.random.default_rng(1))
  truth_again = target_samples("8gaussians", 5.0, n, np.random.default_rng(3))
  model = swg_jax.fit(np.zeros((len(pts), 0)), pts, toy_weights(energy, 5.0), toy_config(), seed=0)
  guided, _ = swg_jax.sample(model, obs, key, guidance_scale=1.0, temperature=1.0)
  unguided, _ = swg_jax.sample(model, obs, key, guidance_scale=0, temperature=1.0)
  d_guided, d_unguided = energy_distance(guided, truth), energy_distance(unguided, truth)
  floor = energy_distance(truth_again, truth)
  print(f"beta=5: guided {d_guided:.4g}, unguided {d_unguided:.4g}, floor {floor:.4g}")
  assert d_guided * 3 < d_unguided
  assert d_guided < 10 * floor + 0.01
  dpm, _ = swg_jax.sample(model, obs, key, guidance_scale=1.0, temperature=1.0, sampler="dpm", num_steps=10)
  d_dpm = energy_distance(dpm, truth)
  print(f"beta=5: guided DPM-Solver++ {d_dpm:.4g}")
  assert d_dpm * 3 < d_unguided

  model = swg_jax.fit(np.zeros((len(pts), 0)), pts, toy_weights(energy, 0.0), toy_config(), seed=0)
  data = target_samples("8gaussians", 0.0, n, np.random.default_rng(2))
  data_again = target_samples("8gaussians", 0.0, n, np.random.default_rng(4))
  guided, _ = swg_jax.sample(model, obs, key, guidance_scale=1.0, temperature=1.0)
  d0, floor0 = energy_distance(guided, data), energy_distance(data_again, data)
  print(f"beta=0: guided {d0:.4g}, floor {floor0:.4g}")
  assert d0 < 3 * floor0 + 0.02
