"""One writer per run folder: a lock file (`run.lock`, holding the pid and host of its holder) taken for the whole run.

The holder keeps an exclusive `flock` on the file, which the kernel releases when the process dies however it dies,
so a lock left by a killed run on this host is taken over. A lock naming another host is only taken over by hand
(delete the file): whether that process still runs cannot be told from here. Where the file system has no flock,
the pid is checked instead (same host only).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time

from common.errors import RunError

LOCK_FILE = "run.lock"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by another user
    return True
  return True


def _holder(fd: int) -> dict:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    return json.loads(os.read(fd, 4096) or b"{}")
  except (OSError, ValueError):
    return {}


def _describe(holder: dict) -> str:
  if not holder:
    return "another process (its lock file is empty)"
  since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"])) if "since" in holder else "?"
  return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {since})"


class WorkdirLock:
  """The lock of one run folder, held from `acquire` to `release`."""

  def __init__(self, path: str, fd: int):
    self.path = path
    self._fd = fd

  @classmethod
  def acquire(cls, workdir: str) -> "WorkdirLock":
    """Take the lock of `workdir` or raise RunError naming its holder (pid, host) and what to do."""
    path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    host = socket.gethostname()
    while True:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        cls._lock_or_refuse(fd, path, host)
        if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
          break  # locked the file that is in place (not one its former holder had just removed)
        os.close(fd)
      except BaseException:
        os.close(fd)
        raise
    took_over = _holder(fd)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": host, "since": time.time()}).encode())
    os.fsync(fd)
    if took_over:
      print(f"note: took over the lock {path} of {_describe(took_over)}, which is no longer running",
            file=sys.stderr, flush=True)
    return cls(path, fd)

  @staticmethod
  def _lock_or_refuse(fd: int, path: str, host: str) -> None:
    refuse = lambda holder: RunError(
        f"workdir {os.path.dirname(path)} is in use by {_describe(holder)}: two runs writing one folder would mix "
        f"their metrics and checkpoints. Wait for it to end or stop it, or use another --workdir (if that process "
        f"is gone, delete {path})")
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      flock_works = True
    except BlockingIOError:
      raise refuse(_holder(fd)) from None
    except OSError as e:  # no flock on this file system: judge the holder by its pid
      if e.errno not in (errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise
      flock_works = False
    holder = _holder(fd)
    if not holder:  # a new lock file (or one emptied by a holder that ended)
      return
    if holder.get("host") != host:  # another machine's process: its liveness cannot be checked from here
      raise refuse(holder)
    if not flock_works and _pid_alive(int(holder.get("pid", -1))):
      raise refuse(holder)

  def release(self) -> None:
    """Remove the lock file (while still holding it, so nobody takes a lock on a file about to vanish)."""
    if self._fd < 0:
      return
    with contextlib.suppress(OSError):
      os.remove(self.path)
    os.close(self._fd)
    self._fd = -1
