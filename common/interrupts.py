"""Stopping a run on purpose without losing work: Ctrl-C (SIGINT), the SIGTERM a cluster scheduler sends before it
kills a job, and a time budget that ends training before the scheduler's limit does.

While a Trainer runs, a first SIGINT or SIGTERM only asks it to stop: it lets the chunk in flight finish, saves it and
raises `Interrupted`; a second one stops at once. Entry points call `install_process_handlers` so that the same
signals stop the rest of a run (data loading, evaluation) with a clear message, also when the process was started in
the background by a non-interactive shell (`cmd &`), which starts it with SIGINT ignored.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time

# Exit statuses: the shell's 128 + signal number for the signals; EX_TEMPFAIL ("try again") for a used-up budget.
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "time budget": 75}
_IMPORTED_AT = time.monotonic()


class Interrupted(KeyboardInterrupt):
  """The run was stopped on purpose (`reason`: "SIGINT", "SIGTERM" or "time budget") after saving what it had."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason
    self.exit_code = EXIT_CODES.get(reason, 130)


def exit_code(e: KeyboardInterrupt) -> int:
  return getattr(e, "exit_code", EXIT_CODES["SIGINT"])


def stop_message(e: KeyboardInterrupt) -> str:
  """'interrupted', 'stopped by SIGTERM' or 'time budget used up', for an entry point's last line."""
  reason = getattr(e, "reason", "SIGINT")
  return {"SIGINT": "interrupted", "time budget": "time budget used up"}.get(reason, f"stopped by {reason}")


def _in_main_thread() -> bool:
  return threading.current_thread() is threading.main_thread()


def install_process_handlers() -> None:
  """For entry points: SIGTERM raises `Interrupted("SIGTERM")` (Python's default is to die without a word), and
  SIGINT raises KeyboardInterrupt even when the process started with it ignored (a background job of a script)."""
  if not _in_main_thread():
    return

  def on_sigterm(signum, frame):
    raise Interrupted("SIGTERM")

  signal.signal(signal.SIGTERM, on_sigterm)
  if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
    signal.signal(signal.SIGINT, signal.default_int_handler)


class StopRequest:
  """What `deferred_signals` has received: `reason` is None, "SIGINT" or "SIGTERM"."""

  def __init__(self):
    self.reason: str | None = None


@contextlib.contextmanager
def deferred_signals():
  """Within the block, the first SIGINT / SIGTERM sets `request.reason` instead of stopping the process (the caller
  checks it between chunks); a second one raises KeyboardInterrupt at once. The former handlers come back after."""
  request = StopRequest()
  if not _in_main_thread():  # signal handlers can only be set from the main thread
    yield request
    return

  def on_signal(signum, frame):
    if request.reason is not None:
      raise KeyboardInterrupt  # asked twice: stop now, without saving
    request.reason = signal.Signals(signum).name

  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  for s in previous:
    signal.signal(s, on_signal)
  try:
    yield request
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def process_seconds() -> float:
  """Seconds since this process started (Linux: from /proc; elsewhere since this module was first imported)."""
  try:
    with open("/proc/self/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in clock ticks
  except (OSError, ValueError, IndexError):
    return time.monotonic() - _IMPORTED_AT


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
  """Seconds of a duration: "5400", "90m", "23h50m", "1.5d", or SLURM's "[D-]HH:MM:SS" / "MM:SS". Raises ValueError."""
  text = text.strip()
  m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+)(?::(\d+))?", text)
  if m:
    days, a, b, c = m.groups()
    hours, minutes, seconds = (int(a), int(b), int(c)) if c is not None else (0, int(a), int(b))
    return float(int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds)
  number = r"(\d+(?:\.\d*)?|\.\d+)"
  if re.fullmatch(number, text):
    return float(text)
  parts = re.findall(number + r"\s*([smhd])", text)
  if not parts or re.sub(number + r"\s*[smhd]", "", text).strip():
    raise ValueError(f"{text!r} is not a duration: give seconds (5400), 90m, 23h50m, 1d or HH:MM:SS")
  return float(sum(float(v) * _UNITS[u] for v, u in parts))
