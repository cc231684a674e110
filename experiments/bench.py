"""`make bench`: training-step throughput of the fused trainer, with the machine named.

Measures steps/s of each stage's step for 1, 4 and 8 vmapped seeds, fused (`steps_per_call` steps per jit call with
lax.scan) and one step per call, next to the machine's measured float32 matmul rate; the wall time of one
action-selection call, each SWG sampler next to its sample quality on a toy trained here; the paper pipelines'
training time for 5 seeds, estimated from those rates; and the issue tracker's targets (the 2-core CPU's on a CPU,
seed scaling and the SRPO pipeline hour on an accelerator). Median of several timed repeats after a warm-up call.
Writes results/bench.json and results/bench.md.

  python -m experiments.bench --seeds=1,4,8 --repeats=5
  python -m experiments.bench --seeds=1 --repeats=1 --fused_steps=2 --latency_states=1 --toy_steps=100 \
      --out_dir=/tmp/bench   # a smoke run of every code path (its numbers mean nothing)
"""
from __future__ import annotations

import functools
import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from common import iql
from common.checkpoint import write_json_atomic, write_text_atomic
from common.data import OfflineData
from common.training import init_seeds, make_chunk_fn, seed_keys

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["1", "4", "8"], "Seed counts to measure.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per measurement (median reported).")
flags.DEFINE_integer("fused_steps", 0, "Steps per jit call in fused mode (0: the stage's default, ~seconds a call).")
flags.DEFINE_float("min_repeat_s", 0.5, "Each timed repeat makes calls for at least this long.")
flags.DEFINE_string("out_dir", "results", "Where bench.json / bench.md go.")
flags.DEFINE_list("stages", ["critic", "swg", "srpo_behavior", "srpo_policy"], "Training stages to measure.")
flags.DEFINE_list("latency_states", ["1", "64", "256"], "State counts for action-selection latency (the diffusion "
                  "samplers up to 64).")
flags.DEFINE_integer("toy_steps", 4000, "Training steps of the toy model that scores each SWG sampler (0: no scores).")
flags.DEFINE_integer("toy_samples", 2000, "Samples per score of a SWG sampler on the toy.")

HOPPER = dict(obs_dim=11, action_dim=3)
# The training stages measured (names as rows carry them).
CRITIC, SWG_DIFFUSION = "IQL critic step (b256)", "SWG diffusion step (b1024)"
SRPO_BEHAVIOUR, SRPO_POLICY = "SRPO behaviour step (b2048)", "SRPO policy step (b256)"


