"""Orbax checkpoints of a whole train state (params, optimiser state, step, RNG keys, every seed) plus the resolved
config as JSON beside them."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Numbered checkpoints of one pytree in `directory`; keeps the newest `max_to_keep`."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False)
    # The handler named up front, so a fresh manager can read a step's metadata before restoring it.
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, tree: Any) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, like: Any) -> Any:
    """Restore into the structure, dtypes and shardings of `like` (a concrete or abstract tree).

    The target matters: without it optax states come back as plain lists and arrays lose their sharding.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    self._check_shapes(step, abstract)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def _check_shapes(self, step: int, abstract: Any) -> None:
    """Refuse a target whose array shapes differ from the stored ones before orbax starts reading: a failed read
    leaves its other asyncio tasks' errors to be logged ('Task exception was never retrieved') at garbage collection."""
    stored = jax.tree.leaves(self._manager.item_metadata(step).tree, is_leaf=lambda x: hasattr(x, "shape"))
    stored_shapes = sorted(tuple(x.shape) for x in stored)
    wanted_shapes = sorted(tuple(x.shape) for x in jax.tree.leaves(abstract))
    if stored_shapes != wanted_shapes:
      extra = sorted(set(stored_shapes) - set(wanted_shapes))[:3]
      missing = sorted(set(wanted_shapes) - set(stored_shapes))[:3]
      raise ValueError(f"step {step} holds {len(stored_shapes)} arrays of other shapes than the {len(wanted_shapes)} "
                       f"asked for (stored only: {extra}; asked only: {missing})")

  def close(self) -> None:
    self._manager.close()


def current_umask() -> int:
  """The process's umask, read without changing it where Linux shows it (/proc/self/status); elsewhere set and put
  back at once."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def umask_file_mode() -> int:
  """The mode open() gives a new file: 0o666 less the umask (mkstemp's files are 0o600 whatever the umask, which
  would leave results unreadable to the group on a shared cluster)."""
  return 0o666 & ~current_umask()


def write_text_atomic(path: str, text: str) -> None:
  """Write to a temporary file in the same directory, then rename: a crash never leaves half a file. The file gets
  the mode a plain open() would give it (the umask's), not mkstemp's 0o600."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_")
  try:
    os.fchmod(fd, umask_file_mode())
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def save_config(workdir: str, config) -> str:
  """Save the resolved config (an ml_collections ConfigDict or a dict) as workdir/config.json."""
  as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  path = os.path.join(workdir, "config.json")
  write_json_atomic(path, as_dict)
  return path


def load_config(workdir: str) -> dict:
  with open(os.path.join(workdir, "config.json")) as f:
    return json.load(f)
