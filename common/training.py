"""Fused multi-seed training.

A step is a pure function `step(state, data, key) -> (state, metrics)` for ONE seed. This module turns it into a jitted
call that runs K steps with `lax.scan` for every seed at once (`vmap` over a leading seed axis of `state` and `keys`,
the data shared), optionally sharding the seed axis over devices (of every process, when several train together:
`common.distributed`), and drives that call from Python with a progress bar, JSONL metrics, periodic checkpoints and
resume.

The key of global step n for a seed is `fold_in(seed_key, n)`: results do not depend on how the steps are chunked, so
a fused run, a one-step-per-call run and a run resumed from a checkpoint are the same computation.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common import distributed
from common.checkpoint import Checkpointer
from common.networks import FROZEN

StepFn = Callable[[Any, Any, jax.Array], tuple[Any, dict]]


def make_optimizer(learning_rate, *, weight_decay: float = 0.0) -> optax.GradientTransformation:
  """Adam (or AdamW when weight_decay > 0) that leaves parameters whose path names `FROZEN` untouched.

  `learning_rate` may be a float or an optax schedule. Frozen parameters (e.g. fixed Fourier features) get zero
  updates, so weight decay cannot shrink them either.
  """
  if weight_decay > 0:
    base = optax.adamw(learning_rate, weight_decay=weight_decay)
  else:
    base = optax.adam(learning_rate)

  def labels(params):
    def label(path, _):
      return "frozen" if any(FROZEN in str(getattr(k, "key", k)) for k in path) else "train"

    return jax.tree_util.tree_map_with_path(label, params)

  return optax.multi_transform({"train": base, "frozen": optax.set_to_zero()}, labels)


def seed_keys(seeds) -> jax.Array:
  """One raw uint32 PRNG key per seed.  [N, 2]"""
  return jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])


def init_seeds(init_fn: Callable[[jax.Array], Any], keys: jax.Array) -> Any:
  """Stack per-seed initial states along a leading seed axis: `init_fn(key) -> state` vmapped over keys."""
  return jax.vmap(init_fn)(keys)


def seed_stage_keys(keys: jax.Array, stage: int) -> jax.Array:
  """Per-seed keys of one pipeline stage (init or training of critic, model, ...): fold_in(seed_key, stage).  [N, 2]"""
  return jax.vmap(lambda k: jax.random.fold_in(k, stage))(keys)


def _per_data_field(data_per_seed, per_seed, shared):
  """`per_seed` / `shared` for all of the data (a bool) or per field (a pytree prefix of bools): vmap axes or
  shardings."""
  if isinstance(data_per_seed, bool):
    return per_seed if data_per_seed else shared
  return jax.tree.map(lambda flag: per_seed if flag else shared, data_per_seed)


def make_chunk_fn(step_fn: StepFn, num_steps: int, data_per_seed=False) -> Callable:
  """`chunk(states, data, keys, start_step) -> (states, mean metrics [N])`: num_steps scanned steps per seed.

  The data is shared by all seeds; with `data_per_seed=True` all of it has a leading seed axis (e.g. one weighting
  each), and with a pytree prefix of bools (e.g. `WeightedData(False, False, True)`) only the fields marked True do.
  """

  def one_seed(state, data, key, start_step):
    def body(state, i):
      return step_fn(state, data, jax.random.fold_in(key, start_step + i))

    state, metrics = jax.lax.scan(body, state, jnp.arange(num_steps, dtype=jnp.uint32))
    return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

  return jax.vmap(one_seed, in_axes=(0, _per_data_field(data_per_seed, 0, None), 0, None))


def jit_chunk(step_fn: StepFn, num_steps: int, data_per_seed=False, mesh: Mesh | None = None) -> Callable:
  """The jitted chunk a Trainer runs (`make_chunk_fn`, state donated); with a `mesh` (`seed_mesh`) the seed axis of
  the state, the keys and the per-seed data is sharded over its devices and the rest replicated."""
  fn = make_chunk_fn(step_fn, num_steps, data_per_seed)
  if mesh is None:
    return jax.jit(fn, donate_argnums=0)
  seeds, replicated = NamedSharding(mesh, PartitionSpec("seeds")), NamedSharding(mesh, PartitionSpec())
  data = _per_data_field(data_per_seed, seeds, replicated)
  return jax.jit(fn, donate_argnums=0, in_shardings=(seeds, data, seeds, replicated), out_shardings=(seeds, seeds))


def seed_mesh(num_seeds: int, devices=None) -> Mesh:
  """A 1-D mesh over as many devices (of every process) as evenly divide the seed count."""
  devices = distributed.mesh_devices(num_seeds, list(devices if devices is not None else jax.devices()))
  return Mesh(np.array(devices), ("seeds",), axis_types=(jax.sharding.AxisType.Auto,))


def default_shard_seeds() -> bool:
  """Shard seeds by default on several accelerators, and always across processes. Not over fake CPU devices of
  one process: they add no speed (XLA already uses every core)."""
  return jax.process_count() > 1 or (jax.default_backend() != "cpu" and jax.local_device_count() > 1)


class Trainer:
  """Runs `step_fn` for `num_steps` on seed-stacked `state`, `steps_per_call` steps per jitted call.

  With a `workdir`, it appends metrics to `workdir/metrics_<name>.jsonl`, checkpoints to
  `workdir/checkpoints/<name>` every `checkpoint_every` steps, at the end and on Ctrl-C (after the chunk in flight),
  and resumes from the latest checkpoint there. A stage already at `num_steps` is not run again.
  Across processes, seeds are always sharded, only process 0 writes metrics and shows progress, and `run` returns
  the whole final state in every process.

  `callback(step, state)` (e.g. an evaluation on the way) runs at every multiple of `callback_every` and at
  `num_steps`, after the state of that step is checkpointed (with a workdir), and again for the step a resumed run
  starts from when that step is one of them (so a callback cut short by an interruption is redone; it should skip
  work it finished before). Chunks never step over those steps. The state it gets is donated to the next chunk:
  use it, do not keep it. Single process only.
  """

  def __init__(self, step_fn: StepFn, *, num_steps: int, steps_per_call: int = 1000, name: str = "train",
               workdir: str | None = None, checkpoint_every: int | None = None, progress: bool = True,
               shard_seeds: bool | None = None, devices=None, data_per_seed=False,
               callback: Callable[[int, Any], None] | None = None, callback_every: int = 0):
    if num_steps < 0 or steps_per_call <= 0:
      raise ValueError(f"num_steps must be >= 0 and steps_per_call > 0, got {num_steps}, {steps_per_call}")
    if callback_every < 0 or (callback is not None and jax.process_count() > 1):
      raise ValueError(f"callback_every must be >= 0 (got {callback_every}) and a callback needs a single process")
    self.step_fn = step_fn
    self.num_steps = num_steps
    self.steps_per_call = steps_per_call
    self.name = name
    self.workdir = workdir
    self.checkpoint_every = checkpoint_every
    self.progress = progress and distributed.is_main_process()
    self.shard_seeds = default_shard_seeds() if shard_seeds is None else shard_seeds
    if jax.process_count() > 1 and not self.shard_seeds:
      raise ValueError("shard_seeds=False with several processes: every process would train every seed")
    self.devices = devices
    self.data_per_seed = data_per_seed
    self.callback = callback
    self.callback_every = callback_every
    self._compiled: dict[int, Callable] = {}
    self.history: list[dict] = []

  def _chunk_fn(self, k: int, mesh: Mesh | None):
    if k not in self._compiled:
      self._compiled[k] = jit_chunk(self.step_fn, k, self.data_per_seed, mesh)
    return self._compiled[k]

  def run(self, state: Any, data: Any, keys: jax.Array) -> Any:
    """Train and return the final seed-stacked state. keys: [N, 2] raw PRNG keys, one per seed."""
    num_seeds = keys.shape[0]
    # The jitted chunk donates its state: copy once so aliased leaves (a target net initialised to the online one)
    # are distinct buffers and the caller's arrays stay valid.
    state = jax.tree.map(jnp.copy, state)
    mesh = seed_mesh(num_seeds, self.devices) if self.shard_seeds else None
    if mesh is not None:
      seeds, replicated = NamedSharding(mesh, PartitionSpec("seeds")), NamedSharding(mesh, PartitionSpec())
      state, keys = distributed.put_global((state, keys), seeds)
      data = distributed.put_global(data, _per_data_field(self.data_per_seed, seeds, replicated))

    ckpt, metrics_path, step = None, None, 0
    if self.workdir is not None:
      os.makedirs(self.workdir, exist_ok=True)
      if distributed.is_main_process():
        metrics_path = os.path.join(self.workdir, f"metrics_{self.name}.jsonl")
      ckpt = Checkpointer(os.path.join(self.workdir, "checkpoints", self.name))
      latest = ckpt.latest_step()
      if latest is not None:
        try:
          state, keys = self._restore(ckpt, latest, state, keys)
        except BaseException:  # a refused resume: close the manager now, not at garbage collection
          ckpt.close()
          raise
        step = latest
        done = "finished earlier: step" if step >= self.num_steps else "resuming from step"
        print(f"[{self.name}] {done} {step} of {self.num_steps} ({ckpt.directory})", file=sys.stderr, flush=True)
      if metrics_path:
        _truncate_metrics(metrics_path, step)
      if step and self._callback_due(step):  # its callback may have been cut short: it skips what it finished
        self.callback(step, state)

    bar = _progress_bar(self.num_steps, step, self.name, self.progress)
    try:
      while step < self.num_steps:
        k = min(self.steps_per_call, self.num_steps - step)
        if self.checkpoint_every:  # never step over a checkpoint boundary
          k = min(k, self.checkpoint_every - step % self.checkpoint_every)
        if self.callback is not None and self.callback_every:  # nor over a callback's step
          k = min(k, self.callback_every - step % self.callback_every)
        start = time.perf_counter()
        metrics, interrupted = None, False
        try:
          state, metrics = self._chunk_fn(k, mesh)(state, data, keys, jnp.uint32(step))
          metrics = distributed.to_host(metrics)  # blocks: one chunk in flight at a time
        except KeyboardInterrupt:
          if ckpt is None or metrics is None:  # nothing to save, or the chunk was not dispatched
            raise
          metrics = distributed.to_host(metrics)  # Ctrl-C: let the chunk in flight finish, save it below, then stop
          interrupted = True
        elapsed = time.perf_counter() - start
        step += k
        record = {"step": step, "steps_per_sec": k / elapsed,
                  "metrics": {name: np.asarray(v).tolist() for name, v in metrics.items()}}
        self.history.append(record)
        if metrics_path:
          with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if ckpt and (interrupted or step == self.num_steps or self._callback_due(step) or
                     (self.checkpoint_every and step % self.checkpoint_every == 0)):
          ckpt.save(step, {"state": state, "keys": keys})
        if interrupted:
          bar.close()  # first, so that the message starts a line of its own instead of ending the bar's line
          print(f"[{self.name}] interrupted: saved step {step} of {self.num_steps} in {ckpt.directory}",
                file=sys.stderr, flush=True)
          raise KeyboardInterrupt
        bar.update(k)
        bar.set_postfix({n: f"{float(np.mean(v)):.4g}" for n, v in list(metrics.items())[:3]})
        if self._callback_due(step):
          self.callback(step, state)
    finally:
      bar.close()
      if ckpt:
        ckpt.close()
    if jax.process_count() > 1:  # what follows the stage runs in every process on the whole state
      state = jax.tree.map(jnp.asarray, distributed.to_host(state))
    return state

  def _callback_due(self, step: int) -> bool:
    return self.callback is not None and (step == self.num_steps or
                                          bool(self.callback_every and step % self.callback_every == 0))

  def _restore(self, ckpt: Checkpointer, step: int, state, keys):
    like = {"state": state, "keys": keys}
    try:
      restored = ckpt.restore(step, like)
    except Exception as e:  # shape/structure mismatch: say what is in the way instead of an orbax traceback
      raise ValueError(
          f"cannot resume stage '{self.name}' from {ckpt.directory} (step {step}): the checkpoint does not match "
          f"this run (seeds: {keys.shape[0]}; a different config or seed list?). Use a new workdir. Cause: {e}"
      ) from e
    return restored["state"], restored["keys"]


def _truncate_metrics(path: str, step: int) -> None:
  """Drop metric lines past `step` (written after the checkpoint a resumed run starts from)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(lines)
  os.replace(tmp, path)


def _progress_bar(total: int, initial: int, name: str, enabled: bool):
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, desc=name, unit="step", disable=not enabled, dynamic_ncols=True,
              smoothing=0.1, mininterval=1.0)


def train(step_fn: StepFn, state: Any, data: Any, keys: jax.Array, **trainer_kwargs) -> Any:
  """Convenience: `Trainer(step_fn, **trainer_kwargs).run(state, data, keys)`."""
  return Trainer(step_fn, **trainer_kwargs).run(state, data, keys)