def machine_description() -> dict:
  device = jax.devices()[0]
  return {"platform": jax.default_backend(), "device": getattr(device, "device_kind", str(device)),
          "num_devices": jax.device_count(), "cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__}


def _calls_lasting(min_seconds: float, seconds_per_call: float) -> int:
  """How many back-to-back calls of `seconds_per_call` last at least `min_seconds` (at least one)."""
  return max(1, math.ceil(min_seconds / max(seconds_per_call, 1e-9)))


def matmul_gflops(n: int | None = None, repeats: int = 10, min_seconds: float = 0.2) -> float:
  """Measured float32 matmul rate (n x n at the default precision), the ceiling the training steps are compared to.
  n defaults to 2048 on a CPU and 8192 on an accelerator, where a 2048 product is over before dispatch is."""
  n = n or (2048 if jax.default_backend() == "cpu" else 8192)
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  start = time.perf_counter()
  f(a).block_until_ready()
  calls = _calls_lasting(min_seconds, time.perf_counter() - start)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      out = f(a)
    out.block_until_ready()
    times.append((time.perf_counter() - start) / calls)
  return 2 * n**3 / statistics.median(times) / 1e9


def random_data(n: int = 100_000, obs_dim: int = 11, action_dim: int = 3) -> OfflineData:
  rng = np.random.default_rng(0)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return OfflineData(observations=f(n, obs_dim), actions=jnp.tanh(f(n, action_dim)), rewards=f(n),
                     next_observations=f(n, obs_dim), masks=jnp.ones(n))


def flops_per_step(step_fn, state, data, keys) -> float:
  """XLA's FLOP count of one step for all seeds (from a 1-step call: cost analysis counts a scan body once)."""
  compiled = jax.jit(make_chunk_fn(step_fn, 1)).lower(state, data, keys, jnp.uint32(0)).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def time_chunk(step_fn, state, data, keys, steps_per_call: int, calls: int, repeats: int,
               min_seconds: float = 0.5) -> dict:
  """Median steps/s of back-to-back jitted calls of `steps_per_call` scanned steps, and compile time. Each repeat
  makes at least `calls` calls, and more while one call lasts less than `min_seconds` (fast accelerators)."""
  chunk = jax.jit(make_chunk_fn(step_fn, steps_per_call), donate_argnums=0)
  start = time.perf_counter()
  compiled = chunk.lower(state, data, keys, jnp.uint32(0)).compile()
  compile_s = time.perf_counter() - start
  state = jax.tree.map(jnp.copy, state)
  start = time.perf_counter()
  state, _ = compiled(state, data, keys, jnp.uint32(0))  # warm-up, also sizes the repeats
  jax.block_until_ready(state)
  calls = max(calls, _calls_lasting(min_seconds, time.perf_counter() - start))
  rates = []
  for r in range(repeats):
    start = time.perf_counter()
    for c in range(calls):
      state, metrics = compiled(state, data, keys, jnp.uint32((r * calls + c + 1) * steps_per_call))
    jax.block_until_ready((state, metrics))
    rates.append(calls * steps_per_call / (time.perf_counter() - start))
  return {"steps_per_sec": statistics.median(rates), "compile_s": compile_s, "calls": calls}


def critic_stage():
  cfg = ml_collections.ConfigDict(dict(hidden=(256, 256), value_layer_norm=True, lr=3e-4, expectile=0.7,
                                       discount=0.99, polyak=0.005, batch_size=256))
  init = lambda key: iql.init_critic(key, HOPPER["obs_dim"], HOPPER["action_dim"], cfg)
  return CRITIC, iql.make_critic_step(cfg), init, random_data()


def swg_diffusion_stage():
  import swg_jax
  from swg_jax import model as swg_model

  dc = swg_jax.get_config("paper").diffusion
  base = random_data()
  data = swg_model.WeightedData(observations=base.observations, actions=base.actions,
                                weights=jax.nn.sigmoid(base.rewards))
  init = lambda key: swg_model.init_diffusion(key, HOPPER["obs_dim"], HOPPER["action_dim"], dc)
  return SWG_DIFFUSION, swg_model.make_diffusion_step(HOPPER["action_dim"], dc), init, data


def srpo_behavior_stage():
  from srpo_jax import behavior, configs

  bc = configs.get_config("paper").behavior
  init = lambda key: behavior.init_behavior(key, HOPPER["obs_dim"], HOPPER["action_dim"], bc)
  return SRPO_BEHAVIOUR, behavior.make_behavior_step(bc), init, random_data()


def srpo_policy_stage():
  from srpo_jax import behavior, configs, policy

  c = configs.get_config("hopper-medium-v2:paper")
  eps_net = behavior.behavior_net(HOPPER["action_dim"], c.behavior)
  critic_cfg = c.critic
  init_critic = lambda key: iql.init_critic(key, HOPPER["obs_dim"], HOPPER["action_dim"], critic_cfg)

  def init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    critic = init_critic(k2)
    return policy.PolicyStageState(
        policy=policy.init_policy(k1, HOPPER["obs_dim"], HOPPER["action_dim"], c.policy),
        behavior_params=behavior.init_behavior(k3, HOPPER["obs_dim"], HOPPER["action_dim"], c.behavior).params,
        q_params=critic.q_target_params)

  eps_apply = lambda p, a_t, t, s: eps_net.apply(p, a_t, t, s)
  q_apply = lambda p, s, a: jnp.mean(critic_q_apply(p, s, a), axis=0)
  critic_q_apply = init_critic(jax.random.PRNGKey(0)).q.apply_fn
  step = policy.make_policy_step(eps_apply, q_apply, c.policy)
  return SRPO_POLICY, step, init, random_data().observations


# Stage -> (builder, default steps per fused call): heavy stages take fewer so one call lasts a few seconds.
STAGES = {"critic": (critic_stage, 200), "swg": (swg_diffusion_stage, 10),
          "srpo_behavior": (srpo_behavior_stage, 8), "srpo_policy": (srpo_policy_stage, 100)}


def run_benchmarks(seed_counts, repeats, stages, fused_steps: int = 0, min_seconds: float = 0.5) -> dict:
  """stages: names from STAGES. One-step-per-call mode times half as many calls as the fused call has steps."""
  results = {"machine": machine_description(), "matmul_gflops": matmul_gflops(), "rows": []}
  for stage in stages:
    make_stage, default_steps = STAGES[stage]
    k = fused_steps or default_steps
    name, step_fn, init_fn, data = make_stage()
    for n_seeds in seed_counts:
      keys = seed_keys(range(n_seeds))
      state = init_seeds(init_fn, keys)
      flops = flops_per_step(step_fn, state, data, keys)
      for mode, steps, calls in (("fused", k, 1), ("one step per call", 1, max(1, k // 2))):
        m = time_chunk(step_fn, state, data, keys, steps, calls, repeats, min_seconds)
        gflops = flops * m["steps_per_sec"] / 1e9
        row = {"stage": name, "seeds": n_seeds, "mode": mode, **m, "flops_per_step": flops, "achieved_gflops": gflops,
               "device": results["machine"]["device"]}
        results["rows"].append(row)
        print(f"{name:28s} seeds={n_seeds:<2d} {mode:18s} {m['steps_per_sec']:9.1f} steps/s "
              f"({m['steps_per_sec'] * n_seeds:9.1f} seed-steps/s) {gflops:6.1f} GFLOP/s  compile {m['compile_s']:.1f}s",
              flush=True)
  return results


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


def action_latency(repeats: int, state_counts=(1, 64, 256)) -> list[dict]:
  """Wall time of one action-selection call (host call to result) for randomly initialised paper-size networks:
  the cost does not depend on the weights. The diffusion samplers are timed for up to 64 states."""
  import swg_jax
  import srpo_jax
  from srpo_jax import behavior, configs, policy
  from swg_jax import model as swg_model

  S, A = HOPPER["obs_dim"], HOPPER["action_dim"]
  key = jax.random.PRNGKey(0)
  swg_cfg = swg_jax.get_config("paper")
  critic = iql.init_critic(key, S, A, swg_cfg.critic)
  swg = swg_jax.SWGModel(params=swg_model.init_diffusion(key, S, A, swg_cfg.diffusion).params, critic=critic,
                         net=swg_model.make_network(A, swg_cfg.diffusion),
                         schedule=swg_model.make_schedule(swg_cfg.diffusion), obs_dim=S, action_dim=A,
                         sampling_defaults=tuple(sorted(swg_cfg.sampling.to_dict().items())))
  srpo_cfg = configs.get_config("hopper-medium-v2:paper")
  pol = policy.Policy(params=policy.init_policy(key, S, A, srpo_cfg.policy).params, action_dim=A)
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
  from common.toy_datasets import (energy_distance, off_support_fraction, pairwise_distances, sample_toy,
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


# The issue tracker's targets on the 2-core development CPU, next to the official code's numbers on that kind of CPU.
# Training stages: steps/s of one seed, fused (higher is better); actions: ms for one state (lower is better).
CPU_TARGETS = (
    dict(name=f"{CRITIC}, steps/s", stage=CRITIC, target=160.0, official=145.0),
    dict(name=f"{SWG_DIFFUSION}, steps/s", stage=SWG_DIFFUSION, target=10.0, official=8.7),
    dict(name=f"{SRPO_BEHAVIOUR}, steps/s", stage=SRPO_BEHAVIOUR, target=5.3, official=4.6),
    dict(name=f"{SRPO_POLICY}, steps/s", stage=SRPO_POLICY, target=80.0, official=63.0),
    dict(name="SWG guided action at DDPM-15's toy quality, 1 state, ms", swg_action=True, target=1.0, official=5.0),
    dict(name="SRPO action, 1 state, ms", method=SRPO_ACT, target=0.05, official=0.09),
)
# "The same toy quality": energy distance within two noise floors, off-support share within 0.02 (about three
# binomial standard deviations at 2000 samples) of the reference sampler's.
ED_FLOORS, OFF_SUPPORT_SLACK = 2.0, 0.02


def _latency_ms(results: dict, method: str, states: int = 1):
  return next((r["ms"] for r in results.get("latency", []) if r["method"] == method and r["states"] == states), None)


def same_toy_quality(toy: dict) -> list[str]:
  """The guided SWG samplers (SWG-R excluded: it aims at reward, not the target) scoring as well as the reference."""
  scores = toy["scores"]
  ref, floor = scores[SWG_REFERENCE], scores["ground truth again (floor)"]
  return [name for name in SWG_SAMPLERS if "guided" in name and
          scores[name]["energy_distance"] <= ref["energy_distance"] + ED_FLOORS * floor["energy_distance"] and
          scores[name]["off_support"] <= ref["off_support"] + OFF_SUPPORT_SLACK]


def _status(measured, goal: float, higher_is_better: bool, unit: str = "") -> str:
  if measured is None:
    return "not measured"
  if higher_is_better:
    return (f"met ({measured / goal:.2f}x the target)" if measured >= goal else
            f"missed by {100 * (1 - measured / goal):.0f}%")
  return (f"met ({goal / measured:.1f}x under)" if measured <= goal else
          f"missed by {measured / goal:.1f}x ({measured - goal:.3g}{unit} over)")


def _fused_rate(rows, stage: str, seeds: int):
  return next((r["steps_per_sec"] for r in rows
               if r["stage"] == stage and r["seeds"] == seeds and r["mode"] == "fused"), None)


def evaluate_targets(results: dict) -> list[dict]:
  """The 2-core CPU targets."""
  rows = []
  for t in CPU_TARGETS:
    higher_is_better, via = "stage" in t, ""
    if higher_is_better:
      measured = _fused_rate(results["rows"], t["stage"], 1)
    elif t.get("swg_action"):
      candidates = same_toy_quality(results["toy"]) if results.get("toy") else [SWG_REFERENCE]
      timed = [(_latency_ms(results, name), name) for name in candidates if _latency_ms(results, name) is not None]
      measured, via = min(timed) if timed else (None, "")
      if not results.get("toy"):
        via += " (toy quality not measured)"
    else:
      measured = _latency_ms(results, t["method"])
    rows.append({"target": t["name"], "measured": measured, "goal": t["target"], "official": t["official"],
                 "status": _status(measured, t["target"], higher_is_better, " ms"), "via": via})
  return rows


# The accelerator targets: 8 vmapped seeds in at most 1.5x one seed's wall time per step, for every stage; the SRPO
# pipeline at the paper's step counts for 5 seeds of one dataset in under an hour (set for one H100).
SEED_SCALING_GOAL, SCALING_SEEDS = 1.5, 8
PIPELINE_SEEDS, SRPO_PIPELINE_HOURS = 5, 1.0


def paper_pipelines() -> dict:
  """Per-seed training steps of each paper pipeline by bench stage, from the paper configs. Both use the bench's
  critic step (SWG's, with a LayerNorm on V's input that SRPO's lacks: a slight overestimate for SRPO)."""
  import swg_jax
  from srpo_jax import configs

  srpo, swg = configs.get_config("paper"), swg_jax.get_config("paper")
  return {"SRPO": ((CRITIC, srpo.critic.num_steps), (SRPO_BEHAVIOUR, srpo.behavior.num_steps),
                   (SRPO_POLICY, srpo.policy.num_steps)),
          "SWG": ((CRITIC, swg.critic.num_steps), (SWG_DIFFUSION, swg.diffusion.num_steps))}


def seconds_per_step(rows, stage: str, seeds: int):
  """(wall seconds of one fused step of `seeds` vmapped seeds, seed count it comes from), or (None, None).

  From the smallest measured count >= seeds (an upper bound: a step of fewer seeds is no slower), else the largest
  count's time scaled by seeds / count (as if vmapping gained nothing)."""
  rates = {r["seeds"]: r["steps_per_sec"] for r in rows if r["stage"] == stage and r["mode"] == "fused"}
  if not rates:
    return None, None
  at_least = [n for n in rates if n >= seeds]
  n = min(at_least) if at_least else max(rates)
  return (1.0 if at_least else seeds / n) / rates[n], n


def pipeline_estimates(results: dict, seeds: int = PIPELINE_SEEDS) -> list[dict]:
  """Training time of each paper pipeline for `seeds` seeds at once, from the measured fused rates (training steps
  only: no evaluation, checkpoints or the weights pass). hours is None when a stage was not measured."""
  estimates = []
  for name, stages in paper_pipelines().items():
    parts = []
    for stage, steps in stages:
      per_step, from_seeds = seconds_per_step(results["rows"], stage, seeds)
      parts.append({"stage": stage, "steps": steps, "from_seeds": from_seeds,
                    "hours": None if per_step is None else steps * per_step / 3600})
    known = [p["hours"] for p in parts if p["hours"] is not None]
    estimates.append({"pipeline": name, "seeds": seeds, "stages": parts,
                      "hours": sum(known) if len(known) == len(parts) else None})
  return estimates


def evaluate_accelerator_targets(results: dict) -> list[dict]:
  rows = []
  for stage in (CRITIC, SWG_DIFFUSION, SRPO_BEHAVIOUR, SRPO_POLICY):
    one, many = _fused_rate(results["rows"], stage, 1), _fused_rate(results["rows"], stage, SCALING_SEEDS)
    ratio = one / many if one and many else None
    rows.append({"target": f"{stage}: wall time of {SCALING_SEEDS} seeds / 1 seed", "measured": ratio,
                 "goal": SEED_SCALING_GOAL, "status": _status(ratio, SEED_SCALING_GOAL, False), "via": ""})
  srpo = next(p for p in results["pipelines"] if p["pipeline"] == "SRPO")
  rows.append({"target": f"SRPO pipeline at the paper's steps, {srpo['seeds']} seeds, hours", "measured": srpo["hours"],
               "goal": SRPO_PIPELINE_HOURS, "status": _status(srpo["hours"], SRPO_PIPELINE_HOURS, False, " h"),
               "via": ""})
  return rows


def _duration(hours: float) -> str:
  return f"{hours:.1f} h" if hours >= 1 else f"{60 * hours:.0f} min"


def _measured(target: dict) -> str:
  measured = "—" if target["measured"] is None else f"{target['measured']:.3g}"
  return measured + (f" ({target['via']})" if target["via"] else "")


def to_markdown(results: dict) -> str:
  m = results["machine"]
  lines = [f"Machine: {m['device']} ({m['platform']}, {m['cpu_count']} CPU cores, {m['cpu']}), jax {m['jax']}; "
           f"measured f32 matmul rate {results['matmul_gflops']:.1f} GFLOP/s.", "",
           "| stage | seeds | mode | steps/s | seed-steps/s | GFLOP/s | % of matmul rate | compile (s) |",
           "|---|---|---|---|---|---|---|---|"]
  for r in results["rows"]:
    lines.append(f"| {r['stage']} | {r['seeds']} | {r['mode']} | {r['steps_per_sec']:.1f} | "
                 f"{r['steps_per_sec'] * r['seeds']:.1f} | {r['achieved_gflops']:.1f} | "
                 f"{100 * r['achieved_gflops'] / results['matmul_gflops']:.0f}% | {r['compile_s']:.1f} |")
  if results.get("latency"):
    states = sorted({r["states"] for r in results["latency"]})
    methods = list(dict.fromkeys(r["method"] for r in results["latency"]))
    toy = results.get("toy")
    lines += ["", "Action selection: median wall time of one call (paper-size networks, hopper dimensions, temperature "
              "1), and for the SWG samplers the quality of the same sampler on a toy (below):", "",
              "| method | " + " | ".join(f"ms, {n} state{'s' if n > 1 else ''}" for n in states) +
              " | toy: energy distance | toy: off support | toy: mean E |", "|---|" + "---|" * (len(states) + 3)]
    for name in methods:
      times = [_latency_ms(results, name, n) for n in states]
      score = toy["scores"].get(name) if toy else None
      quality = (f"{score['energy_distance']:.4f} | {score['off_support']:.3f} | {score['mean_energy']:.3f}"
                 if score else "— | — | —")
      lines.append(f"| {name} | " + " | ".join("—" if t is None else f"{t:.3f}" for t in times) + f" | {quality} |")
    if toy:
      ref = [(name, toy["scores"][name]) for name in ("ground truth again (floor)", "unguided (rho = 0), DDPM-15")]
      lines += ["", f"Toy: SWG on {toy['dataset']} at beta = {toy['beta']:g} (data in [-1, 1], T = 15, small network, "
                f"{toy['train_steps']} training steps in {toy['train_s']:.0f} s), rho = 1, {toy['samples']} samples "
                "per score, against draws of the target mu exp(beta E): energy distance, share of samples off the "
                "target's support (registers blur) and mean energy E (reward; SWG-R keeps the candidate of highest "
                f"sampled w). Target's mean E {toy['truth_mean_energy']:.3f}; "
                + "; ".join(f"{name}: {sc['energy_distance']:.4f} / {sc['off_support']:.3f} / {sc['mean_energy']:.3f}"
                            for name, sc in ref) + "."]
  if results.get("pipelines"):
    described = []
    for p in results["pipelines"]:
      steps = " + ".join(f"{s['steps'] / 1e6:g}M {s['stage'].split(' step')[0]}" for s in p["stages"])
      rates = ", ".join(sorted({f"{s['from_seeds']}-seed rates" for s in p["stages"] if s["from_seeds"]}))
      described.append(f"{p['pipeline']}: " + ("not measured" if p["hours"] is None else
                                               f"{_duration(p['hours'])} ({steps} steps; {rates})"))
    seeds = results["pipelines"][0]["seeds"]
    lines += ["", f"Paper pipelines, {seeds} seeds at once on {m['device']}, estimated from the fused rates above "
              "(training steps only; evaluation and checkpoints excluded): " + "; ".join(described) + "."]
  if results.get("targets") and m["platform"] == "cpu":
    lines += ["", "Targets on this 2-core CPU (issue tracker), next to the official code's numbers on such a CPU:",
              "", "| target | measured | goal | official | status |", "|---|---|---|---|---|"]
    for t in results["targets"]:
      lines.append(f"| {t['target']} | {_measured(t)} | {t['goal']:g} | {t['official']:g} | {t['status']} |")
  elif results.get("targets"):
    lines += ["", f"Targets on an accelerator (issue tracker; the pipeline's is set for one H100), measured on "
              f"{m['device']}:", "", "| target | measured | goal | status |", "|---|---|---|---|"]
    for t in results["targets"]:
      lines.append(f"| {t['target']} | {_measured(t)} | {t['goal']:g} | {t['status']} |")
  return "\n".join(lines) + "\n"


def main(_):
  results = run_benchmarks([int(s) for s in FLAGS.seeds], FLAGS.repeats, FLAGS.stages, FLAGS.fused_steps,
                           FLAGS.min_repeat_s)
  results["latency"] = action_latency(FLAGS.repeats, [int(n) for n in FLAGS.latency_states])
  for row in results["latency"]:
    print(f"{row['method']:55s} states={row['states']:<4d} {row['ms']:8.3f} ms", flush=True)
  if FLAGS.toy_steps:
    results["toy"] = toy_sampler_quality(FLAGS.toy_steps, FLAGS.toy_samples)
    for name, sc in results["toy"]["scores"].items():
      print(f"toy {name:45s} ED {sc['energy_distance']:.4f} off support {sc['off_support']:.3f} "
            f"mean E {sc['mean_energy']:.3f}", flush=True)
  results["pipelines"] = pipeline_estimates(results)
  cpu = results["machine"]["platform"] == "cpu"  # the CPU targets were set for the development CPU
  results["targets"] = evaluate_targets(results) if cpu else evaluate_accelerator_targets(results)
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  write_json_atomic(os.path.join(FLAGS.out_dir, "bench.json"), results)
  markdown = to_markdown(results)
  write_text_atomic(os.path.join(FLAGS.out_dir, "bench.md"), markdown)
  print(markdown)


if __name__ == "__main__":
  app.run(main)
