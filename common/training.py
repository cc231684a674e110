"""Fused multi-seed training.

A step is a pure function `step(state, data, key) -> (state, metrics)` for ONE seed. This module turns it into a jitted
call that runs K steps with `lax.scan` for every seed at once (`vmap` over a leading seed axis of `state` and `keys`,
the data shared), optionally sharding the seed axis over devices (of every process, when several train together:
`common.distributed`), and drives that call from Python with a progress bar, JSONL metrics, periodic checkpoints and
resume.

The key of global step n for a seed is `fold_in(seed_key, n)`: results do not depend on how the steps are chunked, so
a fused run, a one-step-per-call run and a run resumed from a checkpoint are the same computation.

Faults end a stage with one clear message and lose nothing but the chunk in flight: a chunk whose metrics or
parameters are non-finite stops the stage (`DivergenceError`) before anything of it is saved; SIGINT, SIGTERM and a
used-up time budget save the chunk in flight and raise `Interrupted`; a damaged newest checkpoint is set aside and the
one before it is used; a write that fails (a full disk) is reported with its path.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common import distributed, interrupts, metrics_file
from common.checkpoint import CheckpointMismatch, Checkpointer
from common.divergence import divergence_message, tree_all_finite
from common.errors import DivergenceError, RunError, write_error
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
  """`chunk(states, data, keys, start_step) -> (states, mean metrics [N], finite [N])`: num_steps scanned steps per
  seed; `finite` says whether every float of a seed's state after the chunk is finite (reduced on the device).

  The data is shared by all seeds; with `data_per_seed=True` all of it has a leading seed axis (e.g. one weighting
  each), and with a pytree prefix of bools (e.g. `WeightedData(False, False, True)`) only the fields marked True do.
  """

  def one_seed(state, data, key, start_step):
    def body(state, i):
      return step_fn(state, data, jax.random.fold_in(key, start_step + i))

    state, metrics = jax.lax.scan(body, state, jnp.arange(num_steps, dtype=jnp.uint32))
    return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics), tree_all_finite(state)

  return jax.vmap(one_seed, in_axes=(0, _per_data_field(data_per_seed, 0, None), 0, None))


def jitted_chunk_fn(step_fn: StepFn, num_steps: int, data_per_seed=False, mesh: Mesh | None = None) -> Callable:
  """`make_chunk_fn` jitted with the state donated (and, with a mesh, the seed axis sharded over it). The newest few
  are kept: a Trainer made again for the same step function (a stage resumed in the same process) reuses the
  compiled chunks instead of compiling them again."""
  leaves, treedef = jax.tree.flatten(data_per_seed)
  return _jitted_chunk_fn(step_fn, num_steps, tuple(leaves), treedef, mesh)


@functools.lru_cache(maxsize=16)
def _jitted_chunk_fn(step_fn, num_steps, data_leaves, data_treedef, mesh):
  data_per_seed = jax.tree.unflatten(data_treedef, data_leaves)
  fn = make_chunk_fn(step_fn, num_steps, data_per_seed)
  if mesh is None:
    return jax.jit(fn, donate_argnums=0)
  seeds, replicated = NamedSharding(mesh, PartitionSpec("seeds")), NamedSharding(mesh, PartitionSpec())
  data = _per_data_field(data_per_seed, seeds, replicated)
  return jax.jit(fn, donate_argnums=0, in_shardings=(seeds, data, seeds, replicated),
                 out_shardings=(seeds, seeds, seeds))


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
  `workdir/checkpoints/<name>` every `checkpoint_every` steps, at the end and when stopped on purpose (SIGINT,
  SIGTERM, `max_runtime_s` seconds of process time used up: after the chunk in flight, then `Interrupted`), and
  resumes from the newest intact checkpoint there. A stage already at `num_steps` is not run again.
  A chunk with non-finite metrics or parameters raises `DivergenceError` naming the stage, the steps, the metrics,
  the seeds (`seed_ids`, e.g. config.seeds) and the config values that usually cause it (`suspects`); it is not
  checkpointed.
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
               callback: Callable[[int, Any], None] | None = None, callback_every: int = 0,
               seed_ids=None, suspects: dict[str, Any] | None = None, max_runtime_s: float = 0.0):
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
    self.seed_ids = None if seed_ids is None else [int(s) for s in seed_ids]
    self.suspects = dict(suspects or {})
    self.max_runtime_s = float(max_runtime_s or 0.0)
    self.history: list[dict] = []

  def _chunk_fn(self, k: int, mesh: Mesh | None):
    return jitted_chunk_fn(self.step_fn, k, self.data_per_seed, mesh)

  def _say(self, text: str) -> None:
    if distributed.is_main_process():
      print(f"[{self.name}] {text}", file=sys.stderr, flush=True)

  def run(self, state: Any, data: Any, keys: jax.Array) -> Any:
    """Train and return the final seed-stacked state. keys: [N, 2] raw PRNG keys, one per seed."""
    with interrupts.deferred_signals() as stop_request:
      return self._run(state, data, keys, stop_request)

  def _run(self, state: Any, data: Any, keys: jax.Array, stop_request) -> Any:
    num_seeds = keys.shape[0]
    # The jitted chunk donates its state: copy once so aliased leaves (a target net initialised to the online one)
    # are distinct buffers and the caller's arrays stay valid.
    state = jax.tree.map(jnp.copy, state)
    mesh = seed_mesh(num_seeds, self.devices) if self.shard_seeds else None
    if mesh is not None:
      seeds, replicated = NamedSharding(mesh, PartitionSpec("seeds")), NamedSharding(mesh, PartitionSpec())
      state, keys = distributed.put_global((state, keys), seeds)
      data = distributed.put_global(data, _per_data_field(self.data_per_seed, seeds, replicated))

    ckpt, metrics_path, step, last_saved = None, None, 0, None
    if self.workdir is not None:
      try:
        os.makedirs(self.workdir, exist_ok=True)
        ckpt = Checkpointer(os.path.join(self.workdir, "checkpoints", self.name))
      except OSError as e:
        raise write_error(e, f"the checkpoints of stage '{self.name}'") from e
      if distributed.is_main_process():
        metrics_path = os.path.join(self.workdir, f"metrics_{self.name}.jsonl")
      try:
        restored = self._restore(ckpt, state, keys)
      except BaseException:  # a refused resume: close the manager now, not at garbage collection
        ckpt.close()
        raise
      if metrics_path:
        try:
          metrics_file.truncate_after(metrics_path, restored[0] if restored else 0)
        except OSError as e:
          ckpt.close()
          raise write_error(e, f"the metrics of stage '{self.name}'") from e
      if restored is not None:
        step, state, keys = restored
        last_saved = step
        done = "finished earlier: step" if step >= self.num_steps else "resuming from step"
        self._say(f"{done} {step} of {self.num_steps} ({ckpt.directory})")
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
        metrics = finite = None
        dispatched, ctrl_c = False, False
        try:
          state, metrics, finite = self._chunk_fn(k, mesh)(state, data, keys, jnp.uint32(step))
          dispatched = True
          metrics, finite = distributed.to_host((metrics, finite))  # blocks: one chunk in flight at a time
        except KeyboardInterrupt:
          if ckpt is None or not dispatched:  # nothing to save, or the chunk was not dispatched
            raise
          metrics, finite = distributed.to_host((metrics, finite))  # let the chunk in flight finish, save it below
          ctrl_c = True
        elapsed = time.perf_counter() - start
        record = {"step": step + k, "steps_per_sec": k / elapsed,
                  "metrics": {name: np.asarray(v).tolist() for name, v in metrics.items()}}
        self.history.append(record)
        if metrics_path:
          try:
            metrics_file.append_record(metrics_path, record)
          except OSError as e:
            raise write_error(e, f"the metrics of stage '{self.name}'") from e
        diverged = divergence_message(
            self.name, start=step, end=step + k, num_steps=self.num_steps, metrics=metrics, params_finite=finite,
            seed_ids=self.seed_ids, suspects=self.suspects, last_saved=last_saved,
            directory=ckpt.directory if ckpt else None)
        if diverged:
          raise DivergenceError(diverged, stage=self.name, step=step + k)
        step += k
        reason = "SIGINT" if ctrl_c else stop_request.reason
        if reason is None and self._out_of_time(elapsed):
          reason = "time budget"
        if jax.process_count() > 1 and distributed.any_process(reason is not None) and reason is None:
          reason = "SIGTERM"  # another process was asked to stop: every process saves and stops together
        if ckpt and (reason or step == self.num_steps or self._callback_due(step) or
                     (self.checkpoint_every and step % self.checkpoint_every == 0)):
          self._save(ckpt, step, state, keys)
          last_saved = step
        if reason:
          bar.close()  # first, so that the message starts a line of its own instead of ending the bar's line
          self._stop(reason, step, ckpt)
        bar.update(k)
        bar.set_postfix({n: f"{float(np.mean(v)):.4g}" for n, v in list(metrics.items())[:3]})
        if self._callback_due(step):
          self.callback(step, state)
          if stop_request.reason:  # asked during the callback: this step is saved (a callback's step always is)
            bar.close()
            self._stop(stop_request.reason, step, ckpt)
      if stop_request.reason:  # asked after the last chunk: the stage is finished and saved, the run stops here
        bar.close()
        self._stop(stop_request.reason, step, ckpt)
    finally:
      bar.close()
      if ckpt:
        ckpt.close()
    if jax.process_count() > 1:  # what follows the stage runs in every process on the whole state
      state = jax.tree.map(jnp.asarray, distributed.to_host(state))
    return state

  def _out_of_time(self, chunk_seconds: float) -> bool:
    """Whether another chunk as long as the last one would end past the time budget."""
    return bool(self.max_runtime_s) and interrupts.process_seconds() + chunk_seconds > self.max_runtime_s

  def _stop(self, reason: str, step: int, ckpt: Checkpointer | None) -> None:
    if reason == "time budget":
      why = f"time budget of {self.max_runtime_s:g} s used up"
    else:
      why = "interrupted" if reason == "SIGINT" else f"stopped by {reason}"
    where = f"saved step {step} of {self.num_steps} in {ckpt.directory}" if ckpt else f"at step {step}, nothing saved"
    self._say(f"{why}: {where}")
    raise interrupts.Interrupted(reason)

  def _save(self, ckpt: Checkpointer, step: int, state, keys) -> None:
    what = f"the checkpoint of stage '{self.name}' at step {step}"
    try:
      ckpt.save(step, {"state": state, "keys": keys})
    except OSError as e:
      raise write_error(e, what, ckpt.directory) from e
    except Exception as e:  # noqa: BLE001  orbax reports a failed write (the disk filled meanwhile) as other types
      text = str(e)
      if not any(sign in text for sign in ("os_error_code", "No space left", "Permission denied", "Read-only")):
        raise
      raise RunError(f"cannot write {what} ({ckpt.directory}): {text.splitlines()[0][:400]}. Nothing already saved "
                     "was lost: fix the cause (free space?), then run the same command again to resume from the "
                     "last checkpoint") from e

  def _callback_due(self, step: int) -> bool:
    return self.callback is not None and (step == self.num_steps or
                                          bool(self.callback_every and step % self.callback_every == 0))

  def _restore(self, ckpt: Checkpointer, state, keys):
    """(step, state, keys) of the newest intact checkpoint, or None. A damaged newer step is set aside with a note;
    one that does not fit this run, or holds non-finite parameters, is refused."""
    like = {"state": state, "keys": keys}
    try:
      found = ckpt.restore_newest_intact(like, note=self._say)
    except CheckpointMismatch as e:  # say what is in the way instead of an orbax traceback
      raise RunError(
          f"cannot resume stage '{self.name}' from {ckpt.directory}: the checkpoint does not match this run "
          f"(seeds: {keys.shape[0]}; a different config or seed list?). Use a new workdir. Cause: {e}") from e
    if found is None:
      return None
    step, restored = found
    finite = np.asarray(distributed.to_host(jax.jit(jax.vmap(tree_all_finite))(restored["state"])))
    if not finite.all():
      raise DivergenceError(
          f"stage '{self.name}': checkpoint step {step} in {ckpt.directory} holds non-finite parameters (seeds at "
          f"positions {np.flatnonzero(~finite).tolist()}): the run diverged before it was saved. Train again in a "
          "new --workdir, with a smaller learning rate", stage=self.name, step=step)
    return step, restored["state"], restored["keys"]


def _progress_bar(total: int, initial: int, name: str, enabled: bool):
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, desc=name, unit="step", disable=not enabled, dynamic_ncols=True,
              smoothing=0.1, mininterval=1.0)


def train(step_fn: StepFn, state: Any, data: Any, keys: jax.Array, **trainer_kwargs) -> Any:
  """Convenience: `Trainer(step_fn, **trainer_kwargs).run(state, data, keys)`."""
  return Trainer(step_fn, **trainer_kwargs).run(state, data, keys)
