"""What every training run shares, whatever the algorithm: the run fields of a config, the workdir (one run per
workdir, resumable, results written atomically), the config's dataset checked against its env, evaluation of a
seed-stacked policy into eval_<name>.json, learning-curve PNGs and the run summary.

Workdir layout:  config.json  metrics_<stage>.jsonl  checkpoints/<stage>/  eval_<name>.json  plots/<stage>.png
                 summary.json
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from common import distributed
from common.envs import evaluation
from common.checkpoint import save_config, write_json_atomic, write_text_atomic
from common.data import DatasetError, OfflineData, load_dataset
from common.errors import DivergenceError, RunError, write_error
from common.metrics_file import read_records
from common.run.plots import plot_learning_curves, read_metrics
from common.run.lock import LOCK_FILE, WorkdirLock

# How a run is driven, not what it computes: these may change when a run is resumed.
DRIVER_FIELDS = ("progress", "steps_per_call", "checkpoint_every", "max_runtime_s")


def add_run_fields(c: ml_collections.ConfigDict, *, episode_rule: str) -> ml_collections.ConfigDict:
  """The fields every algorithm config has besides its stages ("" and 0 mean "inferred / the env's default")."""
  c.dataset = ""            # D4RL name, Minari id or path to a D4RL-style .hdf5
  c.env_id = ""             # evaluation env; "" = the dataset's (D4RL table, Minari metadata)
  c.reward_kind = ""        # "locomotion" | "antmaze" | "none"; "" = inferred from the dataset name
  c.episode_rule = episode_rule  # episodes for the locomotion reward scale ("episodes" | "iql")
  c.seeds = (0,)            # trained together: vmapped, sharded over local accelerators
  c.steps_per_call = 1000   # training steps fused into one jitted call
  c.checkpoint_every = 100_000
  c.progress = True
  c.max_runtime_s = 0.0     # > 0: training saves and stops once this much process time would be used up
  c.eval = ml_collections.ConfigDict(dict(episodes=20, seed=0, max_episode_steps=0))
  return c


def guard_kwargs(config, suspects: dict[str, Any]) -> dict[str, Any]:
  """The Trainer arguments every stage of a run shares besides its own: the seed ids its divergence message names,
  the config values that usually cause a divergence of the stage (`suspects`), and the time budget."""
  return {"seed_ids": config.seeds, "suspects": suspects, "max_runtime_s": float(config.get("max_runtime_s", 0.0))}


def check_seeds(seeds) -> None:
  """Raise RunError unless `seeds` is a non-empty sequence of distinct non-negative integers (a repeated seed would
  train the same run twice and report it as two; a negative one cannot seed jax.random)."""
  seeds = list(seeds) if isinstance(seeds, (list, tuple)) else [seeds]
  rule = "seeds are distinct non-negative integers, e.g. 0,1,2,3,4"
  if not seeds:
    raise RunError(f"no seeds given; {rule}")
  for s in seeds:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
      raise RunError(f"seed {s!r} is not a non-negative integer; {rule}")
  repeated = sorted({int(s) for s in seeds if seeds.count(s) > 1})
  if repeated:
    raise RunError(f"seed {repeated[0]} is given {seeds.count(repeated[0])} times; {rule}")


def split_config_arg(arg: str | None, presets: tuple[str, ...], algo: str) -> tuple[str, str]:
  """(dataset, preset) of a config arg "preset" | "<dataset>" | "<dataset>:<preset>" (default preset "paper")."""
  arg = arg or "paper"
  if ":" in arg:
    dataset, preset = arg.rsplit(":", 1)
  else:
    dataset, preset = ("", arg) if arg in presets else (arg, "paper")
  if preset not in presets:
    raise ValueError(f"unknown {algo} preset {preset!r} in config arg {arg!r}; expected one of {presets}")
  return dataset, preset


# ---------------------------------------------------------------------------------------------------------------
# Workdir


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


# Fields configs no longer have, with the value that computed what today's code computes: a run recorded with that
# value is the same run (flat_optimizer=False was the per-array optimizer update every stage now uses).
RETIRED_FIELDS = {"flat_optimizer": False}


def config_differences(old: dict, new: dict) -> list[str]:
  """'field: old -> new' for every field that changes what a run computes (DRIVER_FIELDS excluded, and a
  RETIRED_FIELDS entry at its retired value)."""
  a, b = _flatten(old), _flatten(json.loads(json.dumps(new, default=str)))
  retired = lambda flat: {k: v for k, v in flat.items()
                          if not (k.split(".")[-1] in RETIRED_FIELDS and v == RETIRED_FIELDS[k.split(".")[-1]])}
  a, b = retired(a), retired(b)
  return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
          if k.split(".")[-1] not in DRIVER_FIELDS and a.get(k) != b.get(k)]


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raise RunError naming the first field of the config outside its allowed range, before any work is done."""
  from common.run.config_check import ConfigError, check_values

  try:
    check_values(config)
  except ConfigError as e:
    raise RunError(str(e)) from e


