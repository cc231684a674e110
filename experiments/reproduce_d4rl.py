"""`make reproduce-d4rl`: both papers' D4RL tables — every locomotion and AntMaze dataset x {SWG, SWG-R, SRPO} x 5
seeds with the papers' per-dataset hyperparameters — ending in results/d4rl.md and its figure results/d4rl.png.

  python -m experiments.reproduce_d4rl                                     # everything, paper preset
  python -m experiments.reproduce_d4rl --datasets=locomotion --algos=srpo --seeds=0,1
  python -m experiments.reproduce_d4rl --datasets=hopper-medium-v2 --preset=smoke --out=/tmp/d4rl
  python -m experiments.reproduce_d4rl --shard=2/8        # the third of 8 jobs (default: SLURM's job-array index)
  python -m experiments.reproduce_d4rl --report_only      # the report of whatever is finished, no training

One workdir per dataset and algorithm under --out (SWG and SWG-R share one trained model): that (dataset, algorithm)
run is the unit of work. Finished runs are skipped, unfinished ones resume from their checkpoints. A dataset that
cannot be had (no internet, no file) is reported with the exact file to put where, and the others go on.

--shard=i/n runs every n-th unit of the grid starting at unit i, so n jobs (e.g. a SLURM job array) share the grid
without overlap. Every job rewrites the whole report after each of its runs, from what is on disk under --out:
finished runs of all jobs, failures and missing data recorded beside the runs, and the runs not finished yet with the
shard that owns them.

With --distributed (see experiments/train.py) every run's seeds are spread over the processes, and process 0 writes
the report.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback

import numpy as np
from absl import app, flags, logging

from experiments import cli, distributed_flags
from experiments.report import POLICY_NAMES, algorithm_package, mean_std

LOCOMOTION = tuple(f"{env}-{level}-v2" for level in ("medium-expert", "medium", "medium-replay")
                   for env in ("halfcheetah", "hopper", "walker2d"))
ANTMAZE = tuple(f"antmaze-{maze}-v0" for maze in ("umaze", "umaze-diverse", "medium-play", "medium-diverse",
                                                  "large-play", "large-diverse"))
GROUPS = {"locomotion": LOCOMOTION, "antmaze": ANTMAZE}
POLICIES = ("swg", "swgr", "srpo")
TRAINED_BY = {"swg": "swg", "swgr": "swg", "srpo": "srpo"}  # policy -> the run that trains it
NOT_FINISHED = "not_finished.json"  # beside a run that ended without a summary: {"missing" | "failed": message}

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


def run_config(algo: str, dataset: str, preset: str, seeds, max_runtime_s: float = 0.0):
  config = algorithm_package(algo).get_config(f"{dataset}:{preset}")
  config.seeds = tuple(int(s) for s in seeds)
  config.max_runtime_s = float(max_runtime_s)
  return config


def run_one(algo: str, dataset: str, preset: str, seeds, workdir: str, download: bool,
            max_runtime_s: float = 0.0) -> dict:
  """Train and evaluate one (dataset, algorithm); returns {"summary": ...} or {"missing" | "failed": message}."""
  from common.data import DatasetError
  from common.distributed import is_main_process
  from common.run import RunError

  summary_path = os.path.join(workdir, "summary.json")
  if os.path.exists(summary_path):
    outcome = read_outcome(workdir)
    if "failed" in outcome:  # it diverged: the same config and seeds would diverge the same way
      print(f"[reproduce] {dataset} {algo}: failed earlier, skipped (remove {summary_path} to train it again)",
            flush=True)
      return record_not_finished(workdir, outcome)
    print(f"[reproduce] {dataset} {algo}: finished earlier, skipped", flush=True)
    return outcome
  print(f"[reproduce] {dataset} {algo}: training seeds {list(seeds)} in {workdir}", flush=True)
  if is_main_process():  # an earlier attempt's recorded outcome no longer holds while this one runs
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(workdir, NOT_FINISHED))
  try:
    config = run_config(algo, dataset, preset, seeds, max_runtime_s)
    return {"summary": algorithm_package(algo).train_and_evaluate(config, workdir, download=download)}
  except DatasetError as e:
    return record_not_finished(workdir, {"missing": str(e)})
  except RunError as e:  # a divergence among them: its summary.json records it too
    return record_not_finished(workdir, {"failed": str(e)})
  except Exception as e:  # a bug in one run must not lose the others: keep the traceback beside the run
    from common.checkpoint import write_text_atomic

    write_text_atomic(os.path.join(workdir, "error.txt"), traceback.format_exc())
    return record_not_finished(workdir, {"failed": f"{type(e).__name__}: {e} (traceback in {workdir}/error.txt)"})


def record_not_finished(workdir: str, outcome: dict) -> dict:
  """Write a run's {"missing" | "failed": message} beside it (the report of every shard reads it); returns it."""
  from common.checkpoint import write_json_atomic
  from common.distributed import is_main_process

  if is_main_process():
    try:
      write_json_atomic(os.path.join(workdir, NOT_FINISHED), outcome)
    except OSError as e:  # an unwritable --out: this process still reports the outcome it has in hand
      print(f"[reproduce] cannot record the outcome in {workdir}: {e}", file=sys.stderr, flush=True)
  return outcome


