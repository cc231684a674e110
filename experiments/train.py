"""Train and evaluate SWG or SRPO on one dataset, every seed in one process (vmapped, spread over local accelerators),
or over several processes and hosts with --distributed (one process per host, each started with the same flags).

  .venv/bin/python -m experiments.train --algo=srpo --dataset=hopper-medium-v2 --seeds=0,1,2,3,4 \
    --workdir=runs/srpo_hopper
  .venv/bin/python -m experiments.train --algo=swg --config=swg_jax/configs.py:antmaze-umaze-v0:paper \
    --config.critic.lr=1e-4
  MINARI_DATASETS_PATH=results/runs/demo/minari .venv/bin/python -m experiments.train --algo=swg \
    --dataset=builtin/reacher/noisy-v0 --config=swg_jax/configs.py:demo   # the demo's dataset

--config defaults to <algo>_jax/configs.py:<dataset>:paper. A --config without a dataset gets --dataset put in its
argument, so the dataset's paper values (beta, expectile, ...) come first and --config.<field> flags override them.
Run it again with the same workdir to resume an interrupted run; a workdir holding another config, or in use by
another run, is refused. Ctrl-C and SIGTERM save the chunk in flight and exit 130 / 143; --max_runtime=23h50m saves
and exits 75 before that much process time is used up. A stage that diverges (NaN / inf) stops with one error line
and summary.json records the failure.
Writes to the workdir: config.json, run.lock (while running), metrics_<stage>.jsonl, checkpoints/, eval_<policy>.json,
plots/, summary.json.

  srun --ntasks=2 .venv/bin/python -m experiments.train --algo=srpo --dataset=hopper-medium-v2 --seeds=0,1,2,3 \
    --workdir=/shared/runs/srpo_hopper --distributed        # SLURM / Open MPI: the processes find each other
  .venv/bin/python -m experiments.train ... --distributed --coordinator_address=host0:1234 --num_processes=2 \
    --process_id=0

With --distributed the seeds are spread over the devices of every process (the seed count must be a multiple of the
process count), each process evaluates the trained policies, process 0 writes the results, and the workdir must be
on a file system every process sees (the checkpoints are written by all of them).
"""
from __future__ import annotations

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli, distributed_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALGOS = ("swg", "srpo")

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined when run, not on import, so other entry points and the tests can import this module."""
  flags.DEFINE_enum("algo", None, ALGOS, "Algorithm.")
  flags.DEFINE_string("dataset", "", "D4RL name, Minari id or path to a D4RL-style .hdf5 file; several, separated "
                      "by commas, train as one population (same observation and action dims).")
  flags.DEFINE_multi_string("sweep", [], "<field>=<value>,<value>,...: train every value (several --sweep flags: "
                            "every combination) as one population, e.g. --sweep=policy.beta=0.01,0.05,0.2.")
  flags.DEFINE_list("seeds", [], "Seeds trained together, e.g. 0,1,2,3,4 (default: the config's).")
  flags.DEFINE_string("workdir", "", "Run directory (default results/runs/<algo>/<dataset>).")
  flags.DEFINE_string("max_runtime", "", "Time budget of this process (e.g. 85800, 90m, 23h50m or HH:MM:SS): "
                      "training saves and exits with status 75 before a chunk would end past it; run the same "
                      "command again to go on. Sets config.max_runtime_s.")
  config_flags.DEFINE_config_file("config", None, "<algo>_jax/configs.py:[<dataset>:]<preset>", lock_config=False)
  distributed_flags.define_flags()
  flags.mark_flag_as_required("algo")


def config_path(algo: str) -> str:
  return os.path.join(REPO, f"{algo}_jax", "configs.py")


def _flag_value(argv: list[str], name: str) -> tuple[int, str | None]:
  """(index, value) of `--name=value` or `--name value` in argv, or (-1, None)."""
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return i, arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return i, argv[i + 1]
  return -1, None


def resolve_config_flag(argv: list[str]) -> list[str]:
  """argv with --config completed from --algo and --dataset (see the module docstring; of several datasets, the
  first: the others' configs are made when the population is)."""
  argv = list(argv)
  _, algo = _flag_value(argv, "algo")
  _, dataset = _flag_value(argv, "dataset")
  dataset = dataset.split(",")[0] if dataset else dataset
  i, spec = _flag_value(argv, "config")
  if spec is None:
    if algo not in ALGOS:  # an unknown or missing --algo is reported by absl itself
      return argv
    config_arg = f"--config={config_path(algo)}:{dataset + ':' if dataset else ''}paper"
  else:
    del argv[i:i + (1 if argv[i].startswith("--config=") else 2)]
    path, _, arg = spec.partition(":")
    if dataset and ":" not in arg:  # "<preset>" or "": put the dataset in
      spec = f"{path}:{dataset}:{arg or 'paper'}"
    config_arg = f"--config={spec}"
  # ml_collections knows the --config.<field> flags only once --config is parsed: it goes before the first of them.
  override = re.compile(r"^--?(no)?config\.")
  first = next((j for j, a in enumerate(argv) if override.match(a)), len(argv) if spec is None else i)
  argv.insert(first, config_arg)
  return argv


def config_problem(argv: list[str]) -> str | None:
  """Why the --config of a resolved argv cannot be used with its --algo, or None. Runs before absl parses the flags
  (where ml_collections would fail on an unknown override with a long traceback), so nothing is loaded or written.

  Checked: the config file loads; it has every field the algorithm reads (a config of the other algorithm is named
  as such); every --config.<field> override names an existing field (else the nearest valid names are given).
  """
  from common.run import config_check

  _, algo = _flag_value(argv, "algo")
  _, spec = _flag_value(argv, "config")
  if algo not in ALGOS or spec is None:  # absl reports a missing or unknown --algo itself
    return None
  import srpo_jax.configs
  import swg_jax.configs

  references = {"swg": swg_jax.configs.get_config("smoke"), "srpo": srpo_jax.configs.get_config("smoke")}
  try:
    config = config_check.load_config_file(spec)
    config_check.check_structure(config, references, algo, spec)
    items = config_check.override_items(argv)
    config_check.check_overrides(config, [p for p, _ in items], what=algo, values=dict(items))
  except config_check.ConfigError as e:
    return str(e)
  return None


def population_settings(package, config, datasets: list[str], argv: list[str]):
  """The settings of a population run from --dataset=a,b and --sweep flags: every dataset's config made as a run
  alone would make it (its paper values, then this command's --config overrides), then the swept values.
  Raises RunError for a bad sweep, before any work."""
  from common.run import RunError, populations
  from common.run.config_check import override_items

  sweeps = dict(populations.parse_sweep(s) for s in FLAGS.sweep)
  if len(sweeps) != len(FLAGS.sweep):
    raise RunError("--sweep: a field is swept twice; give all its values in one --sweep")
  populations.check_sweeps(sweeps, config, package.configs.SWEEPABLE, FLAGS.algo.upper())
  _, spec = _flag_value(resolve_config_flag(argv), "config")
  preset = spec.split(":")[-1]
  overridden = [path for path, _ in override_items(argv)]

  def config_for(dataset: str):
    if dataset == config.dataset:
      return config
    other = package.get_config(f"{dataset}:{preset}")
    for path in overridden:  # the command's overrides, as absl parsed them for the first dataset
      populations.population.set_path(other, path, _config_value(config, path))
    other.max_runtime_s = config.get("max_runtime_s", 0.0)
    return other

  return populations.make_settings(config_for, datasets, config.seeds, sweeps, package.configs.SWEEPABLE,
                                   FLAGS.algo.upper())


def _config_value(config, path: str):
  node = config
  for p in path.split("."):
    node = node[p]
  return node


def seeds_problem(seeds, source: str) -> str | None:
  """Why `seeds` (from `source`, e.g. "--seeds=0,0") cannot be trained, or None."""
  from common.run import RunError, check_seeds

  try:
    check_seeds(seeds)
  except RunError as e:
    return f"{source}: {e}"
  return None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-checkpoint INFO lines out of the output
  from common import interrupts

  interrupts.install_process_handlers()  # SIGTERM (and SIGINT in a background job) stop with a message
  distributed_flags.initialize_from_flags()
  from common import distributed
  from common.data import DatasetError
  from common.run import RunError

  config = FLAGS.config
  if FLAGS.max_runtime:
    try:
      config.max_runtime_s = interrupts.parse_duration(FLAGS.max_runtime)
    except ValueError as e:
      sys.exit(f"error: --max_runtime: {e}")
  datasets = [d for d in FLAGS.dataset.split(",") if d] if FLAGS.dataset else []
  if datasets and config.dataset != datasets[0]:
    sys.exit(f"error: --dataset={FLAGS.dataset} but the config names dataset {config.dataset!r}; give one of them")
  if FLAGS.seeds:
    try:
      config.seeds = tuple(int(s) for s in FLAGS.seeds)
    except ValueError:
      sys.exit(f"error: --seeds must be integers separated by commas, got {','.join(FLAGS.seeds)!r}")
  problem = seeds_problem(config.seeds, f"--seeds={','.join(FLAGS.seeds)}" if FLAGS.seeds else
                          f"config.seeds={tuple(config.seeds)}")
  if problem:
    sys.exit(f"error: {problem}")
  try:
    distributed.check_seed_count(len(config.seeds))
  except ValueError as e:
    sys.exit(f"error: {e}")
  from experiments.report import algorithm_package, eval_table

  package = algorithm_package(FLAGS.algo)
  settings = None
  if len(datasets) > 1 or FLAGS.sweep:
    try:
      settings = population_settings(package, config, datasets or [config.dataset], sys.argv)
    except RunError as e:
      sys.exit(f"error: {e}")
  name = "+".join(d.replace("/", "_") for d in (datasets or [config.dataset]))
  workdir = FLAGS.workdir or os.path.join("results", "runs", FLAGS.algo, name + ("-sweep" if FLAGS.sweep else ""))
  try:
    if settings is not None:
      result = package.train_and_evaluate_population(settings, workdir)
      if distributed.is_main_process():
        print(result["report"])
        print(f"results in {os.path.abspath(workdir)} (report.md, settings/<setting>/)")
      return
    summary = package.train_and_evaluate(config, workdir)
  except (DatasetError, RunError) as e:
    sys.exit(f"error: {e}")
  except OSError as e:  # a write the library did not expect to fail (a full disk, a folder made read-only)
    sys.exit(f"error: {e.strerror or e}: {e.filename or workdir}. Nothing already saved was lost: fix it, then run "
             "the same command again to resume")
  except KeyboardInterrupt as e:
    print(f"{interrupts.stop_message(e)}; progress is saved in {workdir}: run the same command again to resume",
          file=sys.stderr)
    sys.exit(interrupts.exit_code(e))
  if distributed.is_main_process():
    print(eval_table([summary]))
    print(f"results in {os.path.abspath(workdir)}")


def run(argv=None):
  argv = resolve_config_flag(sys.argv if argv is None else argv)
  problem = config_problem(argv)
  if problem:
    sys.exit(f"error: {problem}")
  define_flags()
  cli.run(main, argv)


if __name__ == "__main__":
  run()
