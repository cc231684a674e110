"""The bench's training rows: each stage's step at hopper dimensions with paper-size networks, timed fused and one
step per call for several vmapped seed counts, next to the machine's measured float32 matmul rate."""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from common import iql
from common.data import OfflineData
from common.offline_data import Rows
from common.training import init_seeds, make_chunk_fn, seed_keys
from experiments.bench.flops import step_flops_per_seed

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
  """XLA's FLOP count of one step for all seeds (from a 1-step call: cost analysis counts a scan body once). Right on
  a CPU; on a GPU it undercounts vmapped rows, so the bench's GFLOP/s come from bench_flops' shape count instead."""
  compiled = jax.jit(make_chunk_fn(step_fn, 1)).lower(state, data, keys, jnp.uint32(0)).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def time_chunk(step_fn, state, data, keys, steps_per_call: int, calls: int, repeats: int,
               min_seconds: float = 0.5, inspect: Callable | None = None, data_per_seed=False) -> dict:
  """Median steps/s of back-to-back jitted calls of `steps_per_call` scanned steps, and compile time. Each repeat
  makes at least `calls` calls, and more while one call lasts less than `min_seconds` (fast accelerators).
  inspect(compiled, steps_per_call) -> dict: more fields for the result, from the compiled program."""
  chunk = jax.jit(make_chunk_fn(step_fn, steps_per_call, data_per_seed), donate_argnums=0)
  start = time.perf_counter()
  compiled = chunk.lower(state, data, keys, jnp.uint32(0)).compile()
  compile_s = time.perf_counter() - start
  extra = inspect(compiled, steps_per_call) if inspect else {}
  state = jax.tree.map(jnp.copy, state)
  start = time.perf_counter()
  state, _, _ = compiled(state, data, keys, jnp.uint32(0))  # warm-up, also sizes the repeats
  jax.block_until_ready(state)
  calls = max(calls, _calls_lasting(min_seconds, time.perf_counter() - start))
  rates = []
  for r in range(repeats):
    start = time.perf_counter()
    for c in range(calls):
      state, metrics, finite = compiled(state, data, keys, jnp.uint32((r * calls + c + 1) * steps_per_call))
    jax.block_until_ready((state, metrics, finite))
    rates.append(calls * steps_per_call / (time.perf_counter() - start))
  return {"steps_per_sec": statistics.median(rates), "compile_s": compile_s, "calls": calls, **extra}


POPULATION_DATASETS = 3  # the datasets of one environment a population row's members are spread over
POPULATION_MODE = "population"


def population_data(data, members: int, datasets: int = POPULATION_DATASETS):
  """`data` as `datasets` equal parts with members spread over them (member m samples part m % datasets only), as a
  population of one environment's datasets reads them, and the Trainer's data_per_seed flags for it."""
  size = jax.tree.leaves(data)[0].shape[0] // datasets
  rows = Rows(data=data, offset=jnp.asarray([(m % datasets) * size for m in range(members)], jnp.int32),
              count=jnp.full((members,), size, jnp.int32))
  return rows, Rows(data=False, offset=True, count=True)


class Stage(NamedTuple):
  """One training stage as the bench runs it: a one-seed step, a one-seed init and the (shared) data."""

  name: str
  step_fn: Callable
  init_fn: Callable
  data: Any
  overridden: frozenset = frozenset()  # the override fields this stage's configs had
  population: bool = False  # whether its step reads member Rows (a population over datasets: POPULATION_MODE rows)


def apply_overrides(configs: list, overrides: dict | None) -> frozenset:
  """Set each field of `overrides` on every config of `configs` that has it (e.g. compute_dtype on the network and
  critic configs of a stage); a callable value maps the config's value to the new one. Returns the fields that were
  set somewhere."""
  used = set()
  for field, value in (overrides or {}).items():
    for cfg in configs:
      if field in cfg:
        cfg[field] = value(cfg[field]) if callable(value) else value
        used.add(field)
  return frozenset(used)


def critic_stage(overrides: dict | None = None, preset: str = "paper") -> Stage:
  import swg_jax

  cfg = swg_jax.get_config(preset).critic  # SWG's paper critic: LayerNorm on V's input, hidden 256, batch 256
  used = apply_overrides([cfg], overrides)
  init = lambda key: iql.init_critic(key, HOPPER["obs_dim"], HOPPER["action_dim"], cfg)
  return Stage(CRITIC, iql.make_critic_step(cfg), init, random_data(), used, population=True)


def swg_diffusion_stage(overrides: dict | None = None, preset: str = "paper") -> Stage:
  import swg_jax
  from swg_jax import model as swg_model

  dc = swg_jax.get_config(preset).diffusion
  used = apply_overrides([dc], overrides)
  base = random_data()
  data = swg_model.WeightedData(observations=base.observations, actions=base.actions,
                                weights=jax.nn.sigmoid(base.rewards))
  init = lambda key: swg_model.init_diffusion(key, HOPPER["obs_dim"], HOPPER["action_dim"], dc)
  return Stage(SWG_DIFFUSION, swg_model.make_diffusion_step(HOPPER["action_dim"], dc), init, data, used)


