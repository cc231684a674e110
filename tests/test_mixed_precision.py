"""compute_dtype = "bfloat16": matmuls and norms in bf16, parameters, gradients and optimiser state in float32, outputs
float32; and the quality a bf16-trained model reaches on the toys with known answers, against float32's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import srpo_jax
import swg_jax
from common import iql
from common.data import OfflineData
from common.networks import ConditionalEpsNet, TwinQ, compute_dtype
from common.data.toys import energy_distance, sample_toy, target_samples, toy_weights
from srpo_jax import behavior

from tests.test_swg import toy_config


def test_compute_dtype_names(monkeypatch):
  assert compute_dtype("float32") == jnp.float32 and compute_dtype("bfloat16") == jnp.bfloat16
  assert compute_dtype("auto") == jnp.float32  # the tests run on the CPU
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert compute_dtype("auto") == jnp.bfloat16
  with pytest.raises(ValueError, match="compute_dtype must be one of"):
    compute_dtype("fp16")


def test_defaults_bf16_diffusion_on_accelerators_float32_critics():
  swg, srpo = swg_jax.get_config("paper"), srpo_jax.get_config("paper")
  assert swg.diffusion.compute_dtype == "auto" and srpo.behavior.compute_dtype == "auto"
  assert swg.critic.compute_dtype == "float32" and srpo.critic.compute_dtype == "float32"


def test_bf16_network_keeps_float32_params_and_outputs_and_close_values():
  kw = dict(out_dim=3, hidden=64, num_blocks=2, time_features=(32, 32), time_embed_dim=16, dropout_rate=0.0,
            aux_head_after_block=1)
  f32, bf16 = ConditionalEpsNet(**kw), ConditionalEpsNet(**kw, dtype=jnp.bfloat16)
  x, t, s = jnp.ones((8, 4)) * 0.3, jnp.linspace(0.0, 14.0, 8), jnp.linspace(-1, 1, 8 * 5).reshape(8, 5)
  params = f32.init(jax.random.PRNGKey(0), x, t, s)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(bf16.init(jax.random.PRNGKey(0), x, t, s)))
  out32, out16 = f32.apply(params, x, t, s), bf16.apply(params, x, t, s)
  assert out16.dtype == jnp.float32 and out16.shape == out32.shape == (8, 4)
  rel = float(jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32))
  assert 0 < rel < 0.05, f"bf16 vs f32 relative error {rel}: 0 means no bf16 at all, > 5 % a broken cast"
  # The matmuls really run in bf16: the compiled forward multiplies bf16 operands.
  hlo = jax.jit(bf16.apply).lower(params, x, t, s).as_text()
  assert "bf16" in hlo and "bf16" not in jax.jit(f32.apply).lower(params, x, t, s).as_text()


def test_bf16_critic_step_keeps_float32_state():
  config = swg_jax.get_config("smoke").critic
  config.compute_dtype = "bfloat16"
  state = iql.init_critic(jax.random.PRNGKey(0), 3, 2, config)
  assert isinstance(state.q.apply_fn.__self__, TwinQ) and state.q.apply_fn.__self__.dtype == jnp.bfloat16
  rng = np.random.default_rng(0)
  n = 256
  data = OfflineData(observations=jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
                     actions=jnp.asarray(rng.uniform(-1, 1, (n, 2)), jnp.float32),
                     rewards=jnp.asarray(rng.normal(size=n), jnp.float32), masks=jnp.ones(n, jnp.float32),
                     next_observations=jnp.asarray(rng.normal(size=(n, 3)), jnp.float32))
  new_state, metrics = jax.jit(iql.make_critic_step(config))(state, data, jax.random.PRNGKey(1))
  leaves = jax.tree.leaves(new_state)
  assert all(x.dtype in (jnp.float32, jnp.int32) for x in leaves), {x.dtype for x in leaves}
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert not np.allclose(new_state.q.params["params"]["VmapMLP_0"]["Dense_0"]["kernel"],
                         state.q.params["params"]["VmapMLP_0"]["Dense_0"]["kernel"])


@pytest.mark.slow
def test_bf16_swg_toy_reaches_the_float32_quality():
  """8gaussians at beta = 5 (the SWG toy oracle of test_swg): a bf16-trained model meets the bounds f32 meets there,
  and its energy distance is within the noise floor of the f32 model's."""
  rng = np.random.default_rng(0)
  pts, energy = sample_toy("8gaussians", 20_000, rng)
  n = 1000
  obs, key = np.zeros((n, 0), np.float32), jax.random.PRNGKey(5)
  truth = target_samples("8gaussians", 5.0, n, np.random.default_rng(1))
  floor = energy_distance(target_samples("8gaussians", 5.0, n, np.random.default_rng(3)), truth)
  distances = {}
  for name in ("float32", "bfloat16"):
    config = toy_config()
    config.diffusion.compute_dtype = name
    model = swg_jax.fit(np.zeros((len(pts), 0)), pts, toy_weights(energy, 5.0), config, seed=0)
    guided, _ = swg_jax.sample(model, obs, key, guidance_scale=1.0, temperature=1.0)
    unguided, _ = swg_jax.sample(model, obs, key, guidance_scale=0, temperature=1.0)
    distances[name] = (energy_distance(guided, truth), energy_distance(unguided, truth))
  print(f"8gaussians beta=5, floor {floor:.4g}: " + ", ".join(
      f"{k} guided {g:.4g} / unguided {u:.4g}" for k, (g, u) in distances.items()))
  g16, u16 = distances["bfloat16"]
  assert g16 * 3 < u16 and g16 < 10 * floor + 0.01
  assert abs(g16 - distances["float32"][0]) < 5 * floor + 0.002


