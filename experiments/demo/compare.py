"""The demo's report: this run's numbers beside the committed reference (results/demo/), read from the files both
write — reacher.md / report.md (the Reacher table of `demo.pipeline_report`) and the toys' metrics.json."""
from __future__ import annotations

import json
import os
import re

MISSING = "—"
# One row of demo.pipeline_report's table: | policy | mean ± std | score | gain | ...
_ROW = re.compile(r"^\| (?P<policy>[^|]+?) \| (?P<mean>-?[\d.]+) ± (?P<std>[\d.]+) \| (?P<score>-?[\d.]+|nan) \| "
                  r"(?P<gain>[+-][\d.]+) \|")


def reacher_table(path: str) -> tuple[str, dict[str, dict]] | None:
  """(first line: the dataset and its reference returns, {policy: {return, std, score, gain}}) of a Reacher table,
  or None when the file is absent."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    lines = f.read().splitlines()
  rows = {}
  for line in lines:
    m = _ROW.match(line)
    if m:
      rows[m["policy"]] = {"return": float(m["mean"]), "std": float(m["std"]), "score": float(m["score"]),
                           "gain": float(m["gain"])}
  return (lines[0] if lines else ""), rows


def toy_metrics(directory: str) -> dict | None:
  """metrics.json of a toy experiment ({"meta": ..., "rows": [...]}), or None when absent."""
  path = os.path.join(directory, "metrics.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _side_by_side(run: dict | None, ref: dict | None, key_fields: tuple[str, ...], value_fields: tuple[str, ...],
                  fmt: str) -> list[str]:
  """Table rows `| keys | run v1 | ref v1 | run v2 | ref v2 ... |` over the union of both sides' rows."""
  index = lambda m: {tuple(r[k] for k in key_fields): r for r in (m or {}).get("rows", [])}
  a, b = index(run), index(ref)
  keys = list(a) + [k for k in b if k not in a]
  cell = lambda row, field: MISSING if row is None else format(row[field], fmt)
  lines = []
  for key in keys:
    cells = [f"{k:g}" if isinstance(k, float) else str(k) for k in key]
    for field in value_fields:
      cells += [cell(a.get(key), field), cell(b.get(key), field)]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _toy_sizes(run: dict | None, ref: dict | None, what: str) -> str:
  size = lambda m: "not run" if m is None else f"size `{m['meta'].get('size')}`" + (
      f", {m['meta']['samples_per_panel']} samples per panel" if "samples_per_panel" in m["meta"] else "")
  return f"This run: {size(run)}; reference: {size(ref)}. {what}"


def comparison_report(out: str, reference: str) -> str:
  """Markdown: the Reacher returns and both toys' metrics of the run in `out` beside those in `reference`."""
  run_table, ref_table = reacher_table(os.path.join(out, "reacher.md")), reacher_table(
      os.path.join(reference, "report.md"))
  lines = ["# Demo: this run beside the committed reference", "",
           f"This run: `{out}`. Reference: `{reference}` (committed, the numbers the README shows; the demo only "
           "reads it). Runs of other presets or sizes, or on other hardware, are not comparable number for number.",
           "", "## Reacher-v5: offline RL on the built-in noisy-controller dataset", "",
           f"- this run: {run_table[0] if run_table else 'not run'}",
           f"- reference: {ref_table[0] if ref_table else 'none at ' + os.path.join(reference, 'report.md')}", "",
           "| policy | return: this run | return: reference | normalised score: this run | normalised score: "
           "reference | vs dataset average: this run | vs dataset average: reference |",
           "|---|---|---|---|---|---|---|"]
  run_rows, ref_rows = (run_table or ("", {}))[1], (ref_table or ("", {}))[1]
  for policy in list(run_rows) + [p for p in ref_rows if p not in run_rows]:
    a, b = run_rows.get(policy), ref_rows.get(policy)
    ret = lambda r: MISSING if r is None else f"{r['return']:.2f} ± {r['std']:.2f}"
    num = lambda r, k, f: MISSING if r is None else format(r[k], f)
    lines.append(f"| {policy} | {ret(a)} | {ret(b)} | {num(a, 'score', '.1f')} | {num(b, 'score', '.1f')} | "
                 f"{num(a, 'gain', '+.2f')} | {num(b, 'gain', '+.2f')} |")

  swg_run, swg_ref = toy_metrics(os.path.join(out, "toy_swg")), toy_metrics(os.path.join(reference, "toy_swg"))
  lines += ["", "## SWG toy: SWG samples against the weighted target", "",
            _toy_sizes(swg_run, swg_ref, "Energy distance (lower is better; the floor compares two draws of the "
                       "target) and the share of samples off the target's support."), "",
            "| dataset | beta | ED: this run | ED: reference | ED floor: this run | ED floor: reference | "
            "off support: this run | off support: reference |", "|---|---|---|---|---|---|---|---|",
            *_side_by_side(swg_run, swg_ref, ("dataset", "beta"),
                           ("swg_vs_truth", "noise_floor", "swg_off_support"), ".4f")]
  srpo_run, srpo_ref = toy_metrics(os.path.join(out, "toy_srpo")), toy_metrics(os.path.join(reference, "toy_srpo"))
  lines += ["", "## SRPO bandit: the extracted action as 1/beta grows", "",
            _toy_sizes(srpo_run, srpo_ref, "Mean distance of the action to its target and to the nearest data "
                       "point."), "",
            "| dataset | 1/beta | to target: this run | to target: reference | to data: this run | to data: "
            "reference |", "|---|---|---|---|---|---|",
            *_side_by_side(srpo_run, srpo_ref, ("dataset", "inv_beta"), ("dist_to_target", "dist_to_data"), ".3f")]
  return "\n".join(lines) + "\n"
