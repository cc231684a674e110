"""Compile programs for one target and write what each costs as JSON (one process per target: `__main__` runs it).

  python -m experiments.aot_check.compile_target --target=h200 --out=/tmp/h200.json [--only=REGEX] [--set=calibration]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import time
import traceback

from experiments.aot_check import targets

SETS = ("product", "calibration", "scaling")


def program_set(name: str, chip) -> list:
  from experiments.aot_check import programs

  if name == "product":  # every program the project runs, and the seed-sharded chunks on 8 GPUs
    return programs.all_programs(sharded_devices=8 if chip.is_gpu else 1)
  if name == "scaling":  # the training stages at 5 (the papers' runs), 15 (a population of one environment's three
    # datasets x 5 seeds) and 32 seeds, for the cost model's estimates
    return programs.training_programs(seed_counts=(5, 15, 32))
  if name == "calibration":  # the configuration of the one H200 measurement: float32 nets, 200 fused steps
    from common import networks

    # That run predates mish's recomputation in the backward pass: compile the mish it ran (this process only).
    networks.ACTIVATIONS["mish"] = networks.mish_saving_intermediates
    return [p for p in programs.training_programs(seed_counts=(1, 8), steps=200, overrides=programs.FLOAT32,
                                                  suffix=" [f32, 200 steps]") if p.stage != "sac"]
  raise ValueError(f"unknown set {name!r}; one of {SETS}")


def compile_one(program, chip, meshes: dict, hlo_dir: str = "") -> dict:
  from experiments.aot_check import features, hlo_stats

  row = {"program": program.name, "group": program.group, "stage": program.stage, "seeds": program.seeds,
         "steps": program.steps, "devices": program.devices}
  start = time.perf_counter()
  try:
    if program.devices not in meshes:
      meshes[program.devices] = targets.mesh(chip, program.devices)
    fn, args = program.build(meshes[program.devices])
    compiled = fn.lower(*args).compile()
  except Exception as e:  # a compile error is the finding: name it, keep its first lines
    row.update(status="compile error", error=_first_lines(e), traceback=traceback.format_exc(),
               compile_s=time.perf_counter() - start)
    return row
  row["compile_s"] = time.perf_counter() - start
  text = compiled.as_text()
  if hlo_dir:
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{program.name}_seeds{program.seeds}")
    with open(os.path.join(hlo_dir, f"{name}.hlo.txt"), "w") as f:
      f.write(text)
  memory = hlo_stats.memory(compiled)
  if memory and program.dataset_bytes:  # the full dataset, compiled with fewer rows (programs.COMPILED_ROWS)
    memory = {**memory, "dataset_bytes": program.dataset_bytes,
              "peak_bytes": memory["peak_bytes"] + program.dataset_bytes}
  row.update(memory=memory, status="ok")
  if program.group in ("train", "sharded"):  # one step's kernels by kind, for the cost model and its breakdown
    try:
      row.update(features.step_features(compiled, program.steps))
    except Exception as e:  # no breakdown (no loop, an HLO form not understood): the plain counts still stand
      row["breakdown_error"] = _first_lines(e)
  if "kernels_per_step" not in row:
    cost = hlo_stats.xla_cost(compiled)
    per_step = lambda key: None if cost.get(key) is None else cost[key] / program.steps
    row.update(kernels_per_step=hlo_stats.launches_per_step(text, program.steps), flops_per_step=per_step("flops"),
               bytes_per_step=per_step("bytes_accessed"), loops_counted_once=cost.get("loops_counted_once"))
  if memory and memory["peak_bytes"] > chip.memory_bytes:
    row.update(status="out of memory", error=f"needs {memory['peak_bytes'] / 2**30:.1f} GiB of device memory, the "
                                             f"target has {chip.memory_bytes / 2**30:.1f} GiB")
  return row


def _first_lines(e: Exception, n: int = 3) -> str:
  lines = [line for line in f"{type(e).__name__}: {e}".splitlines() if line.strip()]
  return " / ".join(lines[:n])[:600]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--target", required=True, choices=sorted(targets.CHIPS))
  parser.add_argument("--out", required=True, help="JSON file to write")
  parser.add_argument("--set", default="product", choices=SETS)
  parser.add_argument("--only", default="", help="regex: compile only the programs whose name matches")
  parser.add_argument("--hlo_dir", default="", help="write each program's optimised HLO text here")
  parser.add_argument("--program_source", default="",
                      help="module:function returning the programs to compile instead of the set's")
  args = parser.parse_args(argv)
  targets.prepare_environment()
  import jax

  chip = targets.CHIPS[args.target]
  rows, meshes = [], {}
  if args.program_source:
    module, function = args.program_source.split(":")
    candidates = getattr(importlib.import_module(module), function)()
  else:
    candidates = program_set(args.set, chip)
  selected = [p for p in candidates if re.search(args.only, p.name)]
  for i, program in enumerate(selected):
    row = compile_one(program, chip, meshes, args.hlo_dir)
    rows.append(row)
    print(f"[{args.target}] {i + 1}/{len(selected)} {program.name} (seeds {program.seeds}): {row['status']} "
          f"in {row['compile_s']:.1f}s", file=sys.stderr, flush=True)
  result = {"target": args.target, "chip": chip.name, "set": args.set, "jax": jax.__version__, "rows": rows}
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
