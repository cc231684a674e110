"""D4RL's dataset recipes rebuilt on Gymnasium MuJoCo (v5), written as standard Minari datasets.

D4RL (Fu et al. 2020) made its locomotion data with an online SAC agent:
  random         uniform random actions (D4RL: a randomly initialised policy);
  medium         rollouts of a SAC policy stopped early, when it reaches about a third of expert return;
  medium-replay  that SAC run's replay buffer up to the point where it reached medium;
  expert         rollouts of the SAC policy trained to the end (here: for the env steps the user gives);
  medium-expert  the medium and the expert rollouts together.
Expert return is D4RL's reference max score of the env, so medium's target is ref_max_score / 3. Rollouts use the
stochastic policy (the agent's own behaviour). Terminations and truncations are as the env reports them; a rollout
cut at the requested number of steps ends in a truncation. Ids: `recipes/<env>/<level>-v0` (common.data.ids).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np
from common.envs import rollouts
from common.data import D4RL_DATASETS
from common.data.ids import RECIPE_NAMESPACE
from common.recipes.sac_online import CHECKPOINT, CheckpointMismatch, OnlineConfig, OnlineSAC

LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")
ENVS = {"Hopper-v5": "hopper", "HalfCheetah-v5": "halfcheetah", "Walker2d-v5": "walker2d"}  # env id -> D4RL env
MEDIUM_FRACTION = 1.0 / 3.0
_DATA_SEED = 2 * 10**8  # rollout reset seeds, apart from the SAC run's training and evaluation resets


class RecipeError(ValueError):
  """A request that cannot be built; the message says which value and what to do."""


def reference_scores(env_id: str) -> tuple[float, float]:
  """D4RL's (ref_min_score, ref_max_score) of the env: random and expert returns."""
  spec = D4RL_DATASETS[f"{ENVS[env_id]}-medium-v2"]
  return spec.ref_min_score, spec.ref_max_score


def default_dataset_id(recipe: str, env_id: str) -> str:
  return f"{RECIPE_NAMESPACE}/{ENVS[env_id]}/{recipe}-v0"


def minari_root() -> pathlib.Path:
  return pathlib.Path(os.environ.get("MINARI_DATASETS_PATH") or os.path.expanduser("~/.minari/datasets"))


def check_request(recipe: str, env_id: str, dataset_id: str, *, overwrite: bool, expert_steps: int | None,
                  train_steps: int, dataset_steps: int) -> None:
  """Raises RecipeError on the first bad value, before any work."""
  if env_id not in ENVS:
    raise RecipeError(f"--env={env_id!r} has no recipe; expected one of {', '.join(ENVS)}")
  if recipe not in LEVELS:
    raise RecipeError(f"--recipe={recipe!r} is not a D4RL level; expected one of {', '.join(LEVELS)}")
  if recipe in ("expert", "medium-expert") and not (expert_steps and expert_steps > 0):
    raise RecipeError(f"--recipe={recipe} needs --expert_steps=N, the SAC env steps to train the expert for "
                      f"(D4RL trained to convergence, ~1M steps); got {expert_steps}")
  for name, value in (("--train_steps", train_steps), ("--dataset_steps", dataset_steps)):
    if not value > 0:
      raise RecipeError(f"{name} must be positive; got {value}")
  if (minari_root() / dataset_id).exists() and not overwrite:
    raise RecipeError(f"dataset {dataset_id!r} exists already ({minari_root() / dataset_id}); pass --overwrite to "
                      "replace it, or choose another --dataset_id")


def _uniform_policy(action_dim: int, seed: int):
  rng = np.random.default_rng(seed)
  return lambda obs, call: rng.uniform(-1.0, 1.0, size=(obs.shape[0], action_dim)).astype(np.float32)


