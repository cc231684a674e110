"""`make gpu-check`: does this project work on this accelerator, and how fast? One command, at most 8 minutes on one
GPU.

Parts (each in its own try/except: a failing part reports its error and the others go on; exit code 1 if any failed):
  environment  device(s), jax / jaxlib / flax versions, CUDA versions (from jax's CUDA plugin; 'n/a' elsewhere)
  dataset      the built-in Reacher dataset (experiments.make_dataset; needs gymnasium, minari, mujoco)
  swg, srpo    both algorithms end to end on it: 2 seeds trained, every sampler acting, one episode per seed
  training     the bench's training rows at 1, 8 and 32 seeds (fused), seed-scaling ratios, SRPO pipeline estimate
  latency      the bench's action-selection latencies
  profile      one fused chunk of each stage under jax.profiler: the 15 most expensive device ops
Writes summary.md, summary.json, profile.md and log.txt (tracebacks) into --out_dir and prints a summary table last.

  python3 -m experiments.gpu_check                 # --size=full, on an accelerator
  python3 -m experiments.gpu_check --size=smoke    # tiny everything: a CPU wiring check in about a minute
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import re
import sys
import time
import traceback

# (label, config overrides) of the training rows: every stage is measured once per entry, on the fields its configs
# have (bench_training.apply_overrides); the first entry is the baseline and keeps the bench's row names. A/B rows
# are one line each, e.g. ("bf16", {"compute_dtype": "bfloat16"}). The precision option: the defaults (bf16 diffusion
# nets on accelerators) against everything in float32.
VARIANTS = [("default", {}), ("f32", {"compute_dtype": "float32"})]

SIZES = {
    # Tiny networks and step counts: checks every code path on a CPU, its numbers mean nothing.
    # The A/B variants are measured at variant_seeds (the baseline at every count of seeds); smoke measures none.
    "smoke": dict(preset="smoke", e2e_preset="smoke", e2e_steps=5, episodes=3, reference_episodes=1, seeds=(1, 2),
                  variants=1, variant_seeds=(1, 2),
                  repeats=1, min_seconds=0.01, fused_steps=2, matmul_n=256, latency_states=(1,), profile_steps=2,
                  # two methods, not seven: the swg / srpo parts already run every sampler (each one more compile)
                  latency_methods=("SRPO policy (one MLP forward)", "SWG guided DPM-Solver++ 5 steps")),
    # Paper networks for the rows; from the measured H200 rates (behaviour 1790 steps/s at 1 seed, the slowest stage
    # ~100 steps/s at 32 seeds) a fused call lasts < 0.2 s and compiles dominate: about 5 to 6 minutes in all.
    "full": dict(preset="paper", e2e_preset="demo", e2e_steps=300, episodes=60, reference_episodes=10,
                 seeds=(1, 8, 32), variants=len(VARIANTS), variant_seeds=(1, 8), repeats=3, min_seconds=0.3,
                 fused_steps=0, matmul_n=None,
                 latency_states=(1, 64, 256), profile_steps=0, latency_methods=None),
}
PARTS = ("environment", "dataset", "swg", "srpo", "training", "latency", "profile")


def environment() -> dict:
  """Devices, package versions and, on NVIDIA GPUs, the CUDA versions jax's plugin reports."""
  import jax

  versions = {}
  for package in ("jax", "jaxlib", "flax", "optax", "numpy", "jax-cuda12-plugin", "jax-cuda13-plugin"):
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
      versions[package] = importlib.metadata.version(package)
  cuda = "n/a"
  with contextlib.suppress(Exception):
    from jax._src.lib import cuda_versions

    if cuda_versions is not None:
      cuda = (f"runtime {cuda_versions.cuda_runtime_get_version()}, driver {cuda_versions.cuda_driver_get_version()},"
              f" cuDNN {cuda_versions.cudnn_get_version()}")
  devices = jax.devices()
  return {"backend": jax.default_backend(), "devices": [getattr(d, "device_kind", str(d)) for d in devices],
          "num_devices": len(devices), "platform_version": devices[0].client.platform_version,
          "versions": versions, "cuda": cuda, "python": sys.version.split()[0]}


