"""results/d4rl.md and its figure from the runs' outcomes on disk."""
from __future__ import annotations

import numpy as np

from experiments.report import POLICY_NAMES, mean_std
from experiments.reproduce_d4rl.grid import GROUPS, PUBLISHED_SRPO, TRAINED_BY, grid_units


def _cell(outcome: dict | None, policy: str) -> str:
  if outcome is None:
    return "not finished"
  if "missing" in outcome:
    return "no data"
  if "failed" in outcome:
    return "failed"
  ev = outcome["summary"]["eval"].get(policy)
  if ev is None:
    return "not run"
  if "skipped" in ev:
    return "not evaluated"
  return mean_std(ev["score"])


def _score(outcomes: dict, dataset: str, policy: str) -> dict | None:
  """{mean, std, per_seed} of the normalised score of a finished, evaluated run's policy, else None."""
  outcome = outcomes.get((dataset, TRAINED_BY[policy]))
  ev = outcome and "summary" in outcome and outcome["summary"]["eval"].get(policy)
  return None if not ev or "skipped" in ev else ev.get("score")


def _average(outcomes: dict, datasets, policy: str) -> str:
  scores = [_score(outcomes, d, policy) for d in datasets]
  if any(s is None for s in scores):
    return f"n/a ({sum(s is not None for s in scores)} of {len(datasets)})"
  return f"{sum(s['mean'] for s in scores) / len(scores):.1f}"


def plot_scores(outcomes: dict, datasets, policies, path: str) -> str | None:
  """Horizontal bars of each policy's mean score (± std over seeds) per dataset that has one, the SRPO paper's
  number as a red tick; written to `path`. Returns the path, or None when no run has a score yet."""
  rows = [d for d in datasets if any(_score(outcomes, d, p) for p in policies)]
  if not rows:
    return None
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from common.run.plots import save_figure_atomic

  height = 0.8 / len(policies)
  fig, ax = plt.subplots(figsize=(7.0, 1.0 + 0.45 * len(rows) * max(1, len(policies) / 2)))
  for j, policy in enumerate(policies):
    scores = [_score(outcomes, d, policy) for d in rows]
    y = np.arange(len(rows)) - 0.4 + height * (j + 0.5)
    ax.barh(y, [s["mean"] if s else 0.0 for s in scores], height, xerr=[s["std"] if s else 0.0 for s in scores],
            label=POLICY_NAMES[policy], capsize=2)
  ax.plot([PUBLISHED_SRPO[d] for d in rows], np.arange(len(rows)), "|", color="crimson", markersize=22,
          markeredgewidth=2.5, label="SRPO (paper)")
  ax.set_yticks(np.arange(len(rows)), rows)
  ax.invert_yaxis()
  ax.set_xlabel("D4RL normalised score (mean ± std over seeds)")
  ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(policies) + 1, frameon=False)
  fig.tight_layout()
  return save_figure_atomic(fig, path)


def report(outcomes: dict, datasets, policies, seeds, preset: str, wall_s: float, shards: int = 1,
           owner: dict | None = None) -> str:
  """results/d4rl.md: mean ± std over seeds of the normalised score, the published SRPO numbers beside ours,
  group averages, training time per stage, the hardware, what could not be run and why, and (outcome None) what is
  not finished yet, with the shard of `shards` that runs it (owner: {(dataset, algo): shard}, default the grid's
  order)."""
  from common.run import device_description

  import jax

  lines = ["# D4RL results", "",
           f"Preset `{preset}`, seeds {list(seeds)}, {len(datasets)} datasets; device {device_description()}, "
           f"jax {jax.__version__}; wall time of this invocation {wall_s / 60:.1f} min.",
           "Cells: D4RL normalised score, mean ± std over seeds of each seed's mean over its evaluation episodes. "
           "The SRPO paper's numbers (Table 1) are beside ours; the SWG paper gives no per-dataset table.", ""]
  for group, members in GROUPS.items():
    rows = [d for d in datasets if d in members]
    if not rows:
      continue
    header = [POLICY_NAMES[p] for p in policies] + (["SRPO (paper)"] if "srpo" in policies else [])
    lines += [f"## {group}", "", "| dataset | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for d in rows:
      cells = [_cell(outcomes.get((d, TRAINED_BY[p])), p) for p in policies]
      cells += [f"{PUBLISHED_SRPO[d]:.1f}"] if "srpo" in policies else []
      lines.append(f"| {d} | " + " | ".join(cells) + " |")
    avg = [_average(outcomes, rows, p) for p in policies]
    if "srpo" in policies:
      avg.append(f"{sum(PUBLISHED_SRPO[d] for d in rows) / len(rows):.1f}")
    lines += ["| **average** | " + " | ".join(avg) + " |", ""]

  timings, problems, pending = [], [], []
  units = grid_units(datasets, policies)
  for (dataset, algo), outcome in outcomes.items():
    if outcome is None:
      which = owner[(dataset, algo)] if owner else units.index((dataset, algo)) % shards
      shard = f" (shard {which} of {shards})" if shards > 1 else ""
      pending.append(f"- {dataset} / {algo}{shard}")
    elif "summary" in outcome:
      s = outcome["summary"]
      stages = ", ".join(f"{k} {v:.0f}" for k, v in s.get("stage_seconds", {}).items())
      envs = {ev.get("env_id") or ev.get("skipped") for ev in s["eval"].values()}
      versions = {f"gymnasium {ev['gymnasium_version']}, mujoco {ev['mujoco_version']}" for ev in s["eval"].values()
                  if "env_id" in ev}
      timings.append(f"| {dataset} | {algo} | {stages} | {'; '.join(sorted(map(str, envs)))}"
                     f"{' (' + '; '.join(sorted(versions)) + ')' if versions else ''} |")
    else:
      problems.append(f"- {dataset} / {algo}: {outcome.get('missing') or outcome.get('failed')}")
  if timings:
    lines += ["## Training time per stage (seconds, all seeds together)", "", "| dataset | run | stages | eval env |",
              "|---|---|---|---|", *timings]
  if problems:
    lines += ["", "## Not run", "", *problems]
  if pending:
    lines += ["", f"## Not finished yet ({len(pending)} of {len(outcomes)} runs)", "",
              "Not started, still running, or stopped before their summary (rerun the same command, with the same "
              "--shard, to resume them):", "", *pending]
  return "\n".join(lines) + "\n"


