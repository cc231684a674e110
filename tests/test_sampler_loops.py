"""Sampler bodies are GPU-safe: every public sampling entry point is one flat `lax.scan` whose body holds no loop
(`while`, `scan`) and no data-dependent index (`gather`, `dynamic_slice`). XLA's GPU compiler rejected exactly that
(a `jnp.interp` schedule look-up inside the guided SWG sampler, on an H200); the CPU compiler accepts it, so only a
walk over the jaxpr can catch it here. Also: the host-side noise levels the samplers feed in equal the schedule's own
traced look-up, so the results are those of the earlier in-loop version."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import srpo_jax
import swg_jax
from common import iql
from common.diffusion import VPContinuous, VPDiscrete
from common.solvers import ddpm_sample, dpm_solver_pp, dpm_solver_pp_plan, noise_levels, traced_noise_level
from srpo_jax import behavior
from swg_jax import sampling

from tests.test_swg import untrained_model

LOOPS = {"while", "scan"}
TRACED_INDEXING = {"gather", "dynamic_slice", "dynamic_update_slice", "scatter"}


def _sub_jaxprs(eqn):
  """The jaxprs nested in an equation's parameters (pjit, custom_jvp/vjp, cond branches, remat, scan bodies)."""
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      inner = getattr(item, "jaxpr", item)  # ClosedJaxpr -> Jaxpr
      if hasattr(inner, "eqns"):
        yield inner


def _primitives(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn.primitive.name
    for sub in _sub_jaxprs(eqn):
      yield from _primitives(sub)


def scan_bodies(jaxpr):
  """Bodies of every scan reachable from jaxpr (outside other scans' bodies as well as inside)."""
  for eqn in jaxpr.eqns:
    subs = list(_sub_jaxprs(eqn))
    if eqn.primitive.name == "scan":
      yield from subs
    for sub in subs:
      yield from scan_bodies(sub)


def loop_problems(fn, *args) -> tuple[int, list[str]]:
  """(number of scans, what a scan body holds that it must not) for fn(*args)."""
  jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  bodies = list(scan_bodies(jaxpr))
  problems = sorted({p for body in bodies for p in _primitives(body) if p in LOOPS | TRACED_INDEXING})
  return len(bodies), problems


def assert_flat_scan(fn, *args):
  num_scans, problems = loop_problems(fn, *args)
  assert num_scans >= 1, "no lax.scan found: the sampler is not one scan (or the walk is broken)"
  assert not problems, f"a sampler's scan body holds {problems}: compute per-step values ahead, pass them as xs"


@pytest.fixture(scope="module")
def swg_model():
  critic = iql.init_critic(jax.random.PRNGKey(1), 3, 2, swg_jax.get_config("smoke").critic)
  return untrained_model(obs_dim=3, action_dim=2, critic=critic)


SWG_OPTIONS = [dict(sampler=s, guidance_scale=g, w_prediction=w, temperature=t)
               for s in ("ddpm", "dpm") for g in (0, 1.0) for w in ("tweedie", "official") for t in (0, 1.0)]
SWG_OPTIONS += [dict(sampler=s, guidance_scale=1.0, temperature=1.0, num_candidates=4, select=sel)
                for s in ("ddpm", "dpm") for sel in ("q", "w")]


@pytest.mark.parametrize("opts", SWG_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_swg_sample_is_one_flat_scan(swg_model, opts):
  obs, key = jnp.zeros((4, 3)), jax.random.PRNGKey(0)
  assert_flat_scan(lambda o, k: swg_jax.sample(swg_model, o, k, **opts), obs, key)


def test_swg_seed_policy_is_one_flat_scan(swg_model):
  stacked = jax.tree.map(lambda x: jnp.stack([x, x]), swg_model)
  for opts in ({}, dict(num_candidates=4, temperature=1.0, select="q"), dict(sampler="dpm", guidance_scale=2.0)):
    assert_flat_scan(swg_jax.seed_policy(stacked, **opts), jnp.zeros((2, 4, 3)), jax.random.PRNGKey(0))


@pytest.mark.parametrize("num_steps,order", [(5, 1), (8, 2), (12, 3)])
def test_srpo_behaviour_sampler_is_one_flat_scan(num_steps, order):
  net = behavior.behavior_net(2, srpo_jax.get_config("smoke").behavior)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)), jnp.zeros((1, 3)))
  eps_fn = behavior.behavior_eps_fn(params, net)
  assert_flat_scan(lambda o, k: behavior.sample_behavior(eps_fn, o, 2, k, num_steps=num_steps, order=order),
                   jnp.zeros((4, 3)), jax.random.PRNGKey(0))


@pytest.mark.parametrize("schedule", [VPDiscrete(), VPContinuous()], ids=["discrete", "continuous"])
@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_is_one_flat_scan(schedule, stochastic, order):
  eps_fn = lambda x, t: jnp.tanh(x) * t
  run = lambda x, k: dpm_solver_pp(eps_fn, schedule, x, num_steps=6, order=order, key=k if stochastic else None,
                                   denoise_to_zero=True)
  assert_flat_scan(run, jnp.ones((4, 2)), jax.random.PRNGKey(0))


@pytest.mark.parametrize("temperature", [0, 1.0])
def test_ddpm_is_one_flat_scan(temperature):
  run = lambda x, k: ddpm_sample(lambda x, t: jnp.tanh(x) * t, VPDiscrete(), x, k, temperature=temperature)
  assert_flat_scan(run, jnp.ones((4, 2)), jax.random.PRNGKey(0))


