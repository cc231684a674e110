"""`make validate`'s outputs from its numbers: a learning-curve figure per dataset and the markdown report.

A result (what experiments/validate/__init__.py gathers per dataset) is a dict:
  {"dataset": id, "reference": {"dataset_score", "dataset_return", "policy_score", "policy_return", "policy"},
   "curves": {policy: [{"step", "score": {"mean", "std", "per_seed"} | None, "return": {...}}, ...]},
   "runs": {algo: {"last_stage", "every", "num_steps", "stage_seconds": {stage: s}, "eval_seconds"}}}
"""
from __future__ import annotations

import os

from common.checkpoint import write_text_atomic
from common.run.plots import save_figure_atomic

POLICY_NAMES = {"swg": "SWG", "swgr": "SWG-R", "srpo": "SRPO"}
POLICY_ALGO = {"swg": "swg", "swgr": "swg", "srpo": "srpo"}
COLORS = {"swg": "tab:blue", "swgr": "tab:green", "srpo": "tab:red"}


def curve_key(result: dict) -> str:
  """"score" when every point has a normalised score (the dataset has reference scores), else "return"."""
  points = [p for curve in result["curves"].values() for p in curve]
  return "score" if points and all(p.get("score") for p in points) else "return"


def plot_dataset(result: dict, path: str) -> str:
  """Score (or return) against the last stage's steps, mean ± std over seeds per policy, with the dataset's average
  and the data-making policy as horizontal lines. Returns path."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  key = curve_key(result)
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  for policy, curve in result["curves"].items():
    if not curve:
      continue
    steps = [p["step"] for p in curve]
    mean = [p[key]["mean"] for p in curve]
    std = [p[key]["std"] for p in curve]
    color = COLORS.get(policy)
    ax.plot(steps, mean, marker="o", markersize=3, color=color, label=POLICY_NAMES.get(policy, policy))
    ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color,
                    alpha=0.2, linewidth=0)
  ref = result.get("reference") or {}
  lines = (("dataset", "dataset average", "black", "--"), ("policy", ref.get("policy") or "data-making policy",
                                                            "tab:gray", ":"))
  for what, label, color, style in lines:
    value = ref.get(f"{what}_{key}")
    if value is not None:
      ax.axhline(value, color=color, linestyle=style, linewidth=1.2, label=f"{label}: {value:.1f}")
  ax.set_xlabel("steps of the last stage (SRPO: policy, SWG: diffusion)")
  ax.set_ylabel("normalised score" if key == "score" else "return")
  ax.set_title(result["dataset"])
  ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return save_figure_atomic(fig, path)


def _mean_std(stat: dict | None) -> str:
  return "n/a" if not stat else f"{stat['mean']:.1f} ± {stat['std']:.1f}"


def table_rows(result: dict) -> list[str]:
  """One markdown row per policy: final, best on the way, the two reference lines, margin, share of gap, time."""
  key = curve_key(result)
  ref = result.get("reference") or {}
  base, top = ref.get(f"dataset_{key}"), ref.get(f"policy_{key}")
  rows = []
  for policy, curve in result["curves"].items():
    if not curve:
      continue
    final = curve[-1][key]
    best = max(curve, key=lambda p: p[key]["mean"])
    margin = "n/a" if base is None else f"{final['mean'] - base:+.1f}"
    if base is None or top is None or top <= base:  # no gap to close (HalfCheetah medium: the data beat it)
      share = "n/a"
    elif final["mean"] < base:  # a share of the gap would be negative, and huge when the gap is small
      share = "below the data"
    else:  # past the data-making policy the share tops 100 % (by a lot when the gap is small): name it
      percent = f"{100 * (final['mean'] - base) / (top - base):.0f} %"
      share = f"beyond it ({percent})" if final["mean"] > top else percent
    run = result["runs"].get(POLICY_ALGO.get(policy, policy), {})
    train_s = sum(run.get("stage_seconds", {}).values())
    rows.append(f"| {result['dataset']} | {POLICY_NAMES.get(policy, policy)} | {_mean_std(final)} (step "
                f"{curve[-1]['step']}) | {best[key]['mean']:.1f} (step {best['step']}) | "
                f"{'n/a' if base is None else f'{base:.1f}'} | {'n/a' if top is None else f'{top:.1f}'} | "
                f"{margin} | {share} | {train_s / 60:.1f} + {run.get('eval_seconds', 0.0) / 60:.1f} min |")
  return rows


def report_markdown(results: list[dict], header: dict) -> str:
  """The whole report: settings, the table, per-run stage times, figure links."""
  lines = ["# `make validate`: SRPO, SWG and SWG-R learning curves", "",
           f"Preset `{header['preset']}`, seeds {header['seeds']}, {header['episodes']} evaluation episodes per seed "
           f"and point, device {header['device']}. Scores are D4RL-normalised (100 (R - random) / (expert - random)) "
           "where the dataset has reference scores; mean ± std over seeds of each seed's mean over its episodes.", "",
           "| dataset | policy | final | best on the way | dataset average | data-making policy | final − dataset "
           "average | share of the gap to the data-making policy closed | time (train + evaluations) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for result in results:
    lines += table_rows(result)
  lines += ["", "| dataset | algorithm | evaluated every | training seconds per stage | evaluation seconds |",
            "|---|---|---|---|---|"]
  for result in results:
    for algo, run in result["runs"].items():
      stages = ", ".join(f"{s} {v:.0f}" for s, v in run.get("stage_seconds", {}).items())
      lines.append(f"| {result['dataset']} | {algo} | {run['every']} {run['last_stage']} steps (of "
                   f"{run['num_steps']}) | {stages} | {run.get('eval_seconds', 0.0):.0f} |")
  lines.append("")
  for result in results:
    if result.get("figure"):
      lines.append(f"![{result['dataset']}]({result['figure']})")
  total = sum(sum(r.get("stage_seconds", {}).values()) + r.get("eval_seconds", 0.0)
              for result in results for r in result["runs"].values())
  lines += ["", f"Total time: {total / 60:.1f} minutes (training and evaluations, summed over resumed runs)."]
  return "\n".join(lines) + "\n"


def write_report(results: list[dict], header: dict, out_dir: str) -> str:
  path = os.path.join(out_dir, "report.md")
  write_text_atomic(path, report_markdown(results, header))
  return path
