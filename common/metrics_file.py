"""The Trainer's metrics files (metrics_<stage>.jsonl: one JSON record per chunk), written and read so that a
crash or a full disk mid-write never blocks a resume, and so that every line stays valid JSON.

Non-finite values (a diverged chunk) are written as the strings "nan", "inf" and "-inf", which JSON allows and
`float()` / numpy read back; a bare NaN token is not JSON. A line that does not parse (the last one, cut short when
the process died or the disk filled up) is dropped on reading, with a note naming the file and the line.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any


def json_safe(value: Any) -> Any:
  """`value` with every non-finite float (at any depth of lists / dicts) replaced by "nan", "inf" or "-inf"."""
  if isinstance(value, float):
    if math.isfinite(value):
      return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value


def append_record(path: str, record: dict) -> None:
  """Append one record as one line. On failure (e.g. ENOSPC) the file is truncated back to its former size, so no
  half line is left behind, and the OSError raised names the file."""
  data = (json.dumps(json_safe(record), allow_nan=False) + "\n").encode()
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # unbuffered: a failed write is seen here
  try:
    size = os.fstat(fd).st_size
    written = 0
    try:
      while written < len(data):
        written += os.write(fd, data[written:])
    except OSError as e:
      try:
        os.ftruncate(fd, size)
      except OSError:
        pass  # a half line left here is dropped with a note when the file is next read
      raise OSError(e.errno, e.strerror or str(e), path) from e
  finally:
    os.close(fd)


def read_records(path: str, *, note: bool = True) -> list[dict]:
  """Every record of a metrics file, in order. Lines that do not parse as a record are dropped, with one note per
  file on stderr (unless `note` is False) naming the file and the lines."""
  records, dropped = [], []
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      try:
        record = json.loads(raw)
        if not isinstance(record, dict) or "step" not in record:
          raise ValueError("not a metrics record")
      except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        dropped.append(number)
        continue
      records.append(record)
  if dropped and note:
    where = f"line {dropped[0]}" if len(dropped) == 1 else f"lines {', '.join(map(str, dropped))}"
    print(f"note: dropped {where} of {path}: not a complete record (written when a run stopped mid-write)",
          file=sys.stderr, flush=True)
  return records


def truncate_after(path: str, step: int) -> None:
  """Keep the records up to `step` (those a resume from the checkpoint at `step` does not redo), dropping later ones
  and any partial line; rewritten through a temporary file and a rename."""
  if not os.path.exists(path):
    return
  kept = [r for r in read_records(path) if r["step"] <= step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in kept)
  os.replace(tmp, path)