def srpo_behavior_stage(overrides: dict | None = None, preset: str = "paper") -> Stage:
  from srpo_jax import behavior, configs

  bc = configs.get_config(preset).behavior
  used = apply_overrides([bc], overrides)
  init = lambda key: behavior.init_behavior(key, HOPPER["obs_dim"], HOPPER["action_dim"], bc)
  return Stage(SRPO_BEHAVIOUR, behavior.make_behavior_step(bc), init, random_data(), used, population=True)


def srpo_policy_stage(overrides: dict | None = None, preset: str = "paper") -> Stage:
  from srpo_jax import behavior, configs, policy

  c = configs.get_config(f"hopper-medium-v2:{preset}")
  used = apply_overrides([c.critic, c.behavior, c.policy], overrides)
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
  critic_q_apply = jax.eval_shape(init_critic, jax.random.PRNGKey(0)).q.apply_fn  # the module only: no init run
  step = policy.make_policy_step(eps_apply, q_apply, c.policy)
  return Stage(SRPO_POLICY, step, init, random_data().observations, used, population=True)


# Stage -> (builder(overrides, preset), default steps per fused call): heavy stages take fewer so one call lasts a few
# seconds. The rows carry the paper networks' names; the "smoke" preset (tiny networks, wiring checks) keeps them.
STAGES = {"critic": (critic_stage, 200), "swg": (swg_diffusion_stage, 10),
          "srpo_behavior": (srpo_behavior_stage, 8), "srpo_policy": (srpo_policy_stage, 100)}


def measure_stage(stage: Stage, n_seeds: int, steps_per_call: int, repeats: int, min_seconds: float = 0.5,
                  modes=("fused", "one step per call"), device: str = "", xla_count: bool = True,
                  inspect: Callable | None = None) -> list[dict]:
  """Rows of one stage at one seed count: steps/s per mode, FLOPs per step counted from the matmul shapes (N times one
  seed's; bench_flops) with XLA's cost-analysis count beside it (one more compile; xla_count=False skips it), and the
  GFLOP/s those shapes give. inspect: see `time_chunk` (fused mode only). POPULATION_MODE (a stage that has it):
  fused, the members spread over POPULATION_DATASETS parts of the data, each sampling its own (`population_data`)."""
  keys = seed_keys(range(n_seeds))
  state = jax.jit(lambda k: init_seeds(stage.init_fn, k))(keys)  # one compile, not one per op of a vmapped init
  flops = n_seeds * step_flops_per_seed(stage.step_fn, state, stage.data, keys)
  xla_flops = flops_per_step(stage.step_fn, state, stage.data, keys) if xla_count else None
  plan = {"fused": (steps_per_call, 1), "one step per call": (1, max(1, steps_per_call // 2)),
          POPULATION_MODE: (steps_per_call, 1)}
  rows = []
  for mode in modes:
    if mode == POPULATION_MODE and not stage.population:
      continue
    steps, calls = plan[mode]
    data, per_seed = (population_data(stage.data, n_seeds) if mode == POPULATION_MODE else (stage.data, False))
    m = time_chunk(stage.step_fn, state, data, keys, steps, calls, repeats, min_seconds,
                   inspect if mode == "fused" else None, per_seed)
    gflops = flops * m["steps_per_sec"] / 1e9
    rows.append({"stage": stage.name, "seeds": n_seeds, "mode": mode, **m, "flops_per_step": flops,
                 "xla_flops_per_step": xla_flops, "achieved_gflops": gflops, "device": device})
    print(f"{stage.name:28s} seeds={n_seeds:<2d} {mode:18s} {m['steps_per_sec']:9.1f} steps/s "
          f"({m['steps_per_sec'] * n_seeds:9.1f} seed-steps/s) {gflops:6.1f} GFLOP/s  compile {m['compile_s']:.1f}s",
          flush=True)
  return rows


def run_benchmarks(seed_counts, repeats, stages, fused_steps: int = 0, min_seconds: float = 0.5,
                   populations: bool = True) -> dict:
  """stages: names from STAGES. One-step-per-call mode times half as many calls as the fused call has steps;
  populations: also POPULATION_MODE rows (critic, SRPO behaviour and policy)."""
  modes = ("fused", "one step per call") + ((POPULATION_MODE,) if populations else ())
  results = {"machine": machine_description(), "matmul_gflops": matmul_gflops(), "rows": []}
  for name in stages:
    make_stage, default_steps = STAGES[name]
    stage = make_stage()
    for n_seeds in seed_counts:
      results["rows"] += measure_stage(stage, n_seeds, fused_steps or default_steps, repeats, min_seconds,
                                       modes=modes, device=results["machine"]["device"])
  return results
