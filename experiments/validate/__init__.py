"""Does it learn locomotion? SRPO, SWG and SWG-R trained on the datasets of `make datasets`, with learning curves.

  .venv/bin/python -m experiments.validate                       # the 6 datasets of `make datasets`, both algorithms
  .venv/bin/python -m experiments.validate --datasets=recipes/hopper/medium-replay-v0 --algos=srpo
  make validate ARGS="--datasets=recipes/hopper/medium-replay-v0,recipes/hopper/medium-v0"

For every dataset and algorithm it trains the `validate` preset (2 seeds together; SWG and SWG-R share one SWG
training), evaluates the policies of the last stage (SRPO's policy, SWG's diffusion model) `--evals` times on the
way (every num_steps / evals steps and at the end, `--episodes` episodes per seed), and writes into `--out`
(default results/validate): <dataset>.png (normalised score against steps, mean ± std over seeds, with the
dataset's average return and the data-making policy's return as lines), report.md (the table and the times) and
validate.json (every number). Run folders: <out>/runs/<dataset>/<algo>/, as experiments.train writes them, plus
eval_<policy>_step<N>.json per evaluation.

Rerun the same command to resume: every stage continues from its last checkpoint, finished evaluations are not
redone (an evaluation cut short is), a finished run is only read. A run folder holding another config is refused.
Bad input (an unknown dataset id, a dataset that is not built yet, with the command that builds it, an unknown
algorithm or preset, bad seeds or counts) ends with one `error: ...` line before anything is trained.

The preset's step counts are sized for about 20 minutes per dataset and algorithm on 2 CPU cores (SWG and SWG-R
share one model); the README gives the measured times. Its critics train for 100k steps: with 30k they were too poor
for the papers' beta to work on walker2d-medium-replay; SWG's diffusion trains for 100k: with 30k SWG stayed below
the data on halfcheetah-medium-replay (README, "Does it learn locomotion?").
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time

from absl import app, flags, logging
from common.recipes import datasets as recipes
from common.data.ids import RECIPE_NAMESPACE

RECIPE_LEVELS = ("medium-replay", "medium")
DEFAULT_DATASETS = tuple(f"{RECIPE_NAMESPACE}/{env}/{level}-v0" for level in RECIPE_LEVELS
                         for env in recipes.ENVS.values())
ALGOS = ("srpo", "swg")
POLICIES = {"srpo": ("srpo",), "swg": ("swg", "swgr")}
LAST_STAGE = {"srpo": "policy", "swg": "diffusion"}

FLAGS = flags.FLAGS


class ValidateError(ValueError):
  """Bad input to validate; the message names the flag and the value."""


def define_flags() -> None:
  flags.DEFINE_list("datasets", list(DEFAULT_DATASETS), "Dataset ids (default: medium-replay and medium of "
                    "`make datasets`).")
  flags.DEFINE_list("algos", list(ALGOS), "srpo and/or swg (swg evaluates SWG and SWG-R).")
  flags.DEFINE_list("seeds", [], "Seeds trained together (default: the preset's, 0,1).")
  flags.DEFINE_string("preset", "validate", "Config preset of both algorithms.")
  flags.DEFINE_integer("evals", 8, "Evaluations along the last stage (every num_steps / evals steps, and the end).")
  flags.DEFINE_integer("episodes", 0, "Evaluation episodes per seed (0: the preset's, 10).")
  flags.DEFINE_string("out", os.path.join("results", "validate"), "Output folder.")


# ---------------------------------------------------------------------------------------------------------------
# Input checks (before any work)


def dataset_problem(dataset_id: str) -> str | None:
  """Why `dataset_id` cannot be trained on (unknown, or not built / stored yet: with the command that makes it)."""
  from common.data import D4RL_DATASETS, _MINARI_ID, _minari_has_locally, _minari_root

  if _minari_has_locally(dataset_id) or dataset_id in D4RL_DATASETS:  # D4RL files are found or fetched by the loader
    return None
  parts = dataset_id.split("/")
  if parts[0] == RECIPE_NAMESPACE:
    envs = {name: env_id for env_id, name in recipes.ENVS.items()}
    level = re.sub(r"-v\d+$", "", parts[2]) if len(parts) == 3 and re.search(r"-v\d+$", parts[2]) else None
    if len(parts) != 3 or parts[1] not in envs or level not in recipes.LEVELS:
      return (f"unknown dataset id {dataset_id!r}: recipe datasets are {RECIPE_NAMESPACE}/<{'|'.join(envs)}>/"
              f"<{'|'.join(recipes.LEVELS)}>-v0")
    custom = "" if parts[2] == f"{level}-v0" else f" --dataset_id={dataset_id}"
    return (f"dataset {dataset_id!r} is not built yet (nothing in {_minari_root() / dataset_id}): build it with "
            f"`.venv/bin/python -m experiments.make_dataset --recipe={level} --env={envs[parts[1]]}{custom}`"
            f"{' or `make datasets`' if not custom and level in RECIPE_LEVELS else ''}")
  if dataset_id.lower().endswith((".hdf5", ".h5")):
    return None if os.path.isfile(dataset_id) else f"dataset file {dataset_id!r} does not exist"
  if _MINARI_ID.match(dataset_id):
    return (f"Minari dataset {dataset_id!r} is not stored under {_minari_root()}; get it with `minari download "
            f"{dataset_id}` (or set MINARI_DATASETS_PATH to where it is)")
  return (f"unknown dataset id {dataset_id!r}: expected a recipe id such as {DEFAULT_DATASETS[0]} (`make "
          "datasets`), a Minari id stored under $MINARI_DATASETS_PATH, a D4RL name or a path to a .hdf5 file")


def check_inputs(datasets, algos, preset: str, seeds, evals: int, episodes: int, out: str) -> None:
  """Raise ValidateError on the first bad input; creates `out` (and checks it is writable)."""
  import srpo_jax.configs
  import swg_jax.configs
  from common.run import RunError, check_seeds

  if not datasets:
    raise ValidateError("--datasets is empty; give at least one dataset id")
  for algo in algos:
    if algo not in ALGOS:
      raise ValidateError(f"--algos: unknown algorithm {algo!r}; expected some of {','.join(ALGOS)}")
  if not algos:
    raise ValidateError(f"--algos is empty; expected some of {','.join(ALGOS)}")
  presets = sorted(set(swg_jax.configs.PRESETS) & set(srpo_jax.configs.PRESETS))
  if preset not in presets:
    raise ValidateError(f"--preset={preset!r} is not a preset of both algorithms; expected one of {presets}")
  if evals < 1 or episodes < 0:
    raise ValidateError(f"--evals must be >= 1 and --episodes >= 0 (0: the preset's), got {evals} and {episodes}")
  if seeds is not None:
    try:
      check_seeds(seeds)
    except RunError as e:
      raise ValidateError(f"--seeds: {e}") from e
  for dataset in datasets:
    problem = dataset_problem(dataset)
    if problem:
      raise ValidateError(problem)
  try:
    os.makedirs(out, exist_ok=True)
    probe = os.path.join(out, ".write_test")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ValidateError(f"--out={out!r} is not a writable folder: {e.strerror or e}") from e


# ---------------------------------------------------------------------------------------------------------------
# One run: an algorithm on a dataset, evaluated on the way


def build_config(algo: str, dataset: str, preset: str, seeds, episodes: int, evals: int, progress: bool):
  """The algorithm's `<dataset>:<preset>` config with the seeds and episodes given, and eval.every (the last
  stage's evaluation interval, ceil(num_steps / evals)) recorded in it so that a resume with other values is
  refused."""
  from experiments.report import algorithm_package

  config = algorithm_package(algo).get_config(f"{dataset}:{preset}")
  if seeds is not None:
    config.seeds = tuple(int(s) for s in seeds)
  if episodes:
    config.eval.episodes = int(episodes)
  config.progress = progress
  num_steps = int(config[LAST_STAGE[algo]].num_steps)
  config.eval.every = max(1, math.ceil(num_steps / evals))
  return config


def eval_name(policy: str, step: int) -> str:
  """Name of the evaluation of `policy` at `step` of the last stage (file eval_<name>.json in the run folder)."""
  return f"{policy}_step{step:07d}"


def eval_steps(every: int, num_steps: int) -> list[int]:
  """The last stage's steps that are evaluated: every multiple of `every`, and the end."""
  return sorted(set(range(every, num_steps + 1, every)) | {num_steps})


