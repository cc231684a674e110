"""reproduce_d4rl split over 3 shards (a job array): the shards' runs are disjoint and cover the grid, a shard killed
mid-run leaves its run 'not finished' in the report every other shard writes, and rerunning it completes the
report. Smoke preset, a tiny D4RL-style file, SRPO only (its evaluation is one MLP call per step); the other two
shards' datasets are missing (cheap runs that still end in a recorded outcome)."""
import os

import ml_collections
import pytest

from common import run as run_lib
from experiments import reproduce_d4rl
from tests.datasets import d4rl_arrays, write_hdf5

PRESENT = "hopper-medium-v2"
MISSING = ("walker2d-medium-v2", "halfcheetah-medium-v2")


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


def test_a_new_attempt_clears_the_outcome_recorded_by_the_last(tmp_path, monkeypatch):
  workdir = str(tmp_path / PRESENT / "srpo")
  reproduce_d4rl.record_not_finished(workdir, {"failed": "a bug, since fixed"})
  assert reproduce_d4rl.read_outcome(workdir) == {"failed": "a bug, since fixed"}
  seen_while_running = []

  class Package:
    get_config = staticmethod(lambda arg: ml_collections.ConfigDict({"seeds": (0,)}))

    @staticmethod
    def train_and_evaluate(config, workdir, download):
      seen_while_running.append(reproduce_d4rl.read_outcome(workdir))
      raise Killed

  monkeypatch.setattr(reproduce_d4rl, "algorithm_package", lambda algo: Package)
  with pytest.raises(Killed):
    reproduce_d4rl.run_one("srpo", PRESENT, "smoke", [0], workdir, False)
  assert seen_while_running == [None] and reproduce_d4rl.read_outcome(workdir) is None  # running, then killed


class Killed(BaseException):
  """Stands for the job being killed: like SIGKILL or Ctrl-C, no `except Exception` in the code stops it (and, unlike
  a KeyboardInterrupt, a test that lets it escape fails instead of stopping the whole session)."""


def test_three_shards_one_killed_and_rerun(tmp_path, monkeypatch):
  d4rl_dir = tmp_path / "d4rl"
  d4rl_dir.mkdir()
  monkeypatch.setenv("D4RL_DATASET_DIR", str(d4rl_dir))
  write_hdf5(d4rl_dir / "hopper_medium-v2.hdf5",
             d4rl_arrays((60, 80, 50, 70), ("terminal", "terminal", "timeout", "terminal"), obs_dim=11, action_dim=3))
  datasets = [PRESENT, *MISSING]
  out, report_path = str(tmp_path / "runs"), str(tmp_path / "d4rl.md")
  grid = {(d, "srpo") for d in datasets}

  current, started = [None], []  # (shard, dataset): which shard started which run
  real_run_one = reproduce_d4rl.run_one
  monkeypatch.setattr(reproduce_d4rl, "run_one",
                      lambda algo, dataset, *a: started.append((current[0], dataset)) or real_run_one(algo, dataset, *a))
  real_evaluate = run_lib.evaluate_policy

  def killed(*args, **kwargs):  # the shard's process dies after training, before its evaluation is written
    raise Killed

  def shard(i, report_only=False):
    current[0] = i
    return reproduce_d4rl.reproduce(datasets, ["srpo"], [0, 1], "smoke", out, report_path, download=False,
                                    shard=(i, 3), report_only=report_only)

  monkeypatch.setattr(run_lib, "evaluate_policy", killed)
  with pytest.raises(Killed):
    shard(0)
  shard(1)
  outcomes = shard(2)
  assert set(outcomes) == grid
  assert outcomes[(PRESENT, "srpo")] is None  # killed: neither finished nor failed
  assert all("missing" in outcomes[(d, "srpo")] for d in MISSING)
  report = open(report_path).read()
  assert f"| {PRESENT} | not finished | 95.5 |" in report
  assert "## Not finished yet (1 of 3 runs)" in report and f"- {PRESENT} / srpo (shard 0 of 3)" in report
  assert f"| {MISSING[0]} | no data | 84.4 |" in report  # shard 1's missing data, recorded for shard 2's report
  assert f"| {MISSING[1]} | no data | 60.4 |" in report

  monkeypatch.setattr(run_lib, "evaluate_policy", real_evaluate)
  metrics = os.path.join(out, PRESENT, "srpo", "metrics_policy.jsonl")
  trained_before = open(metrics).read()
  outcomes = shard(0)  # the rerun resumes: its stages are finished, only the evaluation is left
  assert "summary" in outcomes[(PRESENT, "srpo")]
  assert open(metrics).read() == trained_before
  final = shard(1, report_only=True)  # trains nothing, reports the whole grid from disk
  assert final.keys() == grid and "summary" in final[(PRESENT, "srpo")]
  report = open(report_path).read()
  assert "not finished" not in report.lower()
  row = next(line for line in report.splitlines() if line.startswith(f"| {PRESENT} |"))
  mean, std = (float(x) for x in row.split("|")[2].split(" ± "))
  assert std >= 0
  assert started == [(0, PRESENT), (1, MISSING[0]), (2, MISSING[1]), (0, PRESENT)]  # disjoint; the rerun again


def test_runs_of_one_environment_train_as_one_population_in_their_usual_folders(tmp_path, monkeypatch, capsys):
  """--populations=on: hopper's medium and medium-replay SRPO runs train as one program; each run's results land
  where a run alone puts them, the report reads them, a rerun skips them; a group with a dataset that cannot be
  had trains run by run, recording the missing one."""
  from common.data import D4RL_DATASETS
  from tests.datasets import d4rl_arrays, write_hdf5

  d4rl = tmp_path / "d4rl"
  d4rl.mkdir()
  for name in ("hopper-medium-v2", "hopper-medium-replay-v2"):
    spec = D4RL_DATASETS[name]
    write_hdf5(str(d4rl / spec.filename), d4rl_arrays((30, 40, 25, 20), ("terminal",) * 4, obs_dim=spec.obs_dim,
                                                      action_dim=spec.action_dim))
  monkeypatch.setenv("D4RL_DATASET_DIR", str(d4rl))
  out, report_path = tmp_path / "out", tmp_path / "d4rl.md"
  datasets = ["hopper-medium-v2", "hopper-medium-replay-v2"]
  outcomes = reproduce_d4rl.reproduce(datasets, ["srpo"], [0], "smoke", str(out), str(report_path), download=False,
                                      populations=True)
  assert all("summary" in outcomes[(d, "srpo")] for d in datasets)
  assert len(list((out / "populations").iterdir())) == 1
  assert "as one program" in capsys.readouterr().out
  text = report_path.read_text()
  assert "| hopper-medium-v2 | " in text and "not finished" not in text
  reproduce_d4rl.reproduce(datasets, ["srpo"], [0], "smoke", str(out), str(report_path), download=False,
                           populations=True)
  assert "finished earlier, skipped" in capsys.readouterr().out
  with_missing = [*datasets, "hopper-medium-expert-v2"]
  outcomes = reproduce_d4rl.reproduce(with_missing, ["srpo"], [0], "smoke", str(out), str(report_path),
                                      download=False, populations=True)
  assert "missing" in outcomes[("hopper-medium-expert-v2", "srpo")]
  assert all("summary" in outcomes[(d, "srpo")] for d in datasets)
