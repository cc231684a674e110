"""The grid of the papers' tables: its datasets, policies and published numbers, its units of work and shards."""
from __future__ import annotations

import os

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