def _make_writable_dir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_"):
      pass
  except OSError as e:
    raise RunError(f"workdir {workdir!r} is not writable: {e.strerror or e}. Pass --workdir=<a writable "
                   "directory>.") from e


def _check_and_save_config(workdir: str, config: ml_collections.ConfigDict, algo: str) -> None:
  resolved = {"algo": algo, **config.to_dict()}
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    diffs = config_differences(old, resolved)
    if diffs:
      shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
      raise RunError(f"workdir {workdir!r} holds a run with a different config ({shown}). Its results are kept: "
                     "use a new --workdir, or the same config to resume that run.")
  if distributed.is_main_process():
    try:
      save_config(workdir, resolved)
    except OSError as e:
      raise write_error(e, "the run's config") from e


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, algo: str) -> None:
  """Create `workdir` (or resume in it) and save the resolved config there.

  Raises RunError when the directory cannot be created or written, or when it already holds a run of another
  algorithm or config (its results are never overwritten: use a new workdir, or the same config to resume).
  """
  _make_writable_dir(workdir)
  _check_and_save_config(workdir, config, algo)


def _lock_workdir(workdir: str) -> WorkdirLock | None:
  """Process 0 takes the run folder's lock; every process learns whether it could (and all refuse together)."""
  lock, refused = None, None
  if distributed.is_main_process():
    try:
      lock = WorkdirLock.acquire(workdir)
    except RunError as e:
      refused = e
  if distributed.main_process_flag(refused is not None) and refused is None:
    refused = RunError(f"workdir {workdir!r} is in use by another run (process 0 found its lock {LOCK_FILE})")
  if refused is not None:
    raise refused
  return lock


@contextlib.contextmanager
def run_folder(workdir: str | None, config: ml_collections.ConfigDict, algo: str):
  """The run folder for the length of a run (nothing without a workdir): created, locked against a second writer,
  its config checked against the one it holds and saved, the lock released at the end. A DivergenceError from the
  run is recorded in summary.json ({"failed": message}) on its way up, so the folder says how the run ended."""
  if workdir is None:
    yield
    return
  _make_writable_dir(workdir)
  lock = _lock_workdir(workdir)
  try:
    _check_and_save_config(workdir, config, algo)
    try:
      yield
    except DivergenceError as e:
      write_failed_summary(workdir, algo, config, e)
      raise
  finally:
    if lock is not None:
      lock.release()


# ---------------------------------------------------------------------------------------------------------------
# Data


def env_dims(env_id: str) -> tuple[int, int]:
  """(obs dim, action dim) of a Gymnasium env, dict observations flattened as `evaluation` feeds them."""
  import gymnasium as gym

  evaluation._require_env_registered(env_id)
  env = gym.make(env_id)
  try:
    obs_space = env.observation_space
    if isinstance(obs_space, gym.spaces.Dict):
      obs_dim = sum(int(np.prod(obs_space[k].shape)) for k in ("achieved_goal", "observation"))
    else:
      obs_dim = int(np.prod(obs_space.shape))
    return obs_dim, int(np.prod(env.action_space.shape))
  finally:
    env.close()