def training_rows(size: dict, variants=None) -> dict:
  """The bench's fused training rows for every stage, seed count and variant, with the bench's report pieces."""
  from experiments.bench import report as bench_report
  from experiments.bench import training as bench_training

  env = bench_training.machine_description()
  results = {"machine": env, "matmul_gflops": bench_training.matmul_gflops(n=size["matmul_n"], repeats=3),
             "rows": []}
  variants = variants or VARIANTS[:size.get("variants", len(VARIANTS))]
  inspect = model_prediction(env["device"]) if env["platform"] != "cpu" else None
  for label, overrides in variants:
    stages = [(make_stage(overrides, preset=size["preset"]), steps)
              for make_stage, steps in bench_training.STAGES.values()]
    unknown = set(overrides) - set().union(*(stage.overridden for stage, _ in stages))
    if unknown:  # before any work: a misspelt field must not measure the baseline twice
      raise KeyError(f"variant {label!r}: no stage config has the field(s) {sorted(unknown)}")
    for stage, default_steps in stages:
      if label != variants[0][0]:  # the baseline keeps the bench's names, which the targets look up
        stage = stage._replace(name=f"{stage.name} [{label}]")
      for n in size["seeds"] if label == variants[0][0] else size.get("variant_seeds", size["seeds"]):
        results["rows"] += bench_training.measure_stage(stage, n, size["fused_steps"] or default_steps,
                                                        size["repeats"], size["min_seconds"], modes=("fused",),
                                                        device=env["device"], xla_count=False, inspect=inspect)
  results["scaling"] = bench_report.seed_scaling(results["rows"])
  results["pipelines"] = bench_report.pipeline_estimates(results)
  if env["platform"] != "cpu":  # the bench's CPU targets are for paper networks on the 2-core development CPU
    results["targets"] = bench_report.evaluate_accelerator_targets(results)
  return results


def model_prediction(device_kind: str, summary: str = ""):
  """inspect(compiled, steps) -> the cost model's steps/s for the compiled chunk (`make aot-check`'s fit, for this
  GPU), or None where there is no fit for this device."""
  from experiments.aot_check import cost_model, features

  model = cost_model.load(summary or cost_model.DEFAULT_SUMMARY, device_kind)
  if model is None:
    return None

  def inspect(compiled, steps: int) -> dict:
    try:
      return {"model_steps_per_sec": model.steps_per_second(features.step_features(compiled, steps))}
    except Exception as e:  # a prediction that cannot be made must not lose the measurement
      return {"model_error": f"{type(e).__name__}: {e}"[:200]}

  return inspect


def model_markdown(rows: list[dict]) -> list[str]:
  """Measured fused rows beside the cost model's estimate for the same compiled program."""
  rows = [r for r in rows if r.get("model_steps_per_sec")]
  if not rows:
    return []
  lines = ["", "Measured against the cost model of `make aot-check` (fitted to an earlier H200 run):", "",
           "| stage | seeds | measured steps/s | model steps/s | model error |", "|---|---|---|---|---|"]
  for r in rows:
    error = r["model_steps_per_sec"] / r["steps_per_sec"] - 1
    lines.append(f"| {r['stage']} | {r['seeds']} | {r['steps_per_sec']:.0f} | {r['model_steps_per_sec']:.0f} | "
                 f"{100 * error:+.0f} % |")
  return lines


def latency(size: dict) -> list[dict]:
  from experiments.bench import latency as bench_latency

  return bench_latency.action_latency(size["repeats"], size["latency_states"], preset=size["preset"],
                                      only=size["latency_methods"])