def read_outcome(workdir: str) -> dict | None:
  """What is on disk for one run: {"summary": ...} when finished, the recorded {"missing" | "failed": ...} of a run
  that ended without one (or with a summary of its failure: a diverged run), None when it has not ended (not
  started, running, or killed)."""
  def from_summary(summary: dict) -> dict:  # a diverged run's summary records its failure, not results
    return {"failed": summary["failed"]} if "failed" in summary else {"summary": summary}

  for name, wrap in (("summary.json", from_summary), (NOT_FINISHED, dict)):
    try:
      with open(os.path.join(workdir, name)) as f:
        return wrap(json.load(f))
    except FileNotFoundError:
      continue
    except (OSError, ValueError) as e:  # e.g. a file being replaced on a network file system: say so, go on
      return {"failed": f"cannot read {os.path.join(workdir, name)}: {e}"}
  return None


def grid_units(datasets, policies) -> list[tuple[str, str]]:
  """The units of work: one (dataset, training algorithm) run each, in a fixed order that every shard agrees on."""
  algos = list(dict.fromkeys(TRAINED_BY[p] for p in policies))
  return [(d, a) for d in datasets for a in algos]


def parse_shard(spec: str | None, environ=None) -> tuple[int, int]:
  """(i, n) from "--shard=i/n" (0 <= i < n), else from a SLURM job array (SLURM_ARRAY_TASK_ID minus
  SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT), else (0, 1). Raises ValueError naming what is wrong."""
  environ = os.environ if environ is None else environ
  if spec:
    source = f"--shard={spec!r}"
    parts = spec.split("/")
    try:
      i, n = (int(p) for p in parts)
    except ValueError:
      raise ValueError(f"{source}: expected i/n with whole numbers, e.g. --shard=0/4 (the first of 4 jobs)") from None
  elif environ.get("SLURM_ARRAY_TASK_ID") and environ.get("SLURM_ARRAY_TASK_COUNT"):
    source = (f"SLURM_ARRAY_TASK_ID={environ['SLURM_ARRAY_TASK_ID']!r}, SLURM_ARRAY_TASK_MIN="
              f"{environ.get('SLURM_ARRAY_TASK_MIN', '0')!r}, SLURM_ARRAY_TASK_COUNT="
              f"{environ['SLURM_ARRAY_TASK_COUNT']!r}")
    try:
      i = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
      n = int(environ["SLURM_ARRAY_TASK_COUNT"])
    except ValueError:
      raise ValueError(f"{source}: not whole numbers; pass --shard=i/n") from None
  else:
    return 0, 1
  if n < 1 or not 0 <= i < n:
    hint = " (a job array with a step, e.g. --array=0-9:2? pass --shard=i/n)" if not spec else ""
    raise ValueError(f"{source}: shard {i} of {n} does not exist; shards are numbered 0 to n-1 with n >= 1{hint}")
  return i, n


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


def report(outcomes: dict, datasets, policies, seeds, preset: str, wall_s: float, shards: int = 1) -> str:
  """results/d4rl.md: mean ± std over seeds of the normalised score, the published SRPO numbers beside ours,
  group averages, training time per stage, the hardware, what could not be run and why, and (outcome None) what is
  not finished yet, with the shard of `shards` that runs it."""
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
      shard = f" (shard {units.index((dataset, algo)) % shards} of {shards})" if shards > 1 else ""
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


