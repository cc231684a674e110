"""`make reproduce-d4rl`: both papers' D4RL tables — every locomotion and AntMaze dataset x {SWG, SWG-R, SRPO} x 5
seeds with the papers' per-dataset hyperparameters — ending in results/d4rl.md and its figure results/d4rl.png.

  python -m experiments.reproduce_d4rl                                     # everything, paper preset
  python -m experiments.reproduce_d4rl --datasets=locomotion --algos=srpo --seeds=0,1
  python -m experiments.reproduce_d4rl --datasets=hopper-medium-v2 --preset=smoke --out=/tmp/d4rl

One workdir per dataset and algorithm under --out (SWG and SWG-R share one trained model). Finished runs are skipped,
unfinished ones resume from their checkpoints. A dataset that cannot be had (no internet, no file) is reported with
the exact file to put where, and the others go on. The report is rewritten after every run.

With --distributed (see experiments/train.py) every run's seeds are spread over the processes, and process 0 writes
the report.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np
from absl import app, flags, logging

from experiments import distributed_flags
from experiments.report import POLICY_NAMES, algorithm_package, mean_std

LOCOMOTION = tuple(f"{env}-{level}-v2" for level in ("medium-expert", "medium", "medium-replay")
                   for env in ("halfcheetah", "hopper", "walker2d"))
ANTMAZE = tuple(f"antmaze-{maze}-v0" for maze in ("umaze", "umaze-diverse", "medium-play", "medium-diverse",
                                                  "large-play", "large-diverse"))
GROUPS = {"locomotion": LOCOMOTION, "antmaze": ANTMAZE}
POLICIES = ("swg", "swgr", "srpo")
TRAINED_BY = {"swg": "swg", "swgr": "swg", "srpo": "srpo"}  # policy -> the run that trains it

# SRPO paper, Table 1 (D4RL normalised score). The SWG paper gives no per-dataset table (algorithms.md).
PUBLISHED_SRPO = {
    "halfcheetah-medium-expert-v2": 92.2, "hopper-medium-expert-v2": 100.1, "walker2d-medium-expert-v2": 114.0,
    "halfcheetah-medium-v2": 60.4, "hopper-medium-v2": 95.5, "walker2d-medium-v2": 84.4,
    "halfcheetah-medium-replay-v2": 51.4, "hopper-medium-replay-v2": 101.2, "walker2d-medium-replay-v2": 84.6,
    "antmaze-umaze-v0": 97.1, "antmaze-umaze-diverse-v0": 82.1, "antmaze-medium-play-v0": 80.7,
    "antmaze-medium-diverse-v0": 75.0, "antmaze-large-play-v0": 53.6, "antmaze-large-diverse-v0": 53.6,
}


def parse_datasets(spec: str) -> list[str]:
  """"all" | "locomotion" | "antmaze" | comma-separated names (groups may be mixed in)."""
  names = []
  for part in spec.split(","):
    part = part.strip()
    if part == "all":
      names += [*LOCOMOTION, *ANTMAZE]
    elif part in GROUPS:
      names += GROUPS[part]
    elif part in PUBLISHED_SRPO:
      names.append(part)
    elif part:
      raise ValueError(f"unknown dataset {part!r} in --datasets; expected all, locomotion, antmaze or names from "
                       f"{sorted(PUBLISHED_SRPO)}")
  return list(dict.fromkeys(names))


def run_config(algo: str, dataset: str, preset: str, seeds):
  config = algorithm_package(algo).get_config(f"{dataset}:{preset}")
  config.seeds = tuple(int(s) for s in seeds)
  return config


def run_one(algo: str, dataset: str, preset: str, seeds, workdir: str, download: bool) -> dict:
  """Train and evaluate one (dataset, algorithm); returns {"summary": ...} or {"missing" | "failed": message}."""
  from common.data import DatasetError
  from common.run import RunError

  summary_path = os.path.join(workdir, "summary.json")
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      print(f"[reproduce] {dataset} {algo}: finished earlier, skipped", flush=True)
      return {"summary": json.load(f)}
  print(f"[reproduce] {dataset} {algo}: training seeds {list(seeds)} in {workdir}", flush=True)
  try:
    config = run_config(algo, dataset, preset, seeds)
    return {"summary": algorithm_package(algo).train_and_evaluate(config, workdir, download=download)}
  except DatasetError as e:
    return {"missing": str(e)}
  except RunError as e:
    return {"failed": str(e)}
  except Exception as e:  # a bug in one run must not lose the others: keep the traceback beside the run
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "error.txt"), "w") as f:
      f.write(traceback.format_exc())
    return {"failed": f"{type(e).__name__}: {e} (traceback in {workdir}/error.txt)"}


def _cell(outcome: dict | None, policy: str) -> str:
  if outcome is None:
    return "not run"
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

  from common.plots import save_figure_atomic

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


def report(outcomes: dict, datasets, policies, seeds, preset: str, wall_s: float) -> str:
  """results/d4rl.md: mean ± std over seeds of the normalised score, the published SRPO numbers beside ours,
  group averages, training time per stage, the hardware and what could not be run and why."""
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

  timings, problems = [], []
  for (dataset, algo), outcome in outcomes.items():
    if "summary" in outcome:
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
  return "\n".join(lines) + "\n"


def reproduce(datasets, policies, seeds, preset: str, out: str, report_path: str, download: bool = True) -> dict:
  """Runs what is not finished, rewriting the report after each run. Returns {(dataset, algo): outcome}."""
  from common.checkpoint import write_text_atomic
  from common.distributed import is_main_process

  start = time.time()
  algos = list(dict.fromkeys(TRAINED_BY[p] for p in policies))
  outcomes = {}

  def write_report():
    if is_main_process():
      png = plot_scores(outcomes, datasets, policies, os.path.splitext(report_path)[0] + ".png")
      text = report(outcomes, datasets, policies, seeds, preset, time.time() - start)
      if png:
        text += f"\n![D4RL normalised scores]({os.path.basename(png)})\n"
      write_text_atomic(report_path, text)

  for dataset in datasets:
    for algo in algos:
      outcome = run_one(algo, dataset, preset, seeds, os.path.join(out, dataset, algo), download)
      outcomes[(dataset, algo)] = outcome
      if "missing" in outcome:
        print(f"[reproduce] {dataset}: {outcome['missing']}", flush=True)
        for other in algos:  # the same data would be missing again
          outcomes.setdefault((dataset, other), outcome)
        break
      if "failed" in outcome:
        print(f"[reproduce] {dataset} {algo} failed: {outcome['failed']}", flush=True)
      write_report()
  write_report()
  return outcomes


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined when run, not on import, so other entry points and the tests can import this module."""
  flags.DEFINE_string("datasets", "all", "all | locomotion | antmaze | comma-separated D4RL names.")
  flags.DEFINE_list("algos", list(POLICIES), "Policies to report: swg, swgr, srpo.")
  flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds, trained together per dataset.")
  flags.DEFINE_enum("preset", "paper", ("paper", "demo", "smoke"), "Config preset of both algorithms.")
  flags.DEFINE_string("out", "results/d4rl", "Root of the per-run workdirs.")
  flags.DEFINE_string("report", "results/d4rl.md", "Markdown report.")
  flags.DEFINE_bool("download", True, "Fetch missing D4RL files from their public URLs.")
  distributed_flags.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    datasets = parse_datasets(FLAGS.datasets)
    unknown = [p for p in FLAGS.algos if p not in POLICIES]
    if unknown:
      raise ValueError(f"unknown --algos {unknown}; expected some of {POLICIES}")
    seeds = [int(s) for s in FLAGS.seeds]
    distributed_flags.initialize_from_flags()
    from common import distributed
    distributed.check_seed_count(len(seeds))
  except ValueError as e:
    sys.exit(f"error: {e}")
  outcomes = reproduce(datasets, FLAGS.algos, seeds, FLAGS.preset, FLAGS.out, FLAGS.report, FLAGS.download)
  if distributed.is_main_process():
    with open(FLAGS.report) as f:
      print(f.read())
  bad = [k for k, o in outcomes.items() if "summary" not in o]
  if bad:
    sys.exit(f"{len(bad)} of {len(outcomes)} runs could not finish (see 'Not run' in {FLAGS.report})")


if __name__ == "__main__":
  define_flags()
  app.run(main)