def profile(size: dict) -> dict:
  """One fused chunk (1 seed) of each stage under the profiler, after a compile and a warm-up call."""
  import jax
  import jax.numpy as jnp

  from common.training import init_seeds, make_chunk_fn, seed_keys
  from experiments.bench import training as bench_training
  from experiments.gpu_check import profiling as gpu_check_profile

  out = {}
  for name, (make_stage, default_steps) in bench_training.STAGES.items():
    stage = make_stage(None, preset=size["preset"])
    steps = size["profile_steps"] or default_steps
    keys = seed_keys([0])
    state = jax.jit(lambda k, f=stage.init_fn: init_seeds(f, k))(keys)
    chunk = jax.jit(make_chunk_fn(stage.step_fn, steps))
    jax.block_until_ready(chunk(state, stage.data, keys, jnp.uint32(0)))
    summary = gpu_check_profile.profile_call(lambda: chunk(state, stage.data, keys, jnp.uint32(steps)))
    out[stage.name] = dict(summary, steps=steps)
  return out


def _key_numbers(part: str, value) -> str:
  """One short line of the numbers that matter for the summary table."""
  if part == "environment":
    return f"{value['devices'][0]} x{value['num_devices']}, jax {value['versions'].get('jax')}, CUDA {value['cuda']}"
  if part == "dataset":
    return value["id"]
  if part in ("swg", "srpo"):
    ms = ", ".join(f"{k} {v['ms']:.1f} ms" for k, v in value["samplers"].items())
    return (f"trained in {value['train_s']:.0f} s; eval return {value['evaluation']['return_mean']:.1f}; "
            f"64 states: {ms}")
  if part == "training":
    ratios = "; ".join(f"{s['stage'].split(' step')[0]}{s['stage'].split(')')[-1]} "
                       + ", ".join(f"{n}:{r:.2f}x" for n, r in s["ratios"].items()) for s in value["scaling"])
    srpo = next(p for p in value["pipelines"] if p["pipeline"] == "SRPO")
    hours = "—" if srpo["hours"] is None else f"{srpo['hours']:.2f} h"
    return f"time/step N seeds / 1: {ratios}; SRPO pipeline 5 seeds {hours}"
  if part == "latency":
    one = {r["method"]: r["ms"] for r in value if r["states"] == 1}
    return "; ".join(f"{k} {v:.2f} ms" for k, v in one.items() if "DPM-Solver++ 5" in k or "SRPO policy" in k
                     or k == "SWG guided DDPM-15")
  if part == "profile":
    return "; ".join(f"{name.split(' step')[0]}: top op {p['top'][0]['op'][:30]} {100 * p['top'][0]['share']:.0f} %"
                     for name, p in value.items() if p["top"])
  return ""


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "device"


def summary_markdown(env, size_name: str, records: list[dict], values: dict) -> tuple[str, str]:
  """(summary.md, profile.md)."""
  from experiments.bench import report as bench_report
  from experiments.gpu_check import profiling as gpu_check_profile

  lines = [f"# gpu-check ({size_name})", ""]
  if env:
    lines += [f"Devices: {', '.join(env['devices'])} ({env['backend']}, {env['platform_version']}); CUDA: "
              f"{env['cuda']}; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) +
              f"; Python {env['python']}.", ""]
  lines += ["| part | status | key numbers | seconds |", "|---|---|---|---|"]
  lines += [f"| {r['part']} | {r['status']} | {r['key'] if r['status'] == 'ok' else r['error']} | "
            f"{r['seconds']:.1f} |" for r in records]
  for name in ("swg", "srpo"):
    if name in values:
      lines += ["", f"## {name.upper()} end to end", "", "| sampler | ms (64 states, after compile) | max abs action |",
                "|---|---|---|"]
      lines += [f"| {k} | {v['ms']:.2f} | {v['max_abs']:.3f} |" for k, v in values[name]["samplers"].items()]
      ev = values[name]["evaluation"]
      lines += ["", f"Evaluation, one episode per seed: returns {ev['returns']} (in {ev['eval_s']:.1f} s)."]
  if "training" in values or "latency" in values:
    results = dict(values.get("training") or {"rows": [], "matmul_gflops": float("nan"), "machine": None})
    if results["machine"] is None:
      from experiments.bench.training import machine_description
      results["machine"] = machine_description()
    results["latency"] = values.get("latency") or []
    lines += ["", "## Bench rows", "", bench_report.to_markdown(results)] + model_markdown(results["rows"])
  profile_md = [gpu_check_profile.to_markdown(name, p, p["steps"]) for name, p in values.get("profile", {}).items()]
  return "\n".join(lines) + "\n", "\n".join(["# Profile: one fused chunk per stage, 1 seed", ""] + profile_md)


