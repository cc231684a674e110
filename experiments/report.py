"""Markdown tables of run summaries (`common.run.write_summary`) and the algorithm packages behind them, shared by
train.py, the demo and reproduce_d4rl."""
from __future__ import annotations

import importlib

POLICY_NAMES = {"swg": "SWG", "swgr": "SWG-R", "srpo": "SRPO"}


def algorithm_package(algo: str):
  """The package of training algorithm "swg" | "srpo" (get_config, train_and_evaluate)."""
  return importlib.import_module(f"{algo}_jax")


def mean_std(stat: dict | None, digits: int = 1) -> str:
  return "n/a" if not stat else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def eval_rows(summary: dict) -> list[dict]:
  """One row per evaluated policy of a run."""
  rows = []
  for name, ev in summary["eval"].items():
    rows.append({"policy": POLICY_NAMES.get(name, name), "dataset": summary["dataset"], "eval": ev,
                 "train_s": sum(summary.get("stage_seconds", {}).values())})
  return rows


def eval_table(summaries: list[dict]) -> str:
  lines = ["| policy | dataset | env | seeds x episodes | return | normalised score | training time |",
           "|---|---|---|---|---|---|---|"]
  for summary in summaries:
    for row in eval_rows(summary):
      ev = row["eval"]
      if "skipped" in ev:
        lines.append(f"| {row['policy']} | {row['dataset']} | not evaluated: {ev['skipped']} | | | | |")
        continue
      lines.append(f"| {row['policy']} | {row['dataset']} | {ev['env_id']} | {len(ev['seeds'])} x "
                   f"{ev['episodes_per_seed']} | {mean_std(ev['return'], 2)} | {mean_std(ev['score'])} | "
                   f"{row['train_s']:.0f} s |")
  return "\n".join(lines)