def _train_to(run: OnlineSAC, level: str, *, max_steps: int, target: float | None) -> dict:
  """Trains `run` to the snapshot of `level` (medium: until an evaluation reaches `target`; expert: for max_steps
  env steps) unless it has it, and returns the snapshot's record. RecipeError when medium is not reached."""
  if level in run.snapshots:
    have = run.snapshots[level].get("target_return")
    if level == "medium" and have is not None and not np.isclose(have, target):
      raise RecipeError(f"the SAC run in {run.workdir} reached medium for target return {have:.1f}, not "
                        f"{target:.1f}; use another --workdir or --target_return={have}")
    return run.snapshots[level]
  reached = run.train(max_steps, target if level == "medium" else None, snapshot=level)
  if not reached:
    best = max((v for _, v in run.evals), default=float("nan"))
    raise RecipeError(
        f"the SAC agent did not reach the medium target return {target:.1f} within --train_steps={max_steps} env "
        f"steps (best evaluation {best:.1f}); what it trained is kept in {run.workdir / CHECKPOINT}: rerun with a "
        "larger --train_steps to continue from there")
  run.snapshots[level]["target_return"] = target
  run.save()
  return run.snapshots[level]


def build_episodes(recipe: str, env_id: str, *, seed: int, workdir: str | os.PathLike, online: OnlineConfig,
                   train_steps: int, expert_steps: int | None, dataset_steps: int, target_return: float | None,
                   progress: bool = True, num_envs: int = 8) -> tuple[list[dict], dict[str, Any]]:
  """The episodes of one recipe and the metadata describing how they were made (trains or resumes the SAC run in
  `workdir` as needed)."""
  from tqdm.auto import tqdm

  lo, hi = reference_scores(env_id)
  target = float(target_return) if target_return is not None else hi * MEDIUM_FRACTION
  meta: dict[str, Any] = {"recipe": recipe, "recipe_seed": int(seed), "ref_min_score": lo, "ref_max_score": hi}
  data_seed = _DATA_SEED + seed * 10**6

  def rollout(policy, offset: int, what: str) -> list[dict]:
    with tqdm(total=dataset_steps, desc=f"{what} rollouts", unit="step", disable=not progress,
              dynamic_ncols=True) as bar:
      return rollouts.collect_episodes(env_id, policy, seed=data_seed + offset, num_steps=dataset_steps,
                                       num_envs=num_envs, workdir=str(workdir), progress=bar)

  if recipe == "random":
    action_dim = rollouts.make_env(env_id, workdir).action_space.shape[0]
    return rollout(_uniform_policy(action_dim, data_seed), 0, "random"), meta
  try:
    run = OnlineSAC(env_id, workdir, seed, online, progress=progress)
  except CheckpointMismatch as e:
    raise RecipeError(str(e)) from e
  episodes: list[dict] = []
  if recipe in ("medium", "medium-replay", "medium-expert"):
    medium = _train_to(run, "medium", max_steps=train_steps, target=target)
    meta.update(target_return=target, medium_env_steps=medium["env_steps"], medium_eval_return=medium["eval_return"])
    if recipe == "medium-replay":
      episodes = run.buffer_episodes(medium["buffer_size"])
    else:
      episodes = rollout(run.policy(run.snapshot_actors["medium"], salt=10), 0, "medium")
  if recipe in ("expert", "medium-expert"):
    expert = _train_to(run, "expert", max_steps=expert_steps, target=None)
    meta.update(expert_env_steps=expert["env_steps"], expert_eval_return=expert["eval_return"])
    episodes += rollout(run.policy(run.snapshot_actors["expert"], salt=11), 10**6, "expert")
  return episodes, meta


@contextlib.contextmanager
def _minari_path(root: pathlib.Path):
  """MINARI_DATASETS_PATH set to `root` inside the block (minari reads it at every call)."""
  old = os.environ.get("MINARI_DATASETS_PATH")
  os.environ["MINARI_DATASETS_PATH"] = str(root)
  try:
    yield
  finally:
    if old is None:
      os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
      os.environ["MINARI_DATASETS_PATH"] = old