def load_run_data(config, *, download: bool = True) -> tuple[OfflineData, dict[str, Any]]:
  """The config's dataset, reward-preprocessed and checked against its evaluation env (`download`: fetch a missing
  D4RL file from its public URL).

  info (from `common.data.load_dataset`) gains eval_env_id (None when there is no env to evaluate in) and
  eval_note (why not). Raises DatasetError with the file, field or dims at fault.
  """
  check_seeds(config.seeds)  # before the data is loaded: nothing is done for seeds that cannot be trained
  if not config.dataset:
    raise DatasetError("no dataset given: set --dataset (a D4RL name, a Minari id or a path to a .hdf5 file)")
  data, info = load_dataset(config.dataset, reward_kind=config.reward_kind or None, episode_rule=config.episode_rule,
                            download=download)
  env_id = config.env_id or info.get("env_id")
  if env_id != info.get("env_id"):
    info["env_kwargs"] = None  # the dataset's env kwargs are for its own env
  info["eval_env_id"], info["eval_note"] = env_id, None
  if not env_id:
    port = info.get("minari_id")
    info["eval_note"] = (f"no evaluation env known for {config.dataset!r}; set --config.env_id" +
                         (f" or train on its Minari port {port} (a Gymnasium-Robotics env)" if port else ""))
    return data, info
  try:
    obs_dim, action_dim = env_dims(env_id)
  except ImportError as e:  # e.g. AntMaze without gymnasium-robotics: train anyway, say why there is no score
    info["eval_env_id"], info["eval_note"] = None, str(e)
    return data, info
  if (data.obs_dim, data.action_dim) != (obs_dim, action_dim):
    raise DatasetError(f"dataset {config.dataset!r} has obs dim {data.obs_dim} and action dim {data.action_dim}, "
                       f"but its env {env_id} has obs dim {obs_dim} and action dim {action_dim}: wrong file for "
                       "this dataset name, or set --config.env_id to the env the data came from")
  return data, info


def load_population_data(configs, *, download: bool = True) -> tuple[dict, dict]:
  """({dataset: OfflineData}, {dataset: info}) of the settings of a population (`load_run_data` for each dataset
  once). Raises DatasetError when their observation or action dims differ: one program trains one shape."""
  datasets, infos = {}, {}
  for config in configs:
    if config.dataset not in datasets:
      datasets[config.dataset], infos[config.dataset] = load_run_data(config, download=download)
  dims = {name: (d.obs_dim, d.action_dim) for name, d in datasets.items()}
  if len(set(dims.values())) > 1:
    shown = ", ".join(f"{name}: obs dim {o}, action dim {a}" for name, (o, a) in dims.items())
    raise DatasetError(f"the datasets of one population need one observation and action dim ({shown}): train "
                       "them as separate runs")
  return datasets, infos


# ---------------------------------------------------------------------------------------------------------------
# Evaluation and report


def normalized_scores(returns: np.ndarray, info: dict) -> np.ndarray | None:
  """100 (R - ref_min) / (ref_max - ref_min) with the dataset's reference returns, or None without them."""
  lo, hi = info.get("ref_min_score"), info.get("ref_max_score")
  if lo is None or hi is None:
    return None
  return 100.0 * (np.asarray(returns, np.float64) - lo) / (hi - lo)


def _mean_std(per_seed: np.ndarray) -> dict:
  return {"mean": float(per_seed.mean()), "std": float(per_seed.std()), "per_seed": per_seed.tolist()}


def evaluate_policy(policy_fn: Callable, config, info: dict, workdir: str | None, name: str) -> dict:
  """Roll out policy_fn(obs [num_seeds, episodes, S], key) -> actions in the dataset's env, config.eval.episodes
  episodes per seed; write eval_<name>.json atomically. Returns that dict ({"skipped": why} without an env)."""
  if not info.get("eval_env_id"):
    result = {"name": name, "skipped": info.get("eval_note") or "no evaluation env"}
  else:
    start = time.time()
    res = evaluation.evaluate(policy_fn, info["eval_env_id"], num_seeds=len(config.seeds),
                              episodes_per_seed=int(config.eval.episodes), seed=int(config.eval.seed),
                              max_episode_steps=int(config.eval.max_episode_steps) or None,
                              env_kwargs=info.get("env_kwargs"),
                              progress=config.progress and distributed.is_main_process())
    scores = normalized_scores(res.returns, info)
    result = {
        "name": name, "env_id": res.env_id, "gymnasium_version": res.gymnasium_version,
        "mujoco_version": res.mujoco_version, "max_episode_steps": res.max_episode_steps,
        "seeds": [int(s) for s in config.seeds], "episodes_per_seed": int(config.eval.episodes),
        "return": _mean_std(res.returns.mean(axis=1)),
        "score": None if scores is None else _mean_std(scores.mean(axis=1)),
        "returns": res.returns.tolist(), "wall_s": time.time() - start,
    }
  if workdir is not None and distributed.is_main_process():
    try:
      write_json_atomic(os.path.join(workdir, f"eval_{name}.json"), result)
    except OSError as e:
      raise write_error(e, f"the evaluation {name}") from e
  return result