@pytest.mark.slow
def test_bf16_behaviour_model_samples_the_data_like_float32():
  """SRPO's behaviour model (continuous VP) on the 8-Gaussian mixture as a bandit, sampled by DPM-Solver++: energy
  distance to fresh data within the noise floor for bf16 as for f32."""
  pts, _ = sample_toy("8gaussians", 20_000, np.random.default_rng(0))
  fresh, _ = sample_toy("8gaussians", 1000, np.random.default_rng(1))
  floor = energy_distance(sample_toy("8gaussians", 1000, np.random.default_rng(2))[0], fresh)
  distances = {}
  for name in ("float32", "bfloat16"):
    config = srpo_jax.get_config("smoke").behavior
    config.update(hidden=64, num_blocks=2, dropout_rate=0.0, time_embed_dim=16, batch_size=256, lr=2e-3,
                  num_steps=1500, compute_dtype=name)
    state = behavior.init_behavior(jax.random.PRNGKey(0), 0, 2, config)
    data = OfflineData(observations=jnp.zeros((len(pts), 0)), actions=jnp.asarray(pts, jnp.float32),
                       rewards=jnp.zeros(len(pts)), masks=jnp.ones(len(pts)), next_observations=jnp.zeros((len(pts), 0)))
    step = behavior.make_behavior_step(config)
    body = lambda st, k: step(st, data, k)
    state, _ = jax.jit(lambda st, ks: jax.lax.scan(body, st, ks))(state, jax.random.split(jax.random.PRNGKey(1), 1500))
    eps_fn = behavior.behavior_eps_fn(state.params, apply_fn=state.apply_fn)
    samples = behavior.sample_behavior(eps_fn, jnp.zeros((1000, 0)), 2, jax.random.PRNGKey(2), num_steps=15)
    distances[name] = energy_distance(np.asarray(samples), fresh)
  print(f"behaviour model on 8gaussians, floor {floor:.4g}: {distances}")
  assert distances["float32"] < 10 * floor + 0.01
  assert distances["bfloat16"] < 10 * floor + 0.01
  assert abs(distances["bfloat16"] - distances["float32"]) < 5 * floor + 0.005