def policy_makers(algo: str, config) -> dict:
  """{policy: make(trained object) -> policy_fn(obs [num_seeds, E, S], key) -> actions}. The jitted functions are
  built once per run and take the parameters as arguments, so evaluating on the way compiles once per policy."""
  import jax

  if algo == "srpo":
    import srpo_jax

    return {"srpo": lambda policy: (lambda obs, key: srpo_jax.seed_act(policy, obs))}
  import swg_jax

  makers = {}
  for name, overrides in (("swg", {}), ("swgr", dict(config.resampling))):
    jitted = jax.jit(lambda model, obs, key, o=overrides: swg_jax.seed_policy(model, **o)(obs, key))
    makers[name] = lambda model, j=jitted: (lambda obs, key: j(model, obs, key))
  return makers


def run_algo(algo: str, config, data, info, workdir: str, log=print) -> dict:
  """Train (resuming in workdir) and evaluate on the way; returns the run's record for the report."""
  from common import run as run_lib

  with run_lib.run_folder(workdir, config, algo):  # locked; a divergence is recorded in summary.json
    return _train_and_evaluate_on_the_way(algo, config, data, info, workdir, log)


def _train_and_evaluate_on_the_way(algo: str, config, data, info, workdir: str, log) -> dict:
  from common import run as run_lib
  from experiments.report import algorithm_package

  makers = policy_makers(algo, config)
  every, num_steps = int(config.eval.every), int(config[LAST_STAGE[algo]].num_steps)

  def evaluate_on_the_way(step: int, trained) -> None:
    for policy, make in makers.items():
      name = eval_name(policy, step)
      if run_lib.load_eval(workdir, name) is None:
        ev = run_lib.evaluate_policy(make(trained), config, info, workdir, name)
        stat = ev.get("score") or ev.get("return")
        shown = f"{stat['mean']:.1f} ± {stat['std']:.1f}" if stat else ev.get("skipped")
        log(f"[{config.dataset}] {policy} at {LAST_STAGE[algo]} step {step}/{num_steps}: "
            f"{'score' if ev.get('score') else 'return'} {shown}")

  package = algorithm_package(algo)
  callback = {"srpo": "policy_callback", "swg": "model_callback"}[algo]
  package.train(config, data, workdir=workdir, callback_every=every, **{callback: evaluate_on_the_way})
  finals = {p: run_lib.load_eval(workdir, eval_name(p, num_steps)) for p in makers}
  run_lib.write_summary(workdir, algo, config, info, finals)  # summary.json and stage plots, as experiments.train
  evals = [run_lib.load_eval(workdir, eval_name(p, s)) for p in makers for s in eval_steps(every, num_steps)]
  return {"last_stage": LAST_STAGE[algo], "every": every, "num_steps": num_steps,
          "stage_seconds": run_lib.stage_seconds(workdir),
          "eval_seconds": sum(ev.get("wall_s", 0.0) for ev in evals if ev)}