def load_eval(workdir: str | None, name: str) -> dict | None:
  """A finished evaluation of this run (resume skips it), or None."""
  path = workdir and os.path.join(workdir, f"eval_{name}.json")
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _metric_files(workdir: str) -> list[tuple[str, str]]:
  """(stage, path) of every metrics_<stage>.jsonl the Trainer wrote in the workdir."""
  return [(f[len("metrics_"):-len(".jsonl")], os.path.join(workdir, f)) for f in sorted(os.listdir(workdir))
          if f.startswith("metrics_") and f.endswith(".jsonl")]


def stage_seconds(workdir: str) -> dict[str, float]:
  """Training wall time per stage (compile included) from the metrics files, summed over resumed segments."""
  out = {}
  for stage, path in _metric_files(workdir):
    prev, total = 0, 0.0
    for record in read_records(path, note=False):
      total += (record["step"] - prev) / record["steps_per_sec"]
      prev = record["step"]
    out[stage] = total
  return out


def write_learning_curves(workdir: str) -> list[str]:
  """plots/<stage>.png for every metrics_<stage>.jsonl in the workdir."""
  pngs = []
  for stage, path in _metric_files(workdir):
    steps, _ = read_metrics(path)
    if len(steps):
      os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
      pngs.append(plot_learning_curves(path, os.path.join(workdir, "plots", f"{stage}.png"), title=stage))
  return pngs


def device_description() -> str:
  d = jax.devices()[0]
  kind = getattr(d, "device_kind", d.platform)
  cores = f", {os.cpu_count()} CPU cores" if d.platform == "cpu" else ""
  processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
  return f"{jax.device_count()} x {kind}{processes} ({d.platform}{cores}, {platform.machine()})"


def write_failed_summary(workdir: str, algo: str, config, error: DivergenceError) -> dict:
  """summary.json of a run that diverged: the failure instead of evaluations (a diverged run reports no results)."""
  summary = {"algo": algo, "dataset": config.dataset, "seeds": [int(s) for s in config.seeds],
             "failed": str(error), "stage": error.stage, "step": error.step, "device": device_description(),
             "jax_version": jax.__version__}
  if distributed.is_main_process():
    summary["stage_seconds"] = stage_seconds(workdir)
    try:
      write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    except OSError:
      pass  # the error on its way up says what went wrong; a full disk must not hide it
  return summary


def write_summary(workdir: str | None, algo: str, config, info: dict, evals: dict[str, dict],
                  extra: dict | None = None) -> dict:
  """summary.json: dataset, env, seeds, every evaluation, training seconds per stage, the device (and `extra`)."""
  summary = {
      "algo": algo, "dataset": config.dataset, "seeds": [int(s) for s in config.seeds],
      "data": {k: info.get(k) for k in ("source", "path", "env_id", "size", "obs_dim", "action_dim", "num_episodes",
                                        "reward_kind", "ref_min_score", "ref_max_score")},
      "eval": evals, "device": device_description(), "jax_version": jax.__version__, **(extra or {}),
  }
  if workdir is not None and distributed.is_main_process():
    if "stage_seconds" not in summary:
      summary["stage_seconds"] = stage_seconds(workdir)
    try:
      summary["plots"] = [os.path.relpath(p, workdir) for p in write_learning_curves(workdir)]
      write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    except OSError as e:
      raise write_error(e, "the run's summary and plots") from e
  return summary


def write_population_report(workdir: str | None, text: str) -> None:
  """report.md of a population run: its settings side by side."""
  if workdir is None or not distributed.is_main_process():
    return
  try:
    write_text_atomic(os.path.join(workdir, "report.md"), text)
  except OSError as e:
    raise write_error(e, "the population's report") from e

