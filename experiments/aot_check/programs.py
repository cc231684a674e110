"""Every jitted program the project runs, as something to compile for a target without running it.

A `Program` builds, for a mesh of the target's devices, the jitted function the library itself runs and abstract
arguments (`jax.ShapeDtypeStruct`, placed on that mesh) for it; nothing is computed and no device is needed. The
training chunks are `common.training.jitted_chunk_fn`, as a Trainer runs them; the samplers are the library's jitted entry
points with every static option; the evaluation policies are what `run.evaluate_policy` calls.

Sizes are the papers' (paper networks, hopper dimensions, batch sizes of the paper configs) at the precision an
accelerator gets by default: `compute_dtype="auto"` becomes bfloat16, the critics stay float32. A training chunk is
compiled with a dataset of COMPILED_ROWS transitions: XLA's cost analysis counts a batch gathered from the dataset as
a read of the whole dataset, which at 2M transitions would be most of a step's bytes. The memory the full dataset
needs on the device (`Program.dataset_bytes`, DATASET_SIZE transitions) is added to the program's peak instead.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common.training import jitted_chunk_fn, seed_keys
from experiments.bench import training as bench_training

OBS_DIM, ACTION_DIM = bench_training.HOPPER["obs_dim"], bench_training.HOPPER["action_dim"]
DATASET_SIZE = 2_000_000  # D4RL's largest locomotion files (medium-expert)
COMPILED_ROWS = 8192  # the dataset a training chunk is compiled with (see above); more than any batch
ROW_BYTES = 4 * (2 * OBS_DIM + ACTION_DIM + 2)  # float32 observation, action, reward, next observation, mask
EVAL_SEEDS, EVAL_EPISODES = 5, 20  # the papers' seeds, config.eval.episodes: one policy call per env step
SAMPLER_STATES = 64
# compute_dtype as an accelerator resolves it: "auto" is bf16 there (common.networks.compute_dtype).
ACCELERATOR_PRECISION = {"compute_dtype": lambda value: "bfloat16" if value == "auto" else value}
FLOAT32 = {"compute_dtype": "float32"}

Build = Callable[[Mesh], tuple[Callable, tuple]]


@dataclasses.dataclass(frozen=True)
class Program:
  """One program: `build(mesh) -> (jitted, abstract args)`. steps: training steps (or sampler calls) one call runs,
  for per-step figures; devices: how many the mesh must have (a seed-sharded program wants several)."""

  name: str
  group: str  # "train", "sample", "evaluate", "sharded"
  build: Build
  seeds: int = 1
  steps: int = 1
  devices: int = 1
  stage: str = ""  # the training stage (bench row name) a train/sharded program runs
  dataset_bytes: int = 0  # device memory of the full dataset beyond the COMPILED_ROWS it was compiled with


def place(tree: Any, mesh: Mesh, spec: PartitionSpec = PartitionSpec()) -> Any:
  """Abstract arrays (shape, dtype) of `tree`'s leaves, laid out on `mesh` by `spec`."""
  sharding = NamedSharding(mesh, spec)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def abstract(shape, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, dtype)


def offline_data(size: int = COMPILED_ROWS):
  from common.data import OfflineData

  return OfflineData(observations=abstract((size, OBS_DIM)), actions=abstract((size, ACTION_DIM)),
                     rewards=abstract((size,)), next_observations=abstract((size, OBS_DIM)), masks=abstract((size,)))


# ---------------------------------------------------------------------------------------------------------- training

def _stage_data(name: str, seeds: int):
  """The data a stage's chunk gets and which of it has a seed axis (SWG: one weighting per seed's critic)."""
  from swg_jax.model import WeightedData

  data = offline_data()
  if name == "swg":
    return (WeightedData(observations=data.observations, actions=data.actions,
                         weights=abstract((seeds, COMPILED_ROWS))), WeightedData(False, False, True))
  if name == "srpo_policy":
    return data.observations, False
  return data, False


def training_chunk(name: str, seeds: int, steps: int, overrides: dict | None = None, sharded: bool = False,
                   preset: str = "paper") -> Build:
  """A bench stage's fused chunk (`bench_training.STAGES[name]`), as `Trainer` jits it."""
  make_stage, _ = bench_training.STAGES[name]

  def build(mesh: Mesh):
    stage = make_stage(overrides, preset=preset)
    keys = seed_keys(range(seeds))
    state = jax.eval_shape(jax.vmap(stage.init_fn), keys)
    data, per_seed = _stage_data(name, seeds)
    seed_spec = PartitionSpec("seeds") if sharded else PartitionSpec()
    place_part = lambda flag, part: place(part, mesh, seed_spec if flag else PartitionSpec())
    placed_data = (place_part(per_seed, data) if isinstance(per_seed, bool) else
                   jax.tree.map(place_part, per_seed, data))  # per_seed: a pytree prefix of data
    args = (place(state, mesh, seed_spec), placed_data, place(keys, mesh, seed_spec), place(jnp.uint32(0), mesh))
    return jitted_chunk_fn(stage.step_fn, steps, per_seed, mesh if sharded else None), args

  return build