def read_curves(workdir: str, algo: str, every: int, num_steps: int) -> dict:
  """{policy: [{"step", "score", "return"}, ...]} from the run's evaluation files (missing steps are left out)."""
  from common import run as run_lib

  curves = {}
  for policy in POLICIES[algo]:
    points = []
    for step in eval_steps(every, num_steps):
      ev = run_lib.load_eval(workdir, eval_name(policy, step))
      if ev and "skipped" not in ev:
        points.append({"step": step, "score": ev.get("score"), "return": ev["return"]})
    curves[policy] = points
  return curves


def dataset_reference(dataset: str, info: dict, path: str) -> dict:
  """The dataset's average episode return and the data-making policy's return (a recipe's SAC evaluation at its
  snapshot, from the Minari metadata), raw and normalised; cached in `path` (JSON)."""
  from common.checkpoint import write_json_atomic
  from common.data import episode_returns
  from common.run import normalized_scores

  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  meta = {}
  if info.get("source") == "minari":
    import minari

    from common.data import minari_transitions

    transitions = minari_transitions(dataset)[0]
    meta = dict(minari.load_dataset(dataset).storage.metadata)
  else:
    from common.data import d4rl_transitions

    transitions = d4rl_transitions(info["path"], max_episode_steps=info.get("max_episode_steps") or 1000)
  returns = episode_returns(transitions.rewards, transitions.episode_ends)
  level = "expert" if meta.get("recipe") == "expert" else "medium"
  policy_return = meta.get(f"{level}_eval_return")
  ref = {"dataset_return": float(returns.mean()) if returns.size else None, "episodes": int(returns.size),
         "policy_return": None if policy_return is None else float(policy_return),
         "policy": f"SAC at the {level} snapshot (its evaluation)" if policy_return is not None else None}
  for what in ("dataset", "policy"):
    value = ref[f"{what}_return"]
    score = None if value is None else normalized_scores(value, info)
    ref[f"{what}_score"] = None if score is None else float(score)
  write_json_atomic(path, ref)
  return ref


