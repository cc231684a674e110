"""Programs for tests/test_aot_check.py (the AOT check's own oracles): `python -m experiments.aot_check
--program_source=tests.aot_programs:<function>` compiles them instead of the project's."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from common.diffusion import VPDiscrete
from common.solvers import ddpm_sample
from experiments.aot_check.programs import Program

SCHEDULE = VPDiscrete()


def interp_sampler(x, key):
  """A DDPM sampler whose eps looks its noise level up from the traced time with jnp.interp inside the scan body:
  what the guided SWG sampler once did, and what XLA's GPU compiler rejects."""
  grid = np.arange(SCHEDULE.num_steps, dtype=np.float32)
  eps_fn = lambda z, t: z * jnp.interp(t, grid, SCHEDULE.alpha_bars)
  return ddpm_sample(eps_fn, SCHEDULE, x, key, temperature=1.0)


def _placed(mesh, *shapes_dtypes):
  sharding = NamedSharding(mesh, PartitionSpec())
  return tuple(jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for shape, dtype in shapes_dtypes)


def interp_in_scan():
  build = lambda mesh: (jax.jit(interp_sampler), _placed(mesh, ((64, 4), jnp.float32), ((2,), jnp.uint32)))
  return [Program("sample with jnp.interp inside its scan", "sample", build)]


def too_big():
  """200 GiB in, 200 GiB out: more than any target's memory."""
  build = lambda mesh: (jax.jit(lambda x: x + 1.0), _placed(mesh, ((200, 1024, 1024, 256), jnp.float32)))
  return [Program("a 200 GiB array plus one", "sample", build)]


def small_chunk():
  """One training stage at smoke size, fused, 1 seed: quick to compile, with a real loop."""
  from experiments.aot_check import programs

  return [Program("train critic (smoke)", "train", programs.training_chunk("critic", 1, 10, preset="smoke"),
                  steps=10, stage="critic")]


def critic_programs():
  """The paper critic's fused chunk at AOT_TEST_SEEDS seeds (default 1), 10 steps per call."""
  import os

  from experiments.aot_check import programs

  seeds = int(os.environ.get("AOT_TEST_SEEDS", "1"))
  return [Program("train critic", "train", programs.training_chunk("critic", seeds, 10), seeds=seeds, steps=10,
                  stage="critic")]