def reproduce(datasets, policies, seeds, preset: str, out: str, report_path: str, download: bool = True,
              shard: tuple[int, int] = (0, 1), report_only: bool = False, max_runtime_s: float = 0.0) -> dict:
  """Runs this shard's units of the grid that are not finished (none with report_only), rewriting the whole grid's
  report after each. Returns {(dataset, algo): outcome or None (not finished)} for the whole grid."""
  from common.checkpoint import write_text_atomic
  from common.distributed import is_main_process

  start = time.time()
  units = grid_units(datasets, policies)
  index, count = shard
  mine = [] if report_only else units[index::count]
  ours = {}  # outcomes of this process, in case they could not be recorded on disk

  def grid_outcomes() -> dict:
    return {u: ours.get(u) or read_outcome(os.path.join(out, *u)) for u in units}

  def write_report() -> dict:
    outcomes = grid_outcomes()
    if is_main_process():
      png = plot_scores(outcomes, datasets, policies, os.path.splitext(report_path)[0] + ".png")
      text = report(outcomes, datasets, policies, seeds, preset, time.time() - start, shards=count)
      if png:
        text += f"\n![D4RL normalised scores]({os.path.basename(png)})\n"
      write_text_atomic(report_path, text)
    return outcomes

  if count > 1 and mine:
    print(f"[reproduce] shard {index} of {count}: {len(mine)} of {len(units)} runs: "
          + ", ".join(f"{d} {a}" for d, a in mine), flush=True)
  missing = {}  # dataset -> outcome: the same data would be missing again for its other algorithm
  for dataset, algo in mine:
    workdir = os.path.join(out, dataset, algo)
    if dataset in missing:
      outcome = record_not_finished(workdir, missing[dataset])
    else:
      outcome = run_one(algo, dataset, preset, seeds, workdir, download, max_runtime_s)
    ours[(dataset, algo)] = outcome
    if "missing" in outcome and dataset not in missing:
      missing[dataset] = outcome
      print(f"[reproduce] {dataset}: {outcome['missing']}", flush=True)
    if "failed" in outcome:
      print(f"[reproduce] {dataset} {algo} failed: {outcome['failed']}", flush=True)
    write_report()
  return write_report()


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
  flags.DEFINE_string("shard", None, "i/n: run every n-th (dataset, algorithm) run of the grid from run i, for n jobs "
                      "sharing one --out (default: SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT when set).")
  flags.DEFINE_bool("report_only", False, "Train nothing: write the report of what is finished under --out.")
  flags.DEFINE_string("max_runtime", "", "Time budget of this process (e.g. 85800, 90m, 23h50m or HH:MM:SS): "
                      "training saves and exits with status 75 before a chunk would end past it; run the same "
                      "command again to go on.")
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
    shard = parse_shard(FLAGS.shard)  # with --report_only: n names the shard of each unfinished run
    from common.interrupts import parse_duration

    max_runtime_s = parse_duration(FLAGS.max_runtime) if FLAGS.max_runtime else 0.0
    distributed_flags.initialize_from_flags()
    from common import distributed
    distributed.check_seed_count(len(seeds))
  except ValueError as e:
    sys.exit(f"error: {e}")
  from common import interrupts

  interrupts.install_process_handlers()  # SIGTERM (and SIGINT in a background job) stop with a message
  try:
    outcomes = reproduce(datasets, FLAGS.algos, seeds, FLAGS.preset, FLAGS.out, FLAGS.report, FLAGS.download,
                         shard=shard, report_only=FLAGS.report_only, max_runtime_s=max_runtime_s)
  except KeyboardInterrupt as e:
    print(f"{interrupts.stop_message(e)}; progress is saved under {FLAGS.out}: run the same command again to "
          "resume", file=sys.stderr)
    sys.exit(interrupts.exit_code(e))
  if distributed.is_main_process():
    with open(FLAGS.report) as f:
      print(f.read())
  # A shard answers for its own runs; --report_only (and an unsharded run) for the whole grid.
  own = list(outcomes) if FLAGS.report_only else grid_units(datasets, FLAGS.algos)[shard[0]::shard[1]]
  bad = [u for u in own if not outcomes[u] or "summary" not in outcomes[u]]
  if bad:
    sys.exit(f"{len(bad)} of {len(own)} runs are not finished (see 'Not run' / 'Not finished yet' in {FLAGS.report})")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