def earlier_results(out: str, header: dict, expected_config, log=print) -> list[dict]:
  """The results an earlier invocation left in `out`/validate.json with the same settings (preset, seeds, episodes,
  and each run's resolved config equal to `expected_config(dataset, algo)`: a preset's values can change under its
  name), so that a check run one dataset or algorithm at a time reports all of them; others are left out, and said
  so."""
  from common.run import config_differences
  from experiments.validate.report import POLICY_ALGO

  path = os.path.join(out, "validate.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    saved = json.load(f)
  same = ("preset", "seeds", "episodes")
  if not all(saved.get("header", {}).get(k) == header[k] for k in same):
    left = ", ".join(r["dataset"] for r in saved.get("results", []))
    log(f"report.md leaves out the earlier results in {path} ({left}): they were made with other settings "
        f"({ {k: saved.get('header', {}).get(k) for k in same} })")
    return []
  kept = []
  for result in saved.get("results", []):
    runs = {}
    for algo, run in result["runs"].items():
      diffs = (["no config recorded"] if "config" not in run else
               config_differences(run["config"], {"algo": algo, **expected_config(result["dataset"], algo).to_dict()}))
      if diffs:
        log(f"report.md leaves out the earlier {algo} run on {result['dataset']} in {path}: its config differs from "
            f"this one's ({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''})")
      else:
        runs[algo] = run
    if runs:
      curves = {p: c for p, c in result["curves"].items() if POLICY_ALGO[p] in runs}
      kept.append(dict(result, runs=runs, curves=curves))
  return kept


def merge_results(earlier: list[dict], results: list[dict]) -> list[dict]:
  """`results` (this invocation's) added to `earlier`: a dataset's runs of other algorithms are kept beside the new
  ones, a rerun algorithm replaces its earlier record; datasets keep their first-run order."""
  from experiments.validate.report import POLICY_ALGO

  merged = {r["dataset"]: r for r in earlier}
  for result in results:
    old = merged.get(result["dataset"])
    if old is None:
      merged[result["dataset"]] = result
      continue
    runs = {a: r for a, r in old["runs"].items() if a not in result["runs"]}
    curves = {p: c for p, c in old["curves"].items() if POLICY_ALGO[p] not in result["runs"]}
    merged[result["dataset"]] = dict(result, runs={**runs, **result["runs"]}, curves={**curves, **result["curves"]})
  return list(merged.values())


# ---------------------------------------------------------------------------------------------------------------
# The whole check


def validate(datasets, algos, *, preset: str = "validate", seeds=None, episodes: int = 0, evals: int = 8,
             out: str = os.path.join("results", "validate"), progress: bool = True, log=print) -> list[dict]:
  """Check the inputs, then train and evaluate every algorithm on every dataset, writing the figures, report.md and
  validate.json into `out` after each run (with what earlier invocations left there under the same settings).
  Returns this invocation's results (see experiments/validate/report.py). Raises
  ValidateError, common.data.DatasetError or common.run.RunError with a message for the user."""
  from common import run as run_lib
  from common.checkpoint import write_json_atomic
  from experiments.validate import report as validate_report

  check_inputs(datasets, algos, preset, seeds, evals, episodes, out)
  configs = {(d, a): build_config(a, d, preset, seeds, episodes, evals, progress) for d in datasets for a in algos}
  for config in configs.values():
    run_lib.check_config(config)
  first = configs[(datasets[0], algos[0])]
  header = {"preset": preset, "seeds": list(first.seeds), "episodes": int(first.eval.episodes),
            "device": run_lib.device_description()}
  earlier = earlier_results(
      out, header, lambda d, a: build_config(a, d, preset, seeds, episodes, evals, progress), log)
  results = []
  for dataset in datasets:
    slug = dataset.strip("/").replace("/", "_")
    data, info = run_lib.load_run_data(configs[(dataset, algos[0])])
    result = {"dataset": dataset, "curves": {}, "runs": {}, "figure": f"{slug}.png",
              "reference": dataset_reference(dataset, info, os.path.join(out, "runs", slug, "reference.json"))}
    results.append(result)
    for algo in algos:
      config = configs[(dataset, algo)]
      if algo != algos[0]:  # the same data, preprocessed for this algorithm's reward rule
        data, info = run_lib.load_run_data(config)
      workdir = os.path.join(out, "runs", slug, algo)
      start = time.time()
      run = run_algo(algo, config, data, info, workdir, log=log)
      run["config"] = json.loads(json.dumps({"algo": algo, **config.to_dict()}, default=str))  # see earlier_results
      result["runs"][algo] = run
      result["curves"].update(read_curves(workdir, algo, run["every"], run["num_steps"]))
      everything = merge_results(earlier, results)
      shown = next(r for r in everything if r["dataset"] == dataset)
      validate_report.plot_dataset(shown, os.path.join(out, result["figure"]))
      validate_report.write_report(everything, header, out)
      write_json_atomic(os.path.join(out, "validate.json"), {"header": header, "results": everything})
      log(f"[{dataset}] {algo} done in {time.time() - start:.0f} s (this invocation)")
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax's per-checkpoint INFO lines
  from common.data import DatasetError
  from common.run import RunError

  try:
    seeds = [int(s) for s in FLAGS.seeds] if FLAGS.seeds else None
  except ValueError:
    sys.exit(f"error: --seeds must be integers separated by commas, got {','.join(FLAGS.seeds)!r}")
  from common import interrupts

  interrupts.install_process_handlers()  # SIGTERM (and SIGINT in a background job) stop with a message
  try:
    validate(FLAGS.datasets, FLAGS.algos, preset=FLAGS.preset, seeds=seeds, episodes=FLAGS.episodes,
             evals=FLAGS.evals, out=FLAGS.out)
  except (ValidateError, DatasetError, RunError) as e:
    sys.exit(f"error: {e}")
  except KeyboardInterrupt as e:
    print(f"{interrupts.stop_message(e)}; progress is saved in {FLAGS.out}: run the same command again to resume",
          file=sys.stderr)
    sys.exit(interrupts.exit_code(e))
  print(f"report: {os.path.abspath(os.path.join(FLAGS.out, 'report.md'))}")

