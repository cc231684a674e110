"""experiments/train.py end to end: SWG and SRPO with 2 seeds in one process on a tiny Minari Reacher dataset built
here, killed mid-run and resumed; SRPO's 2 seeds shared by 2 processes (--distributed); and every kind of bad input
ending in one clear message and a non-zero exit."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common.data import DatasetError
from common.run import RunError, prepare_workdir
from experiments.train import resolve_config_flag
from tests.datasets import d4rl_arrays, write_hdf5
from tests.test_distributed import free_port, run_processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "test/reacher/tiny-v0"


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("minari")
  code = ("from experiments.make_dataset import make_reacher_dataset; "
          f"make_reacher_dataset({DATASET!r}, episodes=8, reference_episodes=2)")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=300,
                 env={**os.environ, "MINARI_DATASETS_PATH": str(root)})
  return str(root)


def train_cmd(algo, workdir, *extra):
  return [sys.executable, "-m", "experiments.train", f"--algo={algo}", f"--dataset={DATASET}",
          f"--config={algo}_jax/configs.py:smoke", "--seeds=0,1", f"--workdir={workdir}",
          "--config.critic.num_steps=5000", "--config.steps_per_call=50", "--config.checkpoint_every=100", *extra]


def run_env(minari_root, **extra):
  return {**os.environ, "MINARI_DATASETS_PATH": minari_root, **extra}


def kill_after_first_checkpoint(cmd, env, stage_dir, timeout=240):
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + timeout
  try:
    while time.time() < deadline:
      if os.path.isdir(stage_dir) and any(d.isdigit() for d in os.listdir(stage_dir)):
        proc.send_signal(signal.SIGKILL)
        break
      if proc.poll() is not None:
        pytest.fail(f"run ended before its first checkpoint: {proc.stderr.read().decode()[-2000:]}")
      time.sleep(0.05)
    else:
      pytest.fail("no checkpoint within the timeout")
  finally:
    proc.wait()


@pytest.mark.parametrize("algo,policies", [("swg", ("swg", "swgr")), ("srpo", ("srpo",))])
def test_two_seeds_killed_and_resumed(tmp_path, minari_root, algo, policies):
  workdir = str(tmp_path / algo)
  env = run_env(minari_root)
  kill_after_first_checkpoint(train_cmd(algo, workdir), env, os.path.join(workdir, "checkpoints", "critic"))
  assert not any(f.startswith("eval_") for f in os.listdir(workdir))  # really interrupted mid-training

  done = subprocess.run(train_cmd(algo, workdir), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "[critic] resuming from step" in done.stderr

  with open(os.path.join(workdir, "metrics_critic.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == sorted(set(steps)) and steps[-1] == 5000  # no step logged twice, none lost
  config = json.load(open(os.path.join(workdir, "config.json")))
  assert config["algo"] == algo and config["seeds"] == [0, 1] and config["dataset"] == DATASET
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert set(summary["eval"]) == set(policies)
  for name in policies:
    ev = json.load(open(os.path.join(workdir, f"eval_{name}.json")))
    assert ev["env_id"] == "Reacher-v5" and ev["seeds"] == [0, 1] and ev["gymnasium_version"]
    returns = np.asarray(ev["returns"])
    assert returns.shape == (2, 2) and np.all(np.isfinite(returns)) and np.all(returns < 0)
    np.testing.assert_allclose(ev["return"]["per_seed"], returns.mean(axis=1))
    assert np.isfinite(ev["score"]["mean"])
  for png in summary["plots"]:
    assert open(os.path.join(workdir, png), "rb").read(4) == b"\x89PNG"
  assert {"critic"} <= set(summary["stage_seconds"])
  name = policies[0].upper().replace("SWGR", "SWG-R")
  assert f"| {name} | {DATASET} | Reacher-v5 | 2 x 2 |" in done.stdout


def distributed_cmd(workdir, address, seeds="0,1"):
  return lambda i: [sys.executable, "-m", "experiments.train", "--algo=srpo", f"--dataset={DATASET}",
                    "--config=srpo_jax/configs.py:smoke", f"--seeds={seeds}", f"--workdir={workdir}", "--distributed",
                    f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"]


def test_two_processes_share_the_seeds_of_one_run(tmp_path, minari_root):
  workdir = tmp_path / "srpo"
  results = run_processes(distributed_cmd(workdir, f"localhost:{free_port()}"), env=run_env(minari_root))
  for code, _, err in results:
    assert code == 0, err[-3000:]
  # Process 0 alone reports and writes the results.
  tables = [[line for line in out.splitlines() if line.startswith("|")] for _, out, _ in results]
  assert any(line.startswith("| SRPO |") for line in tables[0]) and not tables[1]
  summary = json.load(open(workdir / "summary.json"))
  assert "2 x cpu in 2 processes" in summary["device"]
  assert np.asarray(summary["eval"]["srpo"]["returns"]).shape == (2, 2)
  for stage in ("critic", "behavior", "policy"):
    with open(workdir / f"metrics_{stage}.jsonl") as f:
      steps = [json.loads(line)["step"] for line in f]
    assert steps == sorted(set(steps)), stage  # written once, not by both processes


def test_distributed_flags_refuse_what_cannot_work(tmp_path, minari_root):
  results = run_processes(distributed_cmd(tmp_path / "run", f"localhost:{free_port()}", seeds="0,1,2"),
                          env=run_env(minari_root))
  for code, _, err in results:
    assert code != 0 and err.strip().splitlines()[-1] == (
        "error: 3 seeds cannot be shared evenly by 2 processes: give a seed count that is a multiple of 2"), err[-2000:]
  alone = subprocess.run(distributed_cmd(tmp_path / "run", "localhost:1")(0)[:-4] + ["--process_id=0"], cwd=REPO,
                         env=run_env(minari_root), capture_output=True, text=True, timeout=120)
  assert alone.returncode != 0 and "need --distributed" in alone.stderr
  assert not (tmp_path / "run").exists()


def test_resolve_config_flag_puts_the_dataset_into_the_config_arg():
  path = os.path.join(REPO, "srpo_jax", "configs.py")
  assert resolve_config_flag(["p", "--algo=srpo", "--dataset=hopper-medium-v2"])[-1] == \
      f"--config={path}:hopper-medium-v2:paper"
  assert resolve_config_flag(["p", "--algo=swg", "--dataset=x", "--config=swg_jax/configs.py:smoke"])[-1] == \
      "--config=swg_jax/configs.py:x:smoke"
  assert resolve_config_flag(["p", "--algo", "swg", "--dataset", "x", "--config", "c.py:demo"])[-1] == \
      "--config=c.py:x:demo"
  unchanged = ["p", "--algo=swg", "--dataset=x", "--config=c.py:x:smoke"]
  assert resolve_config_flag(unchanged) == unchanged
  # ml_collections reads a --config.<field> override only after --config itself ("Unknown command line flag"
  # otherwise): the config flag, given or implied, goes before the first override.
  assert resolve_config_flag(["p", "--algo=srpo", "--config.critic.lr=1", "--dataset=x"]) == \
      ["p", "--algo=srpo", f"--config={path}:x:paper", "--config.critic.lr=1", "--dataset=x"]
  assert resolve_config_flag(["p", "--algo=swg", "--noconfig.progress", "--config", "c.py:x:demo"]) == \
      ["p", "--algo=swg", "--config=c.py:x:demo", "--noconfig.progress"]


def test_overrides_without_a_config_flag_reach_the_config(tmp_path):
  """`--config.<field>` given without --config (the config is implied by --algo) is parsed, not refused by absl."""
  proc = subprocess.run([sys.executable, "-m", "experiments.train", "--algo=swg", "--config.critic.hidden=(3,256)",
                         "--dataset=no-such-data", f"--workdir={tmp_path / 'run'}"], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode != 0 and "Unknown command line flag" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "no-such-data" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one clear message, a non-zero exit, earlier results untouched.


def test_bad_input_exits_with_one_clear_message(tmp_path, minari_root):
  env = run_env(minari_root, D4RL_DATASET_DIR=str(tmp_path / "d4rl"))
  cases = {
      "unknown dataset": ("hopper-medum-v2", r"unknown dataset id 'hopper-medum-v2'"),
      "corrupt hdf5": (str(tmp_path / "corrupt.hdf5"), r"corrupt\.hdf5"),
  }
  (tmp_path / "corrupt.hdf5").write_bytes(b"this is not an hdf5 file" * 10)
  for what, (dataset, message) in cases.items():
    cmd = [sys.executable, "-m", "experiments.train", "--algo=srpo", f"--dataset={dataset}",
           "--config=srpo_jax/configs.py:smoke", f"--workdir={tmp_path / 'run'}"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0, what
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(message, last), (what, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, what
    assert not (tmp_path / "run").exists(), what  # a dataset that fails leaves no run directory behind


def smoke_config(algo, dataset):
  import srpo_jax.configs
  import swg_jax.configs

  module = {"swg": swg_jax.configs, "srpo": srpo_jax.configs}[algo]
  return module.get_config(f"{dataset}:smoke")


def test_truncated_and_mismatched_hdf5_are_refused(tmp_path, monkeypatch):
  from common.run import load_run_data

  monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
  good = write_hdf5(tmp_path / "good.hdf5", d4rl_arrays((5, 7), ("terminal", "timeout"), obs_dim=11, action_dim=3))
  truncated = tmp_path / "truncated.hdf5"
  truncated.write_bytes(open(good, "rb").read()[:2000])
  with pytest.raises(DatasetError, match="truncated.hdf5"):
    load_run_data(smoke_config("swg", str(truncated)))
  # A file stored under hopper-medium-v2's name whose dims are not Hopper's (11, 3).
  write_hdf5(tmp_path / "hopper_medium-v2.hdf5", d4rl_arrays((5, 7), ("terminal", "timeout"), obs_dim=5))
  with pytest.raises(DatasetError, match=r"obs.*5.*11|11.*5"):
    load_run_data(smoke_config("srpo", "hopper-medium-v2"))
  # Any path: checked against the env named in the config.
  config = smoke_config("swg", str(good))
  config.env_id = "Reacher-v5"
  with pytest.raises(DatasetError, match=r"obs dim 11 and action dim 3, but its env Reacher-v5 has obs dim 10 and "
                                         r"action dim 2"):
    load_run_data(config)


def test_workdir_unwritable_or_holding_another_run(tmp_path):
  config = smoke_config("srpo", "hopper-medium-v2")
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(RunError, match=r"workdir .*a_file/run.* is not writable"):
    prepare_workdir(str(blocker / "run"), config, "srpo")

  workdir = str(tmp_path / "run")
  prepare_workdir(workdir, config, "srpo")
  prepare_workdir(workdir, config, "srpo")  # the same config resumes
  before = open(os.path.join(workdir, "config.json")).read()
  other = smoke_config("srpo", "hopper-medium-v2")
  other.policy.beta = 0.5
  with pytest.raises(RunError, match=r"different config \(policy.beta: 0.05 -> 0.5\)"):
    prepare_workdir(workdir, other, "srpo")
  with pytest.raises(RunError, match=r"algo: 'srpo' -> 'swg'"):
    prepare_workdir(workdir, smoke_config("swg", "hopper-medium-v2"), "swg")
  assert open(os.path.join(workdir, "config.json")).read() == before
  driven = smoke_config("srpo", "hopper-medium-v2")
  driven.steps_per_call = 7  # how the run is driven may change on resume
  prepare_workdir(workdir, driven, "srpo")


def test_a_run_recorded_with_a_retired_field_at_its_retired_value_resumes(tmp_path):
  """Run folders written before the optimizer's `flat_optimizer` option was removed record it as False (what every
  stage still computes): they resume. One recorded as True computed something else, and is refused."""
  workdir = str(tmp_path / "run")
  config = smoke_config("srpo", "hopper-medium-v2")
  prepare_workdir(workdir, config, "srpo")
  path = os.path.join(workdir, "config.json")
  recorded = json.load(open(path))
  for stage in ("critic", "behavior", "policy"):
    recorded[stage]["flat_optimizer"] = False
  json.dump(recorded, open(path, "w"))
  prepare_workdir(workdir, config, "srpo")
  recorded["behavior"]["flat_optimizer"] = True
  json.dump(recorded, open(path, "w"))
  with pytest.raises(RunError, match=r"behavior.flat_optimizer: True -> '<absent>'"):
    prepare_workdir(workdir, config, "srpo")


# ---------------------------------------------------------------------------------------------------------------
# Config and seed mistakes: one error line before anything is loaded or written.


def train_argv(*extra, algo="srpo", config="srpo_jax/configs.py:smoke"):
  return resolve_config_flag(["train", f"--algo={algo}", "--dataset=hopper-medium-v2", f"--config={config}", *extra])


@pytest.mark.parametrize("override,message", [
    ("--config.critic.lrr=1e-4", r"^--config\.critic\.lrr: the srpo config has no field 'critic\.lrr'; did you mean "
                                 r"--config\.critic\.lr\? \(fields of config\.critic: batch_size, .*lr, "),
    ("--config.nonexistent=3", r"^--config\.nonexistent: the srpo config has no field 'nonexistent'; the nearest "
                               r"valid name is --config\.\w+"),
    ("--config.lr=3", r"did you mean --config\.behavior\.lr or --config\.critic\.lr or --config\.policy\.lr\?"),
    ("--config.polcy.beta=3", r"no field 'polcy'; did you mean --config\.policy\?"),
    ("--config.critic.lr.x=3", r"config\.critic\.lr is a float, not a group of fields"),
    ("--noconfig.progres", r"no field 'progres'; did you mean --config\.progress\?"),
    ("--config.critic.hidden[0]=3", r"^--config\.critic\.hidden\[0\]=3: config\.critic\.hidden is a tuple, "
                                    r"\(32, 32\); its items cannot be set one by one: give it whole, e\.g\. "
                                    r"--config\.critic\.hidden='\(3, 32\)'"),
])
def test_unknown_config_override_names_the_nearest_field(override, message):
  from experiments.train import config_problem

  assert re.search(message, config_problem(train_argv(override)))
  assert config_problem(train_argv("--config.critic.lr=1e-4", "--noconfig.progress")) is None


def test_config_of_the_other_algorithm_or_a_bad_file_is_named():
  from experiments.train import config_problem

  assert re.search(r"^--config=swg_jax/configs\.py:hopper-medium-v2:smoke is a swg config \(it has diffusion, "
                   r"resampling, sampling, weights\), but --algo=srpo: give --config=srpo_jax/configs\.py:<preset>",
                   config_problem(train_argv(config="swg_jax/configs.py:smoke")))
  assert "is a srpo config (it has behavior, policy), but --algo=swg" in config_problem(
      train_argv(algo="swg", config="srpo_jax/configs.py:smoke"))
  assert "no config file 'nope.py'" in config_problem(train_argv(config="nope.py:smoke"))
  assert "unknown SRPO preset 'smok'" in config_problem(train_argv(config="srpo_jax/configs.py:smok"))
  assert config_problem(train_argv(algo="swg", config="swg_jax/configs.py:demo")) is None


def test_seeds_must_be_distinct_and_non_negative(tmp_path):
  from common.run import check_seeds, load_run_data
  from experiments.train import seeds_problem

  rule = "seeds are distinct non-negative integers"
  assert seeds_problem((0, 0), "--seeds=0,0") == f"--seeds=0,0: seed 0 is given 2 times; {rule}, e.g. 0,1,2,3,4"
  assert seeds_problem((3, -1), "--seeds=3,-1").startswith("--seeds=3,-1: seed -1 is not a non-negative integer")
  for bad in [(), (1.5,), (True,), ("0",)]:
    with pytest.raises(RunError, match=rule):
      check_seeds(bad)
  check_seeds((0, 1, 2, 3, 4))
  check_seeds((np.int64(7),))
  config = smoke_config("srpo", str(tmp_path / "absent.hdf5"))
  config.seeds = (1, 1)
  with pytest.raises(RunError, match="seed 1 is given 2 times"):  # before the (absent) dataset is looked at
    load_run_data(config)


def test_config_and_seed_mistakes_exit_before_any_work(tmp_path):
  """The wrong algorithm's config used to train the critic, crash, and leave a workdir the right command refused."""
  cases = {
      "other algo's config": (["--config=swg_jax/configs.py:smoke"], r"is a swg config .* but --algo=srpo"),
      "repeated seed": (["--config=srpo_jax/configs.py:smoke", "--seeds=0,0"], r"--seeds=0,0: seed 0 is given 2"),
  }
  for what, (extra, message) in cases.items():
    cmd = [sys.executable, "-m", "experiments.train", "--algo=srpo", f"--dataset={tmp_path / 'absent.hdf5'}",
           f"--workdir={tmp_path / 'run'}", *extra]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), (what, out.stderr[-2000:])
    assert re.search(message, lines[0]), (what, lines[0])
    assert not (tmp_path / "run").exists(), what


@pytest.mark.parametrize("module,flag", [("train", "--algo"), ("reproduce_d4rl", "--shard"), ("make_dataset", "--recipe"),
                                         ("bench", "--stages"), ("validate", "--datasets"),
                                         ("check_antmaze", "--dataset")])
def test_help_prints_the_entry_points_flags_and_exits_0(module, flag):
  out = subprocess.run([sys.executable, "-m", f"experiments.{module}", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"  {flag}" in out.stdout and "results/demo/minari" not in out.stdout