def run_part(name: str, fn, log) -> tuple[dict, object]:
  """Run fn(); a failure becomes one line (printed) and its traceback (into the log)."""
  print(f"[gpu-check] {name} ...", flush=True)
  start = time.perf_counter()
  try:
    value = fn()
    record = {"part": name, "status": "ok", "key": _key_numbers(name, value), "error": ""}
  except Exception as e:  # every part reports its own failure; the others go on
    value = None
    record = {"part": name, "status": "FAILED", "key": "", "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    log.write(f"== {name} FAILED\n{traceback.format_exc()}\n")
  record["seconds"] = time.perf_counter() - start
  log.write(f"== {name}: {record['status']} in {record['seconds']:.1f} s {record['key'] or record['error']}\n")
  log.flush()
  print(f"[gpu-check] {name}: {record['status']} in {record['seconds']:.1f} s  {record['key'] or record['error']}",
        flush=True)
  return record, value


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.gpu_check", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", default="full", choices=tuple(SIZES))
  parser.add_argument("--out_dir", default="", help="default: results/gpu_check/<device>")
  parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
  args = parser.parse_args(argv)
  parts = [p for p in args.parts.split(",") if p]
  unknown = [p for p in parts if p not in PARTS]
  if unknown:
    print(f"error: --parts: unknown part(s) {unknown}; expected some of {list(PARTS)}", file=sys.stderr)
    return 2
  size = SIZES[args.size]
  import jax

  from common.checkpoint import write_json_atomic, write_text_atomic
  from experiments.gpu_check import end_to_end as gpu_check_e2e

  out_dir = args.out_dir or os.path.join("results", "gpu_check", _slug(getattr(jax.devices()[0], "device_kind", "")))
  os.makedirs(out_dir, exist_ok=True)
  start = time.perf_counter()
  records, values = [], {}
  with open(os.path.join(out_dir, "log.txt"), "w") as log, contextlib.ExitStack() as stack:
    def dataset():
      cm = gpu_check_e2e.reacher_dataset(size["episodes"], size["reference_episodes"])
      return {"id": stack.enter_context(cm)}

    def end_to_end(fn):
      if "dataset" not in values:
        raise RuntimeError("needs the dataset part, which " + ("failed" if "dataset" in parts else "was not run"))
      return lambda: fn(values["dataset"]["id"], size["e2e_preset"], size["e2e_steps"])

    jobs = {"environment": environment, "dataset": dataset,
            "swg": lambda: end_to_end(gpu_check_e2e.swg_end_to_end)(),
            "srpo": lambda: end_to_end(gpu_check_e2e.srpo_end_to_end)(),
            "training": lambda: training_rows(size), "latency": lambda: latency(size), "profile": lambda: profile(size)}
    for name in parts:
      record, value = run_part(name, jobs[name], log)
      records.append(record)
      if value is not None:
        values[name] = value
  summary, profile_md = summary_markdown(values.get("environment"), args.size, records, values)
  write_json_atomic(os.path.join(out_dir, "summary.json"),
                    {"size": args.size, "parts": records, "results": values,
                     "total_s": time.perf_counter() - start})
  write_text_atomic(os.path.join(out_dir, "summary.md"), summary)
  if "profile" in values:
    write_text_atomic(os.path.join(out_dir, "profile.md"), profile_md)
  failed = [r["part"] for r in records if r["status"] != "ok"]
  print(f"\ngpu-check ({args.size}) on {out_dir}: {len(records) - len(failed)}/{len(records)} parts ok in "
        f"{time.perf_counter() - start:.0f} s" + (f"; FAILED: {', '.join(failed)} (tracebacks in log.txt)"
                                                   if failed else ""))
  print("| part | status | key numbers | seconds |\n|---|---|---|---|")
  for r in records:
    print(f"| {r['part']} | {r['status']} | {r['key'] if r['status'] == 'ok' else r['error']} | {r['seconds']:.1f} |")
  return 1 if failed else 0

