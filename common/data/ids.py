"""One answer to "which D4RL dataset is this?", shared by every algorithm's config resolution.

The papers give per-dataset settings (beta, expectile, policy depth, reward preprocessing) keyed by D4RL names such as
`hopper-medium-replay-v2`. Users also hold the same data under other ids: Minari's ports (`mujoco/hopper/medium-v0`,
`D4RL/antmaze/umaze-v1`, `D4RL/kitchen/complete-v2`), D4RL files by path (`~/.d4rl/datasets/hopper_medium-v2.hdf5`),
and this project's rebuilt recipes (`recipes/hopper/medium-replay-v0`, see `common.recipes.datasets`). `d4rl_name_for` maps
each of them to the matching D4RL name, so every id of the same data gets the same paper values.
"""
from __future__ import annotations

import re
from common.data import D4RL_DATASETS

LOCOMOTION_ENVS = ("halfcheetah", "hopper", "walker2d")
D4RL_LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert")
# Minari's `mujoco/<env>/<level>-v0` levels: simple / medium / expert. Only the two that D4RL also has are mapped
# (Minari's "simple" is not D4RL's uniform-random "random", and Minari has no medium-replay).
MINARI_MUJOCO_LEVELS = ("medium", "expert")
# Namespace of the datasets `experiments.make_dataset --recipe=...` writes: Minari's own `mujoco/` and `D4RL/` ids
# are Farama's remote datasets, so a local rebuild under those names would shadow (and be shadowed by) a download.
RECIPE_NAMESPACE = "recipes"

# The datasets both papers report (D4RL names without the version): their per-dataset values are the papers'.
PAPER_DATASETS = frozenset(
    [f"{env}-{level}" for env in LOCOMOTION_ENVS for level in ("medium", "medium-replay", "medium-expert")]
    + [f"antmaze-{maze}" for maze in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play",
                                      "large-diverse")])

_VERSION = re.compile(r"-v(\d+)$")
_ANTMAZE_MAZES = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")


def strip_version(name: str) -> str:
  """'hopper-medium-v2' -> 'hopper-medium' (a name without a -vN suffix is returned unchanged)."""
  return _VERSION.sub("", name)


def _d4rl_shaped(name: str) -> bool:
  """A D4RL-style name `<env>-<level>-vN` / `antmaze-<maze>-vN`, any version (D4RL had v0..v2)."""
  if not _VERSION.search(name):
    return False
  base = strip_version(name)
  if base.startswith("antmaze-"):
    return base[len("antmaze-"):] in _ANTMAZE_MAZES
  env, _, level = base.partition("-")
  return env in LOCOMOTION_ENVS and level in D4RL_LEVELS


def _minari_to_d4rl() -> dict[str, str]:
  """Minari port id without version -> the newest D4RL name whose `minari_id` it is (AntMaze: v2 over v0)."""
  table: dict[str, str] = {}
  for name, spec in D4RL_DATASETS.items():  # versions ascend within each dataset in the table
    if spec.minari_id:
      table[strip_version(spec.minari_id)] = name
  return table


_MINARI_PORTS = _minari_to_d4rl()
_D4RL_FILES = {spec.filename: name for name, spec in D4RL_DATASETS.items()}


def d4rl_name_for(dataset_id: str) -> str | None:
  """The D4RL dataset name a dataset id stands for, or None when it matches none.

  'hopper-medium-v2' -> itself (any version); a path whose file name is a D4RL file -> its D4RL name;
  'mujoco/<halfcheetah|hopper|walker2d>/<medium|expert>-vN' -> '<env>-<level>-v2';
  'D4RL/antmaze/<maze>-vN' -> 'antmaze-<maze>-v2' (and the other D4RL/ ports: kitchen, adroit);
  'recipes/<env>/<level>-vN' (this project's rebuilds, every D4RL level) -> '<env>-<level>-v2'.
  Anything else (another namespace, Minari's 'simple' level, other envs) -> None.
  """
  name = str(dataset_id).strip()
  if not name:
    return None
  if name in D4RL_DATASETS or _d4rl_shaped(name):
    return name
  file_name = name.replace("\\", "/").rsplit("/", 1)[-1]
  if file_name in _D4RL_FILES:
    return _D4RL_FILES[file_name]
  parts = name.split("/")
  if len(parts) != 3 or not _VERSION.search(parts[2]):
    return None
  namespace, env, level = parts[0], parts[1], strip_version(parts[2])
  if namespace == "mujoco" and env in LOCOMOTION_ENVS and level in MINARI_MUJOCO_LEVELS:
    return f"{env}-{level}-v2"
  if namespace == RECIPE_NAMESPACE and env in LOCOMOTION_ENVS and level in D4RL_LEVELS:
    return f"{env}-{level}-v2"
  return _MINARI_PORTS.get(f"{namespace}/{env}/{level}")


def paper_dataset_for(dataset_id: str) -> str | None:
  """The version-free D4RL name of one of the papers' datasets ('hopper-medium-replay') that `dataset_id` stands
  for, or None when it is outside both papers' tables."""
  d4rl = d4rl_name_for(dataset_id)
  base = strip_version(d4rl) if d4rl else None
  return base if base in PAPER_DATASETS else None


_ANNOUNCED: set[tuple[str, str]] = set()


def announce_defaults(algo: str, dataset_id: str, values: dict) -> str:
  """Prints once per (algo, dataset) in this process, and returns, the line saying that `dataset_id` is outside
  the papers' tables and which values the run uses instead of the papers' per-dataset ones."""
  d4rl = d4rl_name_for(dataset_id)
  why = f"its D4RL name {d4rl!r} is not" if d4rl else "it matches no D4RL dataset and is not"
  used = ", ".join(f"{k}={v}" for k, v in values.items())
  line = f"note: dataset {dataset_id!r}: {why} in the papers' tables; {algo} uses: {used}"
  if (algo, dataset_id) not in _ANNOUNCED:
    _ANNOUNCED.add((algo, dataset_id))
    print(line, flush=True)
  return line


BUILT_IN_NAMESPACE = "builtin"  # experiments.make_dataset's own datasets (the demo's Reacher)
_RECIPE_ENV_IDS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}


def how_to_get(dataset_id: str) -> str:
  """How a user gets a Minari dataset that is not stored here: the command that builds it for the ids this project
  makes itself (`builtin/...`, `recipes/<env>/<level>-v0`), else Minari's download."""
  parts = dataset_id.split("/")
  if parts[0] == BUILT_IN_NAMESPACE:
    return (f"build it with `.venv/bin/python -m experiments.make_dataset --dataset_id={dataset_id}` (the demo keeps "
            "its own copy in its run folder: MINARI_DATASETS_PATH=results/runs/demo/minari)")
  if parts[0] == RECIPE_NAMESPACE and len(parts) == 3:
    level = _VERSION.sub("", parts[2])
    env = _RECIPE_ENV_IDS.get(parts[1], "<env>")
    return f"build it with `.venv/bin/python -m experiments.make_dataset --recipe={level} --env={env}` or `make datasets`"
  return "on a machine with internet run `minari download {0}` and copy it under $MINARI_DATASETS_PATH".format(dataset_id)

