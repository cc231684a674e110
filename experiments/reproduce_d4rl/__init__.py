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

from absl import app, flags, logging

from experiments import cli, distributed_flags
from experiments.report import algorithm_package
from experiments.reproduce_d4rl.grid import (ANTMAZE, GROUPS, LOCOMOTION, NOT_FINISHED, POLICIES,  # noqa: F401
                                             PUBLISHED_SRPO, TRAINED_BY, grid_units, parse_datasets, parse_shard)
from experiments.reproduce_d4rl import groups
from experiments.reproduce_d4rl.report import plot_scores, report  # noqa: F401

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


def reproduce(datasets, policies, seeds, preset: str, out: str, report_path: str, download: bool = True,
              shard: tuple[int, int] = (0, 1), report_only: bool = False, max_runtime_s: float = 0.0,
              populations: bool = False) -> dict:
  """Runs this shard's units of the grid that are not finished (none with report_only), rewriting the whole grid's
  report after each. With `populations` a unit is one algorithm's runs on the datasets of one environment, trained
  as one program (`groups`); the runs' folders and the report are the same. Returns {(dataset, algo): outcome or
  None (not finished)} for the whole grid."""
  from common.checkpoint import write_text_atomic
  from common.distributed import is_main_process

  start = time.time()
  units = grid_units(datasets, policies)
  work = groups.group_units(units) if populations else [[u] for u in units]
  index, count = shard
  owner = {u: i % count for i, group in enumerate(work) for u in group}
  mine = [] if report_only else work[index::count]
  ours = {}  # outcomes of this process, in case they could not be recorded on disk

  def grid_outcomes() -> dict:
    return {u: ours.get(u) or read_outcome(os.path.join(out, *u)) for u in units}

  def write_report() -> dict:
    outcomes = grid_outcomes()
    if is_main_process():
      png = plot_scores(outcomes, datasets, policies, os.path.splitext(report_path)[0] + ".png")
      text = report(outcomes, datasets, policies, seeds, preset, time.time() - start, shards=count, owner=owner)
      if png:
        text += f"\n![D4RL normalised scores]({os.path.basename(png)})\n"
      write_text_atomic(report_path, text)
    return outcomes

  if count > 1 and mine:
    print(f"[reproduce] shard {index} of {count}: {sum(map(len, mine))} of {len(units)} runs: "
          + ", ".join(f"{d} {a}" for group in mine for d, a in group), flush=True)
  missing = {}  # dataset -> outcome: the same data would be missing again for its other algorithm
  for group in mine:
    if len(group) > 1 and run_group(group, preset, seeds, out, download, max_runtime_s):
      write_report()
      continue  # trained together; a group that could not be (missing data) trains run by run below
    for unit in group:
      train_unit(unit, missing, ours, preset, seeds, out, download, max_runtime_s)
      write_report()
  return write_report()


def train_unit(unit, missing: dict, ours: dict, preset, seeds, out, download, max_runtime_s) -> None:
  """One run alone (a run of a dataset already found missing is recorded as such without a try)."""
  dataset, algo = unit
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


def run_group(group, preset: str, seeds, out: str, download: bool, max_runtime_s: float) -> bool:
  """Train a group's unfinished runs as one population. False (nothing recorded) when a dataset of the group
  cannot be had: its runs then train one by one, which records the missing one and trains the others."""
  from common.data import DatasetError
  from common.run import RunError

  todo = [u for u in group if read_outcome(os.path.join(out, *u)) is None]
  if not todo:
    print(f"[reproduce] {', '.join(d for d, _ in group)} {group[0][1]}: finished earlier, skipped", flush=True)
    return True
  if len(todo) == 1:
    return False
  print(f"[reproduce] {', '.join(d for d, _ in todo)} {todo[0][1]}: training seeds {list(seeds)} as one program in "
        f"{groups.population_workdir(out, todo)}", flush=True)
  configs = {d: run_config(a, d, preset, seeds, max_runtime_s) for d, a in todo}
  try:
    groups.train_group(todo, configs, out, download)
  except DatasetError:
    return False
  except RunError as e:  # a divergence or a refused group: recorded beside each of its runs
    for d, a in todo:
      record_not_finished(os.path.join(out, d, a), {"failed": str(e)})
  return True


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
  flags.DEFINE_enum("populations", "auto", groups.CHOICES, "Train one algorithm's runs on the datasets of one "
                    "environment as one program (the same results and report): auto = on accelerators only.")
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
                         shard=shard, report_only=FLAGS.report_only, max_runtime_s=max_runtime_s,
                         populations=groups.wanted(FLAGS.populations))
  except KeyboardInterrupt as e:
    print(f"{interrupts.stop_message(e)}; progress is saved under {FLAGS.out}: run the same command again to "
          "resume", file=sys.stderr)
    sys.exit(interrupts.exit_code(e))
  if distributed.is_main_process():
    with open(FLAGS.report) as f:
      print(f.read())
  # A shard answers for its own runs; --report_only (and an unsharded run) for the whole grid.
  units = grid_units(datasets, FLAGS.algos)
  work = groups.group_units(units) if groups.wanted(FLAGS.populations) else [[u] for u in units]
  own = list(outcomes) if FLAGS.report_only else [u for group in work[shard[0]::shard[1]] for u in group]
  bad = [u for u in own if not outcomes[u] or "summary" not in outcomes[u]]
  if bad:
    sys.exit(f"{len(bad)} of {len(own)} runs are not finished (see 'Not run' / 'Not finished yet' in {FLAGS.report})")

