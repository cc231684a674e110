"""Profile one call with `jax.profiler` and summarise the trace into the most expensive device ops.

`jax.profiler.trace(dir, create_perfetto_trace=True)` (jax 0.10) writes `dir/plugins/profile/<time>/
perfetto_trace.json.gz`, a Chrome trace-event JSON that needs no extra package to read. Device ops are the complete
('X') events of a `/device:...` process (GPU/TPU kernels: its "Stream #" lines where it has them, not the "XLA Modules"
lines that span them); where there is none (a CPU run) they are the XLA:CPU thunks,
the events that carry an `hlo_op` argument. Nested events on one thread (a `while` thunk around its body's fusions)
are counted by self time, so no time is counted twice and the shares sum to at most 100 %.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import shutil
import tempfile
import time
from typing import Any, Callable

import jax


def load_trace(path: str) -> list[dict]:
  """The trace events of a (gzipped) Chrome/perfetto trace JSON: {'traceEvents': [...]} or a bare list."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    data = json.load(f)
  return data.get("traceEvents", []) if isinstance(data, dict) else list(data)


def device_op_events(events: list[dict]) -> list[dict]:
  """Complete events of device processes, else (no device process: a CPU) the events naming an HLO op."""
  processes = {e.get("pid"): str((e.get("args") or {}).get("name", "")) for e in events
               if e.get("ph") == "M" and e.get("name") == "process_name"}
  threads = {(e.get("pid"), e.get("tid")): str((e.get("args") or {}).get("name", "")) for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  complete = [e for e in events if e.get("ph") == "X" and "dur" in e and "ts" in e
              and not str(e.get("name", "")).startswith("end: ")]
  on_device = [e for e in complete if processes.get(e.get("pid"), "").startswith("/device:")]
  # A GPU's lines: kernels on "Stream #..." threads, plus "XLA Modules" / "XLA Ops" lines derived from the same
  # kernels; keep the streams (else the XLA Ops line) so that no time is counted twice.
  for wanted in (lambda name: name.startswith("Stream"), lambda name: name == "XLA Ops"):
    chosen = [e for e in on_device if wanted(threads.get((e.get("pid"), e.get("tid")), ""))]
    if chosen:
      return chosen
  return on_device or [e for e in complete if "hlo_op" in (e.get("args") or {})]


def self_times(events: list[dict]) -> list[tuple[dict, float]]:
  """(event, self time in us): its duration less that of the events nested in it on the same thread."""
  out = []
  close = lambda entry: (entry[0], max(0.0, float(entry[0]["dur"]) - entry[2]))  # [event, end, child time]
  by_thread = collections.defaultdict(list)
  for e in events:
    by_thread[(e.get("pid"), e.get("tid"))].append(e)
  for thread in by_thread.values():
    thread.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
    stack: list[list] = []  # [event, end, child time]
    for e in thread:
      start, dur = float(e["ts"]), float(e["dur"])
      while stack and start >= stack[-1][1]:
        out.append(close(stack.pop()))
      if stack:
        stack[-1][2] += dur
      stack.append([e, start + dur, 0.0])
    out += [close(entry) for entry in stack]
  return out


def summarize(events: list[dict], top: int = 15) -> dict:
  """The `top` device ops by total self time: name, calls, time (ms) and share of all device-op time; the busy time
  and the span from the first op's start to the last op's end."""
  ops = device_op_events(events)
  totals: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])
  for e, t in self_times(ops):
    name = str(e.get("name", "?"))
    totals[name][0] += 1
    totals[name][1] += t
  busy = sum(t for _, t in totals.values())
  span = (max(float(e["ts"]) + float(e["dur"]) for e in ops) - min(float(e["ts"]) for e in ops)) if ops else 0.0
  ranked = sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]
  return {"busy_ms": busy / 1e3, "span_ms": span / 1e3, "num_ops": len(totals), "events": len(ops),
          "top": [{"op": name, "calls": calls, "ms": t / 1e3, "share": t / busy if busy else 0.0}
                  for name, (calls, t) in ranked]}


def profile_call(fn: Callable[[], Any], top: int = 15) -> dict:
  """Run fn() once under jax.profiler.trace (fn should already be compiled) and summarise its device ops; the trace
  is written to a temporary folder and deleted. Adds the call's wall time (ms)."""
  tmp = tempfile.mkdtemp(prefix="gpu_check_trace_")
  try:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      start = time.perf_counter()
      jax.block_until_ready(fn())
      wall_ms = (time.perf_counter() - start) * 1e3
    paths = sorted(glob.glob(os.path.join(tmp, "**", "perfetto_trace.json*"), recursive=True))
    if not paths:
      paths = sorted(glob.glob(os.path.join(tmp, "**", "*.trace.json*"), recursive=True))
    if not paths:
      raise RuntimeError(f"jax.profiler wrote no trace JSON under {tmp}")
    summary = summarize(load_trace(paths[-1]), top)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  summary["wall_ms"] = wall_ms
  return summary


def to_markdown(title: str, summary: dict, steps: int) -> str:
  """One stage's table: the top ops with calls, time per step and share of the device-op time."""
  lines = [f"### {title}", "",
           f"One fused call of {steps} steps: {summary['wall_ms']:.2f} ms wall, device ops busy "
           f"{summary['busy_ms']:.2f} ms over a span of {summary['span_ms']:.2f} ms ({summary['num_ops']} distinct "
           f"ops, {summary['events']} events).", "",
           "| # | op | calls | ms per step | share of device-op time |", "|---|---|---|---|---|"]
  for i, op in enumerate(summary["top"], 1):
    name = op["op"] if len(op["op"]) <= 90 else op["op"][:87] + "..."
    lines.append(f"| {i} | `{name}` | {op['calls']} | {op['ms'] / steps:.4f} | {100 * op['share']:.1f} % |")
  return "\n".join(lines) + "\n"
