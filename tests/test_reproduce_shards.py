"""reproduce_d4rl split over 3 shards (a job array): the shards' runs are disjoint and cover the grid, a shard killed
mid-run leaves its run 'not finished' in the report every other shard writes, and rerunning it completes the
report. Smoke preset, tiny D4RL-style files, SRPO only (its evaluation is one MLP call per step)."""
import os

import pytest

from common import run as run_lib
from experiments import reproduce_d4rl
from tests.datasets import d4rl_arrays, write_hdf5

PRESENT = ("hopper-medium-v2", "hopper-medium-replay-v2")
MISSING = "walker2d-medium-v2"


def test_shards_partition_the_grid():
  datasets = reproduce_d4rl.parse_datasets("all")
  units = reproduce_d4rl.grid_units(datasets, reproduce_d4rl.POLICIES)
  assert len(units) == 15 * 2 and len(set(units)) == len(units)  # SWG and SWG-R share one run
  for n in (1, 2, 3, 7, 31):
    parts = [units[i::n] for i in range(n)]
    assert sorted(u for p in parts for u in p) == sorted(units)  # union = grid, each unit exactly once


@pytest.mark.parametrize("spec, env, expected", [
    ("2/3", {}, (2, 3)), (None, {}, (0, 1)),
    (None, {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "5"}, (4, 5)),
    (None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3)),
    ("0/2", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "5"}, (0, 2)),  # the flag wins
])
def test_shard_from_flag_or_slurm(spec, env, expected):
  assert reproduce_d4rl.parse_shard(spec, env) == expected


@pytest.mark.parametrize("spec, env, message", [
    ("3/3", {}, r"--shard='3/3': shard 3 of 3 does not exist; shards are numbered 0 to n-1"),
    ("-1/3", {}, "shard -1 of 3 does not exist"), ("0/0", {}, "shard 0 of 0 does not exist"),
    ("1", {}, r"--shard='1': expected i/n"), ("a/b", {}, "expected i/n with whole numbers"),
    (None, {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID='7'.*shard 7 of 4"),
])
def test_bad_shard_is_refused_with_the_value(spec, env, message):
  with pytest.raises(ValueError, match=message):
    reproduce_d4rl.parse_shard(spec, env)


def test_three_shards_one_killed_and_rerun(tmp_path, monkeypatch):
  d4rl_dir = tmp_path / "d4rl"
  d4rl_dir.mkdir()
  monkeypatch.setenv("D4RL_DATASET_DIR", str(d4rl_dir))
  for seed, name in enumerate(PRESENT):
    write_hdf5(d4rl_dir / f"{name[:-3].replace('-', '_')}-v2.hdf5",
               d4rl_arrays((60, 80, 50, 70), ("terminal", "terminal", "timeout", "terminal"), obs_dim=11,
                           action_dim=3, seed=seed))
  datasets = [*PRESENT, MISSING]
  out, report_path = str(tmp_path / "runs"), str(tmp_path / "d4rl.md")
  grid = {(d, "srpo") for d in datasets}

  trained = []  # (shard, dataset): which shard trained what
  real_train = reproduce_d4rl.run_one
  monkeypatch.setattr(reproduce_d4rl, "run_one",
                      lambda algo, dataset, *a: trained.append((current[0], dataset)) or real_train(algo, dataset, *a))
  real_evaluate = run_lib.evaluate_policy

  def killed_in_evaluation(policy_fn, config, info, workdir, name):
    if os.path.basename(os.path.dirname(workdir)) == PRESENT[1]:  # shard 1's run dies after training
      raise KeyboardInterrupt
    return real_evaluate(policy_fn, config, info, workdir, name)

  def shard(i, report_only=False):
    current[0] = i
    return reproduce_d4rl.reproduce(datasets, ["srpo"], [0, 1], "smoke", out, report_path, download=False,
                                    shard=(i, 3), report_only=report_only)

  current = [None]
  monkeypatch.setattr(run_lib, "evaluate_policy", killed_in_evaluation)
  shard(0)
  with pytest.raises(KeyboardInterrupt):
    shard(1)
  outcomes = shard(2)
  assert set(outcomes) == grid
  assert "summary" in outcomes[(PRESENT[0], "srpo")] and "missing" in outcomes[(MISSING, "srpo")]
  assert outcomes[(PRESENT[1], "srpo")] is None  # killed: neither finished nor failed
  report = open(report_path).read()
  assert f"| {PRESENT[1]} | not finished | 101.2 |" in report
  assert f"## Not finished yet (1 of 3 runs)" in report and f"- {PRESENT[1]} / srpo (shard 1 of 3)" in report
  assert f"| {MISSING} | no data | 84.4 |" in report  # shard 2's missing data, recorded for the others

  monkeypatch.setattr(run_lib, "evaluate_policy", real_evaluate)
  outcomes = shard(1)  # the rerun resumes from the trained stages' checkpoints
  assert all(o is not None for o in outcomes.values()) and "summary" in outcomes[(PRESENT[1], "srpo")]
  final = shard(0, report_only=True)  # trains nothing, reports the whole grid from disk
  assert final.keys() == grid and "summary" in final[(PRESENT[1], "srpo")]
  report = open(report_path).read()
  assert "Not finished" not in report and "not finished" not in report
  for name in PRESENT:
    row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
    mean, std = (float(x) for x in row.split("|")[2].split(" ± "))
    assert std >= 0
  assert trained == [(0, PRESENT[0]), (1, PRESENT[1]), (2, MISSING), (1, PRESENT[1])]  # disjoint; the rerun again