def write_minari(dataset_id: str, episodes: list[dict], env_id: str, meta: dict[str, Any], *, overwrite: bool,
                 description: str):
  """Writes a Minari dataset atomically: built under a temp root beside the real one, then renamed into place (an
  existing dataset is replaced only with `overwrite`, and only once the new one is complete). Returns it loaded."""
  import minari
  from minari.data_collector import EpisodeBuffer
  from minari.namespace import create_namespace, list_local_namespaces

  root = minari_root()
  root.mkdir(parents=True, exist_ok=True)
  final = root / dataset_id
  if final.exists() and not overwrite:
    raise RecipeError(f"dataset {dataset_id!r} exists already ({final}); pass --overwrite to replace it")
  tmp_root = pathlib.Path(tempfile.mkdtemp(dir=root, prefix=".recipe-"))
  try:
    buffers = [EpisodeBuffer(id=i, seed=ep.get("seed"), observations=ep["observations"], actions=ep["actions"],
                             rewards=ep["rewards"], terminations=ep["terminations"], truncations=ep["truncations"])
               for i, ep in enumerate(episodes)]
    with _minari_path(tmp_root), contextlib.chdir(tmp_root):
      dataset = minari.create_dataset_from_buffers(
          dataset_id, buffers, env=env_id, eval_env=env_id, algorithm_name=f"D4RL recipe {meta['recipe']!r} (SAC)",
          author="swg-srpo-jax", author_email="swg-srpo-jax@example.invalid",
          code_permalink="common/recipes/datasets.py", ref_min_score=meta["ref_min_score"],
          ref_max_score=meta["ref_max_score"], description=description)
      dataset.storage.update_metadata({k: v for k, v in meta.items() if k not in ("ref_min_score", "ref_max_score")})
    with _minari_path(root):
      namespace = dataset_id.rsplit("/", 1)[0] if "/" in dataset_id else None
      if namespace and namespace not in list_local_namespaces():
        create_namespace(namespace)
    final.parent.mkdir(parents=True, exist_ok=True)
    trash = None
    if final.exists():
      trash = pathlib.Path(tempfile.mkdtemp(dir=root, prefix=".replaced-"))
      os.replace(final, trash / "old")
    os.replace(tmp_root / dataset_id, final)
    if trash is not None:
      shutil.rmtree(trash, ignore_errors=True)
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  with _minari_path(root):
    return minari.load_dataset(dataset_id)


def make_recipe_dataset(recipe: str, env_id: str, *, seed: int = 0, dataset_id: str | None = None,
                        workdir: str | os.PathLike | None = None, overwrite: bool = False,
                        online: OnlineConfig = OnlineConfig(), train_steps: int = 1_000_000,
                        expert_steps: int | None = None, dataset_steps: int = 1_000_000,
                        target_return: float | None = None, progress: bool = True):
  """Builds the Minari dataset of one D4RL recipe (see the module docstring) and returns it. The SAC run lives in
  `workdir` (default runs/recipes/<env>-seed<seed>), shared by every level of one env and seed, and resumes from
  its checkpoint there. Raises RecipeError (before any work where the request itself is bad)."""
  dataset_id = dataset_id or (default_dataset_id(recipe, env_id) if env_id in ENVS and recipe in LEVELS else "")
  check_request(recipe, env_id, dataset_id, overwrite=overwrite, expert_steps=expert_steps, train_steps=train_steps,
                dataset_steps=dataset_steps)
  workdir = pathlib.Path(workdir or f"runs/recipes/{ENVS[env_id]}-seed{seed}")
  workdir.mkdir(parents=True, exist_ok=True)
  episodes, meta = build_episodes(recipe, env_id, seed=seed, workdir=workdir, online=online,
                                  train_steps=train_steps, expert_steps=expert_steps, dataset_steps=dataset_steps,
                                  target_return=target_return, progress=progress)
  description = (f"D4RL's {recipe!r} recipe rebuilt on {env_id} with an online SAC agent written in JAX "
                 f"(swg-srpo-jax, common/recipes/datasets.py), seed {seed}: {len(episodes)} episodes, "
                 f"{sum(len(ep['rewards']) for ep in episodes)} steps. Reference scores are D4RL's.")
  return write_minari(dataset_id, episodes, env_id, meta, overwrite=overwrite, description=description)