@pytest.mark.parametrize("lookup", ["interp", "index"])
def test_the_walk_catches_a_schedule_lookup_from_traced_time(lookup):
  """Mutation: an eps_fn that looks its noise level up from the traced time, as the guided sampler once did."""
  schedule = VPDiscrete()
  grid = np.arange(schedule.num_steps, dtype=np.float32)
  if lookup == "interp":
    eps_fn = lambda x, t: x * jnp.interp(t, grid, schedule.alpha_bars)
  else:
    eps_fn = lambda x, t: x * jnp.asarray(schedule.alpha_bars)[t.astype(jnp.int32)]
  run = lambda x, k: ddpm_sample(eps_fn, schedule, x, k, temperature=1.0)
  num_scans, problems = loop_problems(run, jnp.ones((4, 2)), jax.random.PRNGKey(0))
  assert num_scans >= 1 and problems, "the walk missed a traced schedule look-up inside the scan body"
  with pytest.raises(AssertionError, match="scan body holds"):
    assert_flat_scan(run, jnp.ones((4, 2)), jax.random.PRNGKey(0))


def test_the_walk_catches_the_old_guided_eps(swg_model):
  """The guided eps called as eps(z, t_model) (the earlier sampler's way: traced_noise_level inside the body)."""
  obs = jnp.zeros((4, 3))
  guided = sampling.guided_eps_fn(swg_model.eps_fn(obs), swg_model.schedule, 1.0, heads_fn=swg_model.heads_fn(obs))
  old_style = lambda z, t: guided(z, t)  # no at_level: the sampler passes t_model only
  run = lambda z, k: ddpm_sample(old_style, swg_model.schedule, z, k, temperature=1.0)
  with pytest.raises(AssertionError, match="scan body holds"):
    assert_flat_scan(run, jnp.zeros((4, 3)), jax.random.PRNGKey(0))


@pytest.mark.parametrize("schedule", [VPDiscrete(), VPDiscrete(num_steps=50), VPContinuous()],
                         ids=["T15", "T50", "continuous"])
def test_host_noise_levels_equal_the_schedules_traced_lookup(schedule):
  if isinstance(schedule, VPDiscrete):
    t_model = np.concatenate([np.arange(schedule.num_steps), [0.4, 3.7, schedule.num_steps - 1.5]]).astype(np.float32)
  else:
    t_model = np.linspace(1e-3, 1.0, 17).astype(np.float32)
  host = noise_levels(schedule, t_model)
  for i, t in enumerate(t_model):
    traced = jax.jit(functools.partial(traced_noise_level, schedule))(t)
    for field in host._fields:
      np.testing.assert_allclose(getattr(traced, field), getattr(host, field)[i], rtol=2e-6, atol=1e-7,
                                 err_msg=f"{field} at t_model={t}")
  if isinstance(schedule, VPDiscrete):  # on the grid: sqrt(alpha_bar_i) and sqrt of the single-step alpha_i
    n = schedule.num_steps
    np.testing.assert_allclose(host.alpha[:n], np.sqrt(schedule.alpha_bars), rtol=1e-6)
    np.testing.assert_allclose(host.step_alpha[:n], np.sqrt(schedule.alphas), rtol=1e-6)


@pytest.mark.parametrize("sampler", ["ddpm", "dpm"])
@pytest.mark.parametrize("w_prediction", ["tweedie", "official"])
def test_guided_samples_equal_a_python_loop_that_looks_levels_up(swg_model, sampler, w_prediction):
  """The scan sampler (levels as xs) against the same steps in Python with the guided eps called as eps(z, t_model)."""
  obs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
  schedule = swg_model.schedule
  guided = sampling.guided_eps_fn(swg_model.eps_fn(obs), schedule, 2.0, heads_fn=swg_model.heads_fn(obs),
                                  w_prediction=w_prediction)
  z_T = jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)), jnp.float32)
  clip = sampling.clip_z
  run = {"ddpm": lambda eps: ddpm_sample(eps, schedule, z_T, None, temperature=0, clip_fn=clip),
         "dpm": lambda eps: dpm_solver_pp(eps, schedule, z_T, num_steps=5, order=1, x0_clip_fn=clip)}[sampler]
  got = run(guided)
  if sampler == "ddpm":
    z = z_T
    for i in range(schedule.num_steps - 1, -1, -1):
      alpha, beta, abar = schedule.alphas[i], schedule.betas[i], schedule.alpha_bars[i]
      z = clip((z - beta / np.sqrt(1.0 - abar) * guided(z, jnp.float32(i))) / np.sqrt(alpha))
    want = z
  else:
    plan = dpm_solver_pp_plan(schedule, 5, 1)
    z = z_T
    for i in range(5):  # first order (DDIM): x_{i+1} = sigma_{i+1}/sigma_i x_i + alpha_{i+1} (1 - e^{-h}) m_i
      a, s = schedule.alpha_sigma(schedule.t_from_model_time(jnp.float32(plan.t_model[i])))
      m = clip((z - s * guided(z, jnp.float32(plan.t_model[i]))) / a)
      z = plan.x_coef[i] * z + plan.m_coef[i, 0] * m
    want = z
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
  assert not np.allclose(got, run(swg_model.eps_fn(obs)), atol=1e-3), "guidance had no effect: this proves nothing"