def sac_chunk(seeds: int, steps: int = 250) -> Build:
  """The recipes' SAC update chunk (K updates on host-sampled batches), vmapped over seeds when seeds > 1."""
  from common.recipes import sac

  def build(mesh: Mesh):
    config = sac.SACConfig()
    chunk = sac.make_update_chunk(config)
    state = jax.eval_shape(lambda k: sac.init_sac(k, OBS_DIM, ACTION_DIM, config), jax.random.PRNGKey(0))
    batches = sac.Batch(observations=abstract((steps, config.batch_size, OBS_DIM)),
                        actions=abstract((steps, config.batch_size, ACTION_DIM)),
                        rewards=abstract((steps, config.batch_size)),
                        next_observations=abstract((steps, config.batch_size, OBS_DIM)),
                        masks=abstract((steps, config.batch_size)))
    key = jax.random.PRNGKey(0)
    if seeds == 1:
      return chunk, (place(state, mesh), place(batches, mesh), place(key, mesh))
    stack = lambda tree: jax.tree.map(lambda x: abstract((seeds, *x.shape), x.dtype), tree)
    return (jax.jit(jax.vmap(chunk), donate_argnums=0),
            (place(stack(state), mesh), place(stack(batches), mesh), place(stack(key), mesh)))

  return build


def training_programs(seed_counts=(1, 8), steps: int = 1000, overrides=None, suffix: str = "") -> list[Program]:
  """Every training stage at every seed count: critic, SWG diffusion, SRPO behaviour, SRPO policy (the paper
  configs' steps per call) and the recipes' SAC (250 updates per call, as its online loop fuses them)."""
  overrides = ACCELERATOR_PRECISION if overrides is None else overrides
  programs = []
  for name in bench_training.STAGES:
    for n in seed_counts:
      programs.append(Program(f"train {name}{suffix}", "train", training_chunk(name, n, steps, overrides), seeds=n,
                              steps=steps, stage=name, dataset_bytes=extra_dataset_bytes(name, n)))
  for n in seed_counts:
    programs.append(Program(f"train sac{suffix}", "train", sac_chunk(n), seeds=n, steps=250, stage="sac"))
  return programs


def extra_dataset_bytes(name: str, seeds: int, devices: int = 1) -> int:
  """Device memory of DATASET_SIZE transitions beyond the COMPILED_ROWS compiled (each device holds all of them;
  SWG's per-seed weights are split over the devices like the seeds)."""
  rows = DATASET_SIZE - COMPILED_ROWS
  per_row = {"swg": 4 * (OBS_DIM + ACTION_DIM) + 4 * seeds // devices, "srpo_policy": 4 * OBS_DIM}.get(name, ROW_BYTES)
  return rows * per_row


def sharded_programs(devices: int = 8, seed_counts=(8, 32), steps: int = 1000) -> list[Program]:
  """The seed-sharded chunks (several accelerators, or processes): the seed axis split over `devices`."""
  return [Program(f"sharded {name}", "sharded", training_chunk(name, n, steps, ACCELERATOR_PRECISION, sharded=True),
                  seeds=n, steps=steps, devices=devices, stage=name,
                  dataset_bytes=extra_dataset_bytes(name, n, devices))
          for name in bench_training.STAGES for n in seed_counts]


# ---------------------------------------------------------------------------------------------------------- samplers

def _swg_model(seeds: int | None = None):
  """An abstract paper-size SWG model with its critic (SWG-R), seed-stacked when `seeds` is given."""
  import swg_jax
  from common import iql
  from swg_jax import model as model_lib
  from swg_jax.policy import SWGModel

  config = swg_jax.get_config("paper")
  bench_training.apply_overrides([config.diffusion, config.critic], ACCELERATOR_PRECISION)
  dc = config.diffusion
  net = model_lib.make_network(ACTION_DIM, dc)
  init = lambda k: net.init(k, jnp.zeros((1, ACTION_DIM + 1)), jnp.zeros((1,)), jnp.zeros((1, OBS_DIM)))
  init_critic = lambda k: iql.init_critic(k, OBS_DIM, ACTION_DIM, config.critic)
  key = jax.random.PRNGKey(0)
  if seeds is None:
    params, critic = jax.eval_shape(init, key), jax.eval_shape(init_critic, key)
  else:
    keys = seed_keys(range(seeds))
    params, critic = jax.eval_shape(jax.vmap(init), keys), jax.eval_shape(jax.vmap(init_critic), keys)
  return SWGModel(params=params, critic=critic, net=net, schedule=model_lib.make_schedule(dc), obs_dim=OBS_DIM,
                  action_dim=ACTION_DIM, sampling_defaults=tuple(sorted(config.sampling.to_dict().items())))


# Every static configuration of swg_jax.sample that compiles its own program: both samplers, guidance off and on
# (w_prediction only matters with guidance), deterministic and stochastic, DPM-Solver++ of every order, and SWG-R
# selecting by Q or by w.
SWG_SAMPLE_OPTIONS = (
    [dict(sampler=s, guidance_scale=0, temperature=t) for s in ("ddpm", "dpm") for t in (0, 1.0)]
    + [dict(sampler=s, guidance_scale=1.0, w_prediction=w, temperature=t)
       for s in ("ddpm", "dpm") for w in ("tweedie", "official") for t in (0, 1.0)]
    + [dict(sampler="dpm", guidance_scale=1.0, order=o) for o in (1, 3)]
    + [dict(sampler=s, guidance_scale=1.0, temperature=1.0, num_candidates=16, select=sel)
       for s in ("ddpm", "dpm") for sel in ("q", "w")])
SRPO_BEHAVIOUR_ORDERS = (1, 2, 3)


def _options_name(opts: dict) -> str:
  return " ".join(f"{k}={v}" for k, v in opts.items())


def swg_sampler(opts: dict, states: int = SAMPLER_STATES) -> Build:
  def build(mesh: Mesh):
    import swg_jax
    from swg_jax import policy

    model = _swg_model()
    checked = swg_jax.sampling_options(model, **opts)
    args = (place(model, mesh), place(abstract((states, OBS_DIM)), mesh), place(jax.random.PRNGKey(0), mesh))
    return _with_static(policy._sample, checked), args

  return build


def _with_static(jitted, static: dict):
  """`jitted` (a jax.jit with static keyword arguments) with those arguments bound, lowerable as f.lower(*args)."""

  class Bound:
    def lower(self, *args):
      return jitted.lower(*args, **static)

  return Bound()


def srpo_behaviour_sampler(order: int, states: int = SAMPLER_STATES, num_steps: int = 15) -> Build:
  """SRPO's behaviour sampler (DPM-Solver++ on the behaviour ODE; the diffusion-policy baseline and diagnostics)."""

  def build(mesh: Mesh):
    from srpo_jax import behavior, configs

    bc = configs.get_config("paper").behavior
    bench_training.apply_overrides([bc], ACCELERATOR_PRECISION)
    net = behavior.behavior_net(ACTION_DIM, bc)
    params = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, ACTION_DIM)), jnp.zeros((1,)),
                            jnp.zeros((1, OBS_DIM)))
    fn = jax.jit(lambda p, obs, key: behavior.sample_behavior(behavior.behavior_eps_fn(p, net), obs, ACTION_DIM, key,
                                                              num_steps=num_steps, order=order))
    return fn, (place(params, mesh), place(abstract((states, OBS_DIM)), mesh), place(jax.random.PRNGKey(0), mesh))

  return build


