"""`make bench`: training-step throughput of the fused trainer, with the machine named.

Measures steps/s of each stage's step for 1 and 8 vmapped seeds, fused (`steps_per_call` steps per jit call with
lax.scan) and one step per call, next to the machine's measured float32 matmul rate. Median of several timed repeats
after a warm-up call. Writes results/bench.json and results/bench.md.

  python -m experiments.bench --seeds=1,8 --repeats=5
"""
from __future__ import annotations

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
flags.DEFINE_list("seeds", ["1", "8"], "Seed counts to measure.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per measurement (median reported).")
flags.DEFINE_integer("fused_steps", 0, "Steps per jit call in fused mode (0: the stage's default, ~seconds a call).")
flags.DEFINE_string("out_dir", "results", "Where bench.json / bench.md go.")
flags.DEFINE_list("stages", ["critic", "swg", "srpo_behavior", "srpo_policy"], "Training stages to measure.")

HOPPER = dict(obs_dim=11, action_dim=3)


def machine_description() -> dict:
  device = jax.devices()[0]
  return {"platform": jax.default_backend(), "device": getattr(device, "device_kind", str(device)),
          "num_devices": jax.device_count(), "cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
  """Measured float32 matmul rate, the ceiling the training steps are compared to."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - start)
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


def time_chunk(step_fn, state, data, keys, steps_per_call: int, calls: int, repeats: int) -> dict:
  """Median steps/s of `calls` back-to-back jitted calls of `steps_per_call` scanned steps, and compile time."""
  chunk = jax.jit(make_chunk_fn(step_fn, steps_per_call), donate_argnums=0)
  start = time.perf_counter()
  compiled = chunk.lower(state, data, keys, jnp.uint32(0)).compile()
  compile_s = time.perf_counter() - start
  state = jax.tree.map(jnp.copy, state)
  state, _ = compiled(state, data, keys, jnp.uint32(0))  # warm-up
  jax.block_until_ready(state)
  rates = []
  for r in range(repeats):
    start = time.perf_counter()
    for c in range(calls):
      state, metrics = compiled(state, data, keys, jnp.uint32((r * calls + c + 1) * steps_per_call))
    jax.block_until_ready((state, metrics))
    rates.append(calls * steps_per_call / (time.perf_counter() - start))
  return {"steps_per_sec": statistics.median(rates), "compile_s": compile_s}


def critic_stage():
  cfg = ml_collections.ConfigDict(dict(hidden=(256, 256), value_layer_norm=True, lr=3e-4, expectile=0.7,
                                       discount=0.99, polyak=0.005, batch_size=256))
  init = lambda key: iql.init_critic(key, HOPPER["obs_dim"], HOPPER["action_dim"], cfg)
  return "IQL critic step (b256)", iql.make_critic_step(cfg), init, random_data()


def swg_diffusion_stage():
  import swg_jax
  from swg_jax import model as swg_model

  dc = swg_jax.get_config("paper").diffusion
  base = random_data()
  data = swg_model.WeightedData(observations=base.observations, actions=base.actions,
                                weights=jax.nn.sigmoid(base.rewards))
  init = lambda key: swg_model.init_diffusion(key, HOPPER["obs_dim"], HOPPER["action_dim"], dc)
  return "SWG diffusion step (b1024)", swg_model.make_diffusion_step(HOPPER["action_dim"], dc), init, data


def srpo_behavior_stage():
  from srpo_jax import behavior, configs

  bc = configs.get_config("paper").behavior
  init = lambda key: behavior.init_behavior(key, HOPPER["obs_dim"], HOPPER["action_dim"], bc)
  return "SRPO behaviour step (b2048)", behavior.make_behavior_step(bc), init, random_data()


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
  return "SRPO policy step (b256)", step, init, random_data().observations


# Stage -> (builder, default steps per fused call): heavy stages take fewer so one call lasts a few seconds.
STAGES = {"critic": (critic_stage, 200), "swg": (swg_diffusion_stage, 10),
          "srpo_behavior": (srpo_behavior_stage, 8), "srpo_policy": (srpo_policy_stage, 100)}


def run_benchmarks(seed_counts, repeats, stages, fused_steps: int = 0) -> dict:
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
        m = time_chunk(step_fn, state, data, keys, steps, calls, repeats)
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


def action_latency(repeats: int) -> list[dict]:
  """Wall time of one action-selection call (host call to result) for randomly initialised paper-size networks:
  the cost does not depend on the weights."""
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

  @jax.jit
  def diffusion_policy(obs, key):  # SRPO's behaviour model sampled with DPM-Solver++ (15 steps)
    return behavior.sample_behavior(behavior.behavior_eps_fn(beh_params, beh_net), obs, A, key, num_steps=15)

  rows = []
  for states in (1, 64, 256):
    obs = jax.random.normal(jax.random.PRNGKey(1), (states, S))
    obs_np = np.asarray(obs)
    methods = {"SRPO policy (one MLP forward)": lambda: srpo_jax.act(pol, obs)}
    if states <= 64:
      methods.update({
          "SWG guided DDPM-15": lambda: swg_jax.sample(swg, obs_np, key, sampler="ddpm"),
          "SWG guided DPM-Solver++ 10 steps": lambda: swg_jax.sample(swg, obs_np, key, sampler="dpm", num_steps=10),
          "SWG guided DPM-Solver++ 5 steps": lambda: swg_jax.sample(swg, obs_np, key, sampler="dpm", num_steps=5),
          "SWG-R DDPM-15, 16 candidates": lambda: swg_jax.sample(swg, obs_np, key, temperature=1.0,
                                                                 num_candidates=16),
          "diffusion policy: SRPO behaviour, DPM-Solver++ 15": lambda: diffusion_policy(obs, key),
      })
    for name, fn in methods.items():
      rows.append({"method": name, "states": states, "ms": _median_ms(fn, repeats)})
  return rows


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
    lines += ["", "Action selection latency (median wall time of one call, paper-size networks, hopper dimensions):", "",
              "| method | states | ms |", "|---|---|---|"]
    lines += [f"| {r['method']} | {r['states']} | {r['ms']:.3f} |" for r in results["latency"]]
  return "\n".join(lines) + "\n"


def main(_):
  results = run_benchmarks([int(s) for s in FLAGS.seeds], FLAGS.repeats, FLAGS.stages, FLAGS.fused_steps)
  results["latency"] = action_latency(FLAGS.repeats)
  for row in results["latency"]:
    print(f"{row['method']:40s} states={row['states']:<4d} {row['ms']:8.3f} ms", flush=True)
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  write_json_atomic(os.path.join(FLAGS.out_dir, "bench.json"), results)
  markdown = to_markdown(results)
  write_text_atomic(os.path.join(FLAGS.out_dir, "bench.md"), markdown)
  print(markdown)


if __name__ == "__main__":
  app.run(main)
