"""The bench's action-selection rows: wall time of one call of every sampler, and each SWG sampler's sample quality on
a 2-D toy trained here."""
from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import iql
from experiments.bench.training import HOPPER, machine_description

def _median_ms(fn, repeats: int) -> float:
  """Median over repeats of the mean wall time of back-to-back calls (about 0.3 s of calls per repeat)."""
  jax.block_until_ready(fn())  # compile
  start = time.perf_counter()
  jax.block_until_ready(fn())
  calls = max(1, min(200, int(0.3 / max(time.perf_counter() - start, 1e-6))))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / calls * 1e3)
  return statistics.median(times)


# SWG samplers, timed on hopper-size inputs and scored on the toy with the same options. Temperature 1 everywhere:
# at temperature 0 a bandit's samples are all one point, so there would be nothing to score.
SWG_SAMPLERS = {
    "SWG guided DDPM-15": dict(sampler="ddpm", temperature=1.0),
    "SWG guided DPM-Solver++ 10 steps": dict(sampler="dpm", num_steps=10, temperature=1.0),
    "SWG guided DPM-Solver++ 5 steps": dict(sampler="dpm", num_steps=5, temperature=1.0),
    "SWG-R DDPM-15, 16 candidates": dict(sampler="ddpm", temperature=1.0, num_candidates=16),
}
SWG_REFERENCE = "SWG guided DDPM-15"  # the official sampler: "the same toy quality" means as good as this one
DIFFUSION_POLICY = "diffusion policy: SRPO behaviour, DPM-Solver++ 15"
DIFFUSION_POLICY_32 = DIFFUSION_POLICY + ", 32 candidates + argmax Q"
SRPO_ACT = "SRPO policy (one MLP forward)"
TOY_DATASET, TOY_BETA = "8gaussians", 5.0


def action_latency(repeats: int, state_counts=(1, 64, 256), preset: str = "paper", only=None) -> list[dict]:
  """Wall time of one action-selection call (host call to result) for randomly initialised paper-size networks:
  the cost does not depend on the weights. The diffusion samplers are timed for up to 64 states. preset "smoke":
  tiny networks (a wiring check, as experiments.gpu_check --size=smoke uses it). only: the method names to time
  (default all)."""
  import swg_jax
  import srpo_jax
  from srpo_jax import behavior, configs, policy
  from swg_jax import model as swg_model

  S, A = HOPPER["obs_dim"], HOPPER["action_dim"]
  key = jax.random.PRNGKey(0)
  swg_cfg = swg_jax.get_config(preset)
  critic = iql.init_critic(key, S, A, swg_cfg.critic)
  swg = swg_jax.SWGModel(params=swg_model.init_diffusion(key, S, A, swg_cfg.diffusion).params, critic=critic,
                         net=swg_model.make_network(A, swg_cfg.diffusion),
                         schedule=swg_model.make_schedule(swg_cfg.diffusion), obs_dim=S, action_dim=A,
                         sampling_defaults=tuple(sorted(swg_cfg.sampling.to_dict().items())))
  srpo_cfg = configs.get_config(f"hopper-medium-v2:{preset}")
  pol = policy.Policy(params=policy.init_policy(key, S, A, srpo_cfg.policy).params, action_dim=A,
                      hidden=srpo_cfg.policy.hidden, num_layers=srpo_cfg.policy.num_layers)
  beh_net = behavior.behavior_net(A, srpo_cfg.behavior)
  beh_params = behavior.init_behavior(key, S, A, srpo_cfg.behavior).params
  srpo_critic = iql.init_critic(key, S, A, srpo_cfg.critic)

  @functools.partial(jax.jit, static_argnames="candidates")
  def diffusion_policy(obs, key, candidates: int):
    """SRPO's behaviour model sampled with DPM-Solver++ (15 steps); with several candidates per state the one of
    highest min-Q_target is kept, as diffusion policies (IDQL, SfBC) act."""
    b = obs.shape[0]
    rep = jnp.repeat(obs, candidates, axis=0)
    actions = behavior.sample_behavior(behavior.behavior_eps_fn(beh_params, beh_net), rep, A, key, num_steps=15)
    if candidates == 1:
      return actions
    best = jnp.argmax(iql.target_q(srpo_critic, rep, actions).reshape(b, candidates), axis=1)
    return actions.reshape(b, candidates, A)[jnp.arange(b), best]

  rows, device = [], machine_description()["device"]
  for states in state_counts:
    obs = jax.random.normal(jax.random.PRNGKey(1), (states, S))
    obs_np = np.asarray(obs)
    methods = {SRPO_ACT: lambda: srpo_jax.act(pol, obs)}
    if states <= 64:
      methods.update({name: functools.partial(swg_jax.sample, swg, obs_np, key, **opts)
                      for name, opts in SWG_SAMPLERS.items()})
      methods[DIFFUSION_POLICY] = lambda: diffusion_policy(obs, key, 1)
      methods[DIFFUSION_POLICY_32] = lambda: diffusion_policy(obs, key, 32)
    for name, fn in methods.items():
      if only is not None and name not in only:
        continue
      rows.append({"method": name, "states": states, "ms": _median_ms(fn, repeats), "device": device})
  return rows


