"""`make aot-check`: compile every program the project runs for H100, H200, TPU v5e and TPU v4 on a machine without any
of them, report what each costs, and estimate GPU speed with a cost model fitted to the one real H200 run.

  python -m experiments.aot_check                          # every target (needs `pip install .[aot]`)
  python -m experiments.aot_check --targets=h200 --only=sample

One process per target compiles its programs (`compile_target`); this one gathers their rows, fits the model, writes
summary.md and summary.json into --out_dir and prints the failures. Exit code 1 when any program fails to compile or
needs more device memory than its target has; each failure is named with its target.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from experiments.aot_check import targets

# What each target compiles besides every program ("product"): the 32-seed training programs where the model gives
# estimates, and on the measured chip the programs of the measurement, to fit the model to.
EXTRA_SETS = {"h200": ("scaling", "calibration"), "h100": ("scaling",)}
MODEL_TARGETS = ("h200", "h100")  # chips of the measured architecture; TPUs have no measurement to fit to


def compile_all(target: str, sets: list[str], only: str, program_source: str, out_dir: str,
                timeout_s: float) -> list[dict]:
  """Every set of one target in a child process; its log goes to out_dir/log_<target>.txt."""
  rows = []
  log_path = os.path.join(out_dir, f"log_{target}.txt")
  with open(log_path, "w") as log:
    for name in sets:
      with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
      cmd = [sys.executable, "-m", "experiments.aot_check.compile_target", f"--target={target}", f"--set={name}",
             f"--out={out}", f"--only={only}"] + ([f"--program_source={program_source}"] if program_source else [])
      print(f"[{target}] compiling the {name} programs ...", flush=True)
      try:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        failed = None if done.returncode == 0 else f"exit code {done.returncode}"
      except subprocess.TimeoutExpired:
        failed = f"no answer within {timeout_s:.0f} s"
      if failed:
        rows.append({"program": f"({name} programs)", "group": name, "stage": "", "seeds": 0, "steps": 0,
                     "devices": 0, "compile_s": 0.0, "status": "compiler crashed",
                     "error": f"{failed}; see {log_path}"})
        continue
      with open(out) as f:
        result = json.load(f)
      os.unlink(out)
      rows += [{**row, "target": target, "set": name} for row in result["rows"]]
  for row in rows:
    row.setdefault("target", target)
  return rows


def model_part(rows: list[dict]) -> dict | None:
  """The fit on the calibration rows and the estimates for each GPU target; None without calibration rows."""
  from experiments.aot_check import cost_model, estimates

  calibration = [r for r in rows if r.get("set") == "calibration" and r["status"] == "ok" and "gemm_flops_by_dtype" in r]
  if not calibration:
    return None
  fitted = cost_model.fit(calibration)
  model = fitted.model
  out = {"model": model, "fit": fitted.rows, "matrix_efficiency_range": fitted.matrix_efficiency_range,
         "targets": {}}
  for target in MODEL_TARGETS:
    trained = estimates.training_rows(rows, target)
    if not trained:
      continue
    chip_model = model.for_chip(targets.CHIPS[target])
    pipelines = estimates.pipeline_hours(chip_model, trained)
    out["targets"][target] = {"stages": estimates.stage_estimates(chip_model, trained), "pipelines": pipelines,
                              "table_hours": estimates.table_hours(pipelines),
                              "populations": estimates.population_rates(chip_model, trained),
                              "population_table_hours": estimates.population_table_hours(chip_model, trained),
                              "where": estimates.where_time_goes(chip_model, trained)}
  return out


def _jsonable(summary: dict) -> dict:
  out = dict(summary)
  if out.get("model"):
    m = out["model"]["model"]
    out["model"] = {**out["model"], "model": {"chip": m.chip.name, "matrix_efficiency": m.matrix_efficiency,
                                              "memory_efficiency": m.memory_efficiency,
                                              "launch_seconds": m.launch_seconds}}
  out["rows"] = [{k: v for k, v in r.items() if k != "traceback"} for r in out["rows"]]
  return out


def _write_atomic(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.aot_check", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--targets", default=",".join(targets.DEFAULT_TARGETS),
                      help=f"comma-separated, of {sorted(targets.CHIPS)}")
  parser.add_argument("--out_dir", default="results/aot_check")
  parser.add_argument("--only", default="", help="regex: only the programs whose name matches (no model fit)")
  parser.add_argument("--program_source", default="",
                      help="module:function returning a list of programs.Program to compile instead of the project's")
  parser.add_argument("--timeout_s", type=float, default=3600.0, help="per target and set")
  args = parser.parse_args(argv)
  chosen = [t for t in args.targets.split(",") if t]
  unknown = [t for t in chosen if t not in targets.CHIPS]
  if unknown or not chosen:
    print(f"error: --targets={args.targets}: unknown target(s) {unknown}; choose from {sorted(targets.CHIPS)}",
          file=sys.stderr)
    return 2
  try:
    os.makedirs(args.out_dir, exist_ok=True)
  except OSError as e:
    print(f"error: --out_dir={args.out_dir}: cannot create it ({e.strerror})", file=sys.stderr)
    return 2
  targets.prepare_environment()
  start = time.time()
  rows = []
  for target in chosen:
    extra = () if (args.only or args.program_source) else EXTRA_SETS.get(target, ())
    rows += compile_all(target, ["product", *extra], args.only, args.program_source, args.out_dir, args.timeout_s)
  import jax

  summary = {"date": datetime.date.today().isoformat(), "jax": jax.__version__,
             "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
             "chips": {t: targets.CHIPS[t].name for t in chosen}, "rows": rows, "seconds": time.time() - start}
  summary["model"] = model_part(rows)
  from experiments.aot_check import report

  _write_atomic(os.path.join(args.out_dir, "summary.md"), report.to_markdown(summary))
  _write_atomic(os.path.join(args.out_dir, "summary.json"), json.dumps(_jsonable(summary), indent=1, default=str))
  failed = report.failures(rows)
  print(f"{len(rows)} programs compiled for {', '.join(chosen)} in {summary['seconds'] / 60:.1f} min; "
        f"{len(failed)} failed. Report: {os.path.join(args.out_dir, 'summary.md')}")
  for line in failed:
    print(f"FAILED {line}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
