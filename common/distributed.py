"""Several processes (hosts) training one set of seeds: set-up, which process writes, and gathering results.

One process per host (or per accelerator) joins with `initialize`. Every process then runs the same program: the
Trainer spreads the seed axis over the devices of all processes, and gathers each finished stage back to every
process, so what follows a stage (critic weights, evaluation) runs the same everywhere. Only process 0 writes files;
checkpoints are written by all of them together (orbax), into a workdir every process must see.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
  """`jax.distributed.initialize`; unset arguments ("", 0, -1) are detected (SLURM, Open MPI, TPU pods).

  Must run before anything touches a device.
  """
  jax.distributed.initialize(coordinator_address=coordinator_address or None,
                             num_processes=num_processes or None,
                             process_id=None if process_id < 0 else process_id)


def is_main_process() -> bool:
  """True in the process that writes metrics, evaluations and reports (process 0; the only one when not
  distributed)."""
  return jax.process_index() == 0


def to_host(tree: Any) -> Any:
  """Numpy copy of a pytree of arrays; arrays spread over several processes are gathered whole into each."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def check_seed_count(num_seeds: int, processes: int | None = None) -> None:
  """ValueError unless `processes` (default: those taking part) can share `num_seeds` seeds evenly."""
  processes = jax.process_count() if processes is None else processes
  if num_seeds % processes:
    raise ValueError(f"{num_seeds} seeds cannot be shared evenly by {processes} processes: give a seed count that "
                     f"is a multiple of {processes}")


def mesh_devices(num_seeds: int, devices: list) -> list:
  """The devices a seed axis of `num_seeds` is spread over: as many as divide it evenly, the same number from every
  process (so every process holds a part), ordered by process.

  Raises ValueError when the processes cannot share the seeds evenly.
  """
  by_process: dict[int, list] = {}
  for d in devices:
    by_process.setdefault(d.process_index, []).append(d)
  processes = len(by_process)
  check_seed_count(num_seeds, processes)
  per_process = min(len(ds) for ds in by_process.values())
  k = max(k for k in range(1, per_process + 1) if (num_seeds // processes) % k == 0)
  return [d for p in sorted(by_process) for d in by_process[p][:k]]


def put_global(tree: Any, sharding) -> Any:
  """`jax.device_put` of a pytree every process holds whole onto a (possibly multi-process) sharding."""
  if jax.process_count() > 1:  # arrays committed to one local device cannot be moved across processes directly
    tree = jax.tree.map(np.asarray, tree)
  return jax.device_put(tree, sharding)


def any_process(flag: bool) -> bool:
  """Whether `flag` is True in any process (every process must call it: one small collective when distributed)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], np.int32))))


def main_process_flag(flag: bool) -> bool:
  """Process 0's `flag`, in every process (a broadcast when distributed)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(int(flag), np.int32)))


def barrier(name: str) -> None:
  """Wait until every process gets here (nothing to wait for in one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
