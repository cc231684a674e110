"""summary.md of `make aot-check`: what compiled for which target, what each program costs, the cost model's fit and
its estimates."""
from __future__ import annotations

from experiments.aot_check import estimates
from experiments.aot_check.cost_model import MEASURED_DEVICE, MEASURED_JAX, rms_log_error

GIB, MB = 2**30, 1e6


def _num(x, fmt: str, scale: float = 1.0) -> str:
  return "—" if x is None else format(x / scale, fmt)


def failures(rows: list[dict]) -> list[str]:
  return [f"{r['target']}: {r['program']} (seeds {r['seeds']}): {r['status']}: {r.get('error', '')}"
          for r in rows if r["status"] != "ok"]


def programs_table(rows: list[dict]) -> list[str]:
  lines = ["| program | seeds | devices | target | status | kernels per step | GFLOP per step | MB per step | "
           "peak memory (GiB) | compile (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    memory = (r.get("memory") or {}).get("peak_bytes")
    lines.append(f"| {r['program']} | {r['seeds']} | {r['devices']} | {r['target']} | {r['status']} | "
                 f"{_num(r.get('kernels_per_step'), '.1f')} | {_num(r.get('flops_per_step'), '.3g', 1e9)} | "
                 f"{_num(r.get('bytes_per_step'), '.4g', MB)} | {_num(memory, '.2f', GIB)} | {r['compile_s']:.1f} |")
  return lines


def fit_table(model, report: list[dict], matrix_range: tuple[float, float]) -> list[str]:
  lo, hi = matrix_range
  open_above = (f" (every value from {100 * lo:.0f} % to {100 * hi:.0f} % fits as well: no measured row is bound by "
                f"compute, so estimates of compute-bound steps are upper bounds on their time)" if hi > 1.5 * lo else "")
  lines = [f"Fitted on the {MEASURED_DEVICE} run (jax {MEASURED_JAX}, float32 nets, 200 fused steps per call), "
           f"compiled again here: matrix rate {100 * model.matrix_efficiency:.1f} % of the chip's peak{open_above}, "
           f"memory {100 * model.memory_efficiency:.1f} % of its bandwidth, {1e6 * model.launch_seconds:.2f} us per "
           f"kernel launch; RMS error {100 * rms_log_error(report):.0f} % (log scale).", "",
           "| stage | seeds | measured steps/s | model steps/s | error | bound by | compute / memory / launches (us) |",
           "|---|---|---|---|---|---|---|"]
  for r in report:
    lines.append(f"| {estimates.STAGE_NAMES[r['stage']]} | {r['seeds']} | {r['measured']:.0f} | {r['predicted']:.0f} | "
                 f"{100 * r['error']:+.0f} % | {r['bound']} | {1e6 * r['compute']:.0f} / {1e6 * r['memory']:.0f} / "
                 f"{1e6 * r['launches']:.0f} |")
  return lines


def estimates_table(stages: list[dict]) -> list[str]:
  counts = sorted({n for s in stages for n in s["steps_per_sec"]})
  lines = ["| stage | " + " | ".join(f"steps/s, {n} seed{'s' if n > 1 else ''}" for n in counts) +
           f" | {estimates.SCALING_SEEDS} seeds / 1 (goal <= {estimates.SCALING_GOAL:g}) | bound by (1 / 8 seeds) |",
           "|---|" + "---|" * (len(counts) + 2)]
  for s in stages:
    rates = " | ".join(_num(s["steps_per_sec"].get(n), ".0f") for n in counts)
    ratio = "—" if s["ratio"] is None else f"{s['ratio']:.2f}x" + (" (met)" if s["ratio"] <= estimates.SCALING_GOAL
                                                                      else " (missed)")
    bounds = " / ".join(s["bound"].get(n, "—") for n in (1, estimates.SCALING_SEEDS))
    lines.append(f"| {estimates.STAGE_NAMES[s['stage']]} | {rates} | {ratio} | {bounds} |")
  return lines


def population_table(stages: list[dict]) -> list[str]:
  counts = sorted({n for s in stages for n in s["member_steps_per_sec"]})
  lines = ["| stage | " + " | ".join(f"{n} member{'s' if n > 1 else ''}" for n in counts) + " |",
           "|---|" + "---|" * len(counts)]
  for s in stages:
    cells = [f"{s['member_steps_per_sec'][n]:.0f} ({s['speedup'][n]:.1f}x)" if n in s["member_steps_per_sec"] else "—"
             for n in counts]
    lines.append(f"| {estimates.STAGE_NAMES[s['stage']]} | " + " | ".join(cells) + " |")
  return lines


def breakdown_tables(where: list[dict]) -> list[str]:
  lines = []
  for w in where:
    total = w["step_seconds"]
    lines += ["", f"{estimates.STAGE_NAMES[w['stage']]}, {w['seeds']} seed{'s' if w['seeds'] > 1 else ''}: "
              f"{1e6 * total:.0f} us per step", "",
              "| kernels of | launches | MB | GFLOP (matmul) | share of the step's time |", "|---|---|---|---|---|"]
    for g in w["groups"]:
      lines.append(f"| {g['group']} | {g['kernels']} | {g['bytes'] / MB:.1f} | {g['flops'] / 1e9:.2f} | "
                   f"{100 * g['seconds'] / total:.0f} % |")
  return lines


def _hours(h) -> str:
  return "—" if h is None else (f"{h:.1f} h" if h >= 1 else f"{60 * h:.0f} min")


def to_markdown(summary: dict) -> str:
  rows = summary["rows"]
  failed = failures(rows)
  lines = [f"# Ahead-of-time compile check ({summary['date']})", "",
           f"jax {summary['jax']}, compiled on {summary['machine']} without any accelerator for: "
           + ", ".join(f"{t} ({c})" for t, c in summary["chips"].items()) + ". "
           f"{len(rows)} programs compiled, {len(failed)} failed, in {summary['seconds'] / 60:.1f} min.", ""]
  if failed:
    lines += ["## Failures", ""] + [f"- {f}" for f in failed] + [""]
  model_part = summary.get("model")
  if model_part:
    lines += ["## Cost model (estimates, not measurements)", "",
              "time per step = max(matrix FLOPs / (e_matrix x peak), bytes / (e_memory x bandwidth)) + launches x "
              "launch cost.", ""]
    lines += fit_table(model_part["model"], model_part["fit"], model_part["matrix_efficiency_range"])
    for target, part in model_part["targets"].items():
      lines += ["", f"### {target}: estimated steps/s of the default programs (accelerator precision, fused)", ""]
      lines += estimates_table(part["stages"])
      p = part["pipelines"]
      lines += ["", f"Paper pipelines for {estimates.PIPELINE_SEEDS} seeds at once (training steps only, from the "
                f"{estimates.PIPELINE_SEEDS}-seed programs): SRPO {_hours(p['SRPO'])} (goal < "
                f"{estimates.SRPO_PIPELINE_GOAL_H:g} h), SWG {_hours(p['SWG'])}; the locomotion table "
                f"({estimates.LOCOMOTION_DATASETS} datasets x SWG and SRPO x {estimates.PIPELINE_SEEDS} seeds, one run "
                f"after another) {_hours(part['table_hours'])} (goal < {estimates.TABLE_GOAL_H:g} h)."]
      if part.get("populations"):
        lines += ["", f"Populations ({target}, by the model): one program trains N members (seeds x datasets of one "
                  f"environment x swept values); member-steps/s against N runs of one member one after another.", ""]
        lines += population_table(part["populations"])
        lines += ["", f"The locomotion table as {estimates.LOCOMOTION_DATASETS // estimates.LEVELS_PER_ENVIRONMENT} "
                  f"populations per algorithm ({estimates.LEVELS_PER_ENVIRONMENT} datasets x "
                  f"{estimates.PIPELINE_SEEDS} seeds = {estimates.POPULATION_MEMBERS} members each), one after "
                  f"another: {_hours(part.get('population_table_hours'))} (runs one after another: "
                  f"{_hours(part['table_hours'])})."]
      if part.get("where"):
        lines += ["", f"Where the time of a step goes ({target}, by the model):"] + breakdown_tables(part["where"])
  lines += ["", "## Every program", "", "Kernels per step: GPU kernel launches, TPU ops of the optimised HLO (loops "
            "counted as often as they run); FLOPs and bytes: XLA's cost analysis (bytes: what the kernels read and "
            "write); a sampler's or policy's step is one call. Peak memory: arguments, outputs not aliased to "
            "donated inputs, temporaries, and the full dataset of a training chunk.", ""]
  lines += programs_table(rows)
  return "\n".join(lines) + "\n"