def toy_sampler_quality(steps: int, n: int) -> dict:
  """Each SWG sampler's sample quality on a 2-D toy bandit, at the options it is timed with.

  One joint model (small network, `steps` training steps) on 8gaussians with weights w = exp(beta (E - 1)),
  beta = 5, data in [-1, 1] and the T = 15 schedule the timed samplers use; rho = 1. Scores against ground-truth
  draws of mu exp(beta E): energy distance, off-support share (registers blur) and the mean energy E (the toy's
  reward; SWG-R, which keeps the candidate of highest sampled w here, trades the target for reward). Also the floor
  (a second truth draw) and unguided (rho = 0) samples.
  """
  import swg_jax
  from common.data.toys import (energy_distance, off_support_fraction, pairwise_distances, sample_toy,
                                   target_samples, toy_weights)

  points, energy = sample_toy(TOY_DATASET, 20_000, np.random.default_rng(0))
  config = swg_jax.get_config("smoke")
  config.steps_per_call = min(steps, 1000)
  config.diffusion.update(hidden=64, num_blocks=3, dropout_rate=0.0, time_embed_dim=32, time_features=(64, 64),
                          batch_size=256, num_steps=steps, decay_steps=steps, lr=2e-3, ema=0.005)
  start = time.perf_counter()
  model = swg_jax.fit(np.zeros((len(points), 0), np.float32), points, toy_weights(energy, TOY_BETA), config, seed=0)
  train_s = time.perf_counter() - start
  truth = target_samples(TOY_DATASET, TOY_BETA, n, np.random.default_rng(1))
  obs = np.zeros((n, 0), np.float32)
  pool_points, pool_energy = sample_toy(TOY_DATASET, 20_000, np.random.default_rng(2))

  def mean_energy(x):  # E of the nearest point of a data sample (8gaussians: about the nearest cluster's index / 7)
    return float(np.mean(pool_energy[np.argmin(pairwise_distances(x, pool_points), axis=1)]))

  def score(x):
    x = np.asarray(x, np.float64)
    return {"energy_distance": energy_distance(x, truth), "off_support": off_support_fraction(x, truth),
            "mean_energy": mean_energy(x)}

  scores = {"ground truth again (floor)": score(target_samples(TOY_DATASET, TOY_BETA, n, np.random.default_rng(3))),
            "unguided (rho = 0), DDPM-15": score(swg_jax.sample(model, obs, jax.random.PRNGKey(4), guidance_scale=0,
                                                                 temperature=1.0)[0])}
  for name, opts in SWG_SAMPLERS.items():
    opts = dict(opts, select="w") if opts.get("num_candidates", 1) > 1 else opts  # the toy model has no critic
    scores[name] = score(swg_jax.sample(model, obs, jax.random.PRNGKey(4), **opts)[0])
  return {"dataset": TOY_DATASET, "beta": TOY_BETA, "samples": n, "train_steps": steps, "train_s": train_s,
          "truth_mean_energy": mean_energy(truth), "scores": scores}

