"""The errors a run reports to its user as one line (`error: <message>`), kept apart from the modules that raise
them so that the light core (training, checkpoints) and the entry points share them without importing each other."""
from __future__ import annotations

import errno
import os


class RunError(RuntimeError):
  """A run cannot start or go on. The message says why and what to do; entry points print it and exit non-zero."""


class DivergenceError(RunError):
  """A training stage produced non-finite losses or parameters. Nothing non-finite was saved; `stage` and `step`
  (the end of the chunk that showed it) say where."""

  def __init__(self, message: str, *, stage: str = "", step: int = 0):
    super().__init__(message)
    self.stage = stage
    self.step = step


def write_error(e: OSError, what: str, path: str | None = None) -> RunError:
  """A RunError for an OSError met while writing `what` (e.g. "the checkpoint of step 100"): the path, the reason and
  what to do, in one sentence."""
  path = path or e.filename or "?"
  reason = e.strerror or str(e)
  if e.errno == errno.ENOSPC:
    todo = "free some space (or move the folder to a disk with space)"
  elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    todo = "make the folder writable again"
  else:
    todo = "fix the cause"
  return RunError(f"cannot write {what} ({os.fspath(path)}): {reason}. Nothing already saved was lost: {todo}, then "
                  "run the same command again to resume from the last checkpoint")
