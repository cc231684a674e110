"""Orbax checkpoints of a whole train state (params, optimiser state, step, RNG keys, every seed) plus the resolved
config as JSON beside them.

Every saved step carries checksums.json: the SHA-256 of each of its files, written once the step is complete and
checked before the step is read, so a flipped byte, a truncated or missing file is found before orbax sees it. A
damaged step is moved aside (to <directory>.damaged/) and the newest intact one is restored instead.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from common import distributed

MANIFEST = "checksums.json"


class CheckpointMismatch(ValueError):
  """An intact checkpoint whose arrays are not those of this run (another config or seed list)."""


class DamagedCheckpoint(Exception):
  """A step whose files are damaged (a checksum or size differs, a file is missing or unreadable)."""


def file_checksums(step_dir: str) -> dict[str, dict]:
  """{relative path: {"sha256", "bytes"}} of every file under step_dir except the manifest."""
  out = {}
  for root, _, files in os.walk(step_dir):
    for name in sorted(files):
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel == MANIFEST:
        continue
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
      out[rel] = {"sha256": digest.hexdigest(), "bytes": os.path.getsize(path)}
  return out


def verify_step_files(step_dir: str) -> bool:
  """Raise DamagedCheckpoint when a file of step_dir differs from its manifest. Returns False when the step has no
  manifest (saved before checksums were written, or killed between the save and the manifest), True when verified."""
  path = os.path.join(step_dir, MANIFEST)
  try:
    with open(path) as f:
      expected = json.load(f)["files"]
  except FileNotFoundError:
    return False
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DamagedCheckpoint(f"its {MANIFEST} is unreadable: {type(e).__name__}") from e
  for rel, want in expected.items():
    file = os.path.join(step_dir, rel)
    if not os.path.exists(file):
      raise DamagedCheckpoint(f"{rel} is missing")
    if os.path.getsize(file) != want["bytes"]:
      raise DamagedCheckpoint(f"{rel} has {os.path.getsize(file)} bytes, {want['bytes']} were saved")
  actual = file_checksums(step_dir)
  for rel, want in expected.items():
    if actual[rel]["sha256"] != want["sha256"]:
      raise DamagedCheckpoint(f"{rel} differs from its checksum")
  return True


# Besides the arrays, a step holds metadata files of some tens of KB; the margin also leaves the disk not quite full.
ROOM_MARGIN_BYTES = 1 << 20


def check_room(directory: str, array_bytes: int) -> None:
  """Raise OSError when `directory` cannot be written or its file system has no room for `array_bytes` more."""
  os.makedirs(directory, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_test_"):
    pass
  free = shutil.disk_usage(directory).free
  if free < array_bytes + ROOM_MARGIN_BYTES:
    raise OSError(errno.ENOSPC, f"No space left on device (a checkpoint needs about "
                                f"{(array_bytes + ROOM_MARGIN_BYTES) / 1e6:.1f} MB, {free / 1e6:.1f} MB are free)",
                  directory)


class Checkpointer:
  """Numbered checkpoints of one pytree in `directory`; keeps the newest `max_to_keep`."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    # The handler named up front, so a fresh manager can read a step's metadata before restoring it.
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, tree: Any) -> None:
    """Save `tree` as `step`, then its checksums (process 0, once every process has written its part).

    Raises OSError (ENOSPC, EACCES, EROFS, ...) naming the directory when it cannot take the checkpoint, found
    before orbax starts writing (its failures mid-write come as other exceptions, from several threads)."""
    check_room(self.directory, sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(tree)))
    self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
    self._manager.wait_until_finished()
    if distributed.is_main_process():
      manifest = {"step": step, "files": file_checksums(self.step_dir(step))}
      write_text_atomic(os.path.join(self.step_dir(step), MANIFEST), json.dumps(manifest, indent=1))

  def restore(self, step: int, like: Any) -> Any:
    """Restore into the structure, dtypes and shardings of `like` (a concrete or abstract tree).

    The target matters: without it optax states come back as plain lists and arrays lose their sharding. Raises
    DamagedCheckpoint for damaged files, CheckpointMismatch for intact ones that do not fit `like`.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    verified = verify_step_files(self.step_dir(step))
    try:
      stored = self._manager.item_metadata(step).tree
    except Exception as e:  # noqa: BLE001 (orbax and its JSON parsing raise many kinds)
      if verified:
        raise CheckpointMismatch(f"its metadata does not fit: {type(e).__name__}: {e}") from e
      raise DamagedCheckpoint(f"its metadata is unreadable: {type(e).__name__}") from e
    self._check_shapes(step, stored, abstract)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # noqa: BLE001
      if verified:  # the files are as saved: they do not fit this run
        raise CheckpointMismatch(f"{type(e).__name__}: {e}") from e
      raise DamagedCheckpoint(f"its arrays are unreadable: {type(e).__name__}") from e

  def restore_newest_intact(self, like: Any, note: Callable[[str], None]) -> tuple[int, Any] | None:
    """(step, tree) of the newest step that is intact, or None when there is none. Each damaged newer step is moved
    aside to <directory>.damaged/ and `note` gets one line saying which and why."""
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return step, self.restore(step, like)
      except DamagedCheckpoint as e:
        moved = self._set_aside(step)
        note(f"checkpoint step {step} in {self.directory} is damaged ({e}): skipped, moved to {moved}")
    return None

  def _set_aside(self, step: int) -> str:
    """Move a damaged step out of the manager's directory (kept, not deleted: nothing is thrown away)."""
    target = os.path.join(self.directory + ".damaged", str(step))
    n = 1
    while os.path.exists(target):
      n += 1
      target = os.path.join(self.directory + ".damaged", f"{step}-{n}")
    if distributed.is_main_process():
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(self.step_dir(step), target)
    distributed.barrier(f"checkpoint_set_aside_{step}")
    self._manager.reload()
    return target

  def _check_shapes(self, step: int, stored: Any, abstract: Any) -> None:
    """Refuse a target whose array shapes differ from the stored ones before orbax starts reading: a failed read
    leaves its other asyncio tasks' errors to be logged ('Task exception was never retrieved') at garbage collection."""
    stored = jax.tree.leaves(stored, is_leaf=lambda x: hasattr(x, "shape"))
    stored_shapes = sorted(tuple(x.shape) for x in stored)
    wanted_shapes = sorted(tuple(x.shape) for x in jax.tree.leaves(abstract))
    if stored_shapes != wanted_shapes:
      extra = sorted(set(stored_shapes) - set(wanted_shapes))[:3]
      missing = sorted(set(wanted_shapes) - set(stored_shapes))[:3]
      raise CheckpointMismatch(f"step {step} holds {len(stored_shapes)} arrays of other shapes than the "
                               f"{len(wanted_shapes)} asked for (stored only: {extra}; asked only: {missing})")

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