def sampler_programs() -> list[Program]:
  programs = [Program(f"sample swg {_options_name(o)}", "sample", swg_sampler(o)) for o in SWG_SAMPLE_OPTIONS]
  programs += [Program(f"sample srpo-behaviour order={o}", "sample", srpo_behaviour_sampler(o))
               for o in SRPO_BEHAVIOUR_ORDERS]
  return programs


# -------------------------------------------------------------------------------------------------------- evaluation

def swg_evaluation(overrides: dict) -> Build:
  """What the SWG pipeline evaluates with: `seed_policy` of the seed-stacked model on [seeds, episodes, S]."""

  def build(mesh: Mesh):
    import swg_jax
    from swg_jax import policy

    model = _swg_model(EVAL_SEEDS)
    opts = swg_jax.sampling_options(model, **overrides)
    args = (place(model, mesh), place(abstract((EVAL_SEEDS, EVAL_EPISODES, OBS_DIM)), mesh),
            place(jax.random.PRNGKey(0), mesh))
    return _with_static(policy.seed_actions, opts), args

  return build


def srpo_evaluation() -> Build:
  def build(mesh: Mesh):
    from srpo_jax import configs, policy

    pc = configs.get_config("paper").policy
    net = policy.policy_net(ACTION_DIM, pc)
    params = jax.eval_shape(jax.vmap(lambda k: net.init(k, jnp.zeros((1, OBS_DIM)))), seed_keys(range(EVAL_SEEDS)))
    stacked = policy.Policy(params=params, action_dim=ACTION_DIM, hidden=pc.hidden, num_layers=pc.num_layers,
                            stacked=True)
    return policy.seed_act, (place(stacked, mesh), place(abstract((EVAL_SEEDS, EVAL_EPISODES, OBS_DIM)), mesh))

  return build


def evaluation_programs() -> list[Program]:
  import swg_jax

  swgr = dict(swg_jax.get_config("paper").resampling)
  return [Program("evaluate swg", "evaluate", swg_evaluation({})),
          Program(f"evaluate swg-r ({_options_name(swgr)})", "evaluate", swg_evaluation(swgr)),
          Program("evaluate srpo", "evaluate", srpo_evaluation())]


def all_programs(training_seeds=(1, 8), sharded_devices: int = 8) -> list[Program]:
  programs = training_programs(training_seeds) + sampler_programs() + evaluation_programs()
  if sharded_devices > 1:
    programs += sharded_programs(sharded_devices)
  return programs
