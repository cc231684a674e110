"""Faults of a whole run, as a user meets them: a diverged SWG or SRPO stage (stopped where it diverged, blamed on the
right model, recorded in summary.json and by reproduce_d4rl), two processes on one run folder, config values out of
range, a truncated or garbled Minari file and a demo asked to write where it cannot. Each ends in one `error:` line
(or exception) naming the stage, field, file or holder, and nothing is lost."""
import errno
import json
import os
import socket
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import srpo_jax
import swg_jax
from common import iql
from common.run import config_check
from common import run as run_lib
from common.data import DatasetError
from common.errors import DivergenceError, RunError
from common.run.lock import LOCK_FILE, WorkdirLock
from swg_jax import weights as weights_lib
from tests.datasets import d4rl_hdf5, make_minari_dataset
from tests.test_training import random_data, small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------------------
# Divergence: caught at the stage that diverged, blamed on the right model, recorded beside the run.


def test_a_nan_advantage_never_becomes_a_valid_looking_weight():
  for kind in weights_lib.WEIGHT_KINDS:  # "expectile" made it 0.3, "hard_advantage" 0
    w = np.asarray(weights_lib.weights_from_advantage(jnp.asarray([0.5, jnp.nan, -0.5]), kind))
    assert np.isnan(w[1]) and np.isfinite(w[[0, 2]]).all(), (kind, w)


def test_swg_computes_no_weights_from_a_broken_critic():
  data = random_data(n=50)
  critic = iql.init_critic(jax.random.PRNGKey(0), data.obs_dim, data.action_dim, small_config())
  broken = critic.replace(v=critic.v.replace(params=jax.tree.map(lambda p: p * jnp.nan, critic.v.params)))
  with pytest.raises(DivergenceError, match=r"SWG weights: 50 of 50 advantages .*\(seeds at positions \[0\]; the "
                                            r"first at datum 0: nan\): the critic's Q or V is broken"):
    weights_lib.compute_weights(broken, data.observations, data.actions, swg_jax.get_config("smoke").weights)


def srpo_smoke(**stage_lrs):
  config = srpo_jax.get_config("smoke")
  for stage, lr in stage_lrs.items():
    config[stage].lr = lr
  return config


@pytest.mark.parametrize("stage", ["critic", "behavior"])
def test_srpo_stops_at_the_stage_that_diverged_and_blames_that_one(tmp_path, stage):
  with pytest.raises(DivergenceError) as caught:
    srpo_jax.train(srpo_smoke(**{stage: 1e30}), random_data(n=200), workdir=str(tmp_path))
  message = str(caught.value)
  assert caught.value.stage == stage and message.startswith(f"stage '{stage}' diverged in steps 1-10 of 20 (seed 0)")
  assert f"{stage}.lr = 1e+30" in message
  later = {"critic": ["behavior", "policy"], "behavior": ["policy"]}[stage]
  assert not any(os.path.exists(tmp_path / f"metrics_{s}.jsonl") for s in later)  # not after a whole later stage
  if stage == "behavior":
    assert "critic" not in message


def d4rl_hopper_file(tmp_path):
  """A tiny D4RL-style file with Hopper's dims (11, 3): a dataset path any run can train on."""
  return str(d4rl_hdf5(tmp_path / "tiny_hopper.hdf5", episode_lengths=(30, 40, 30),
                       episode_ends=("terminal", "timeout", "terminal"), obs_dim=11, action_dim=3))


def train_cmd(algo, dataset, workdir, *extra):
  return [sys.executable, "-m", "experiments.train", f"--algo={algo}", f"--dataset={dataset}",
          f"--config={algo}_jax/configs.py:smoke", "--config.env_id=Hopper-v5", f"--workdir={workdir}", *extra]


def test_a_diverged_swg_run_ends_in_one_error_line_and_reports_no_results(tmp_path):
  workdir = tmp_path / "run"
  out = subprocess.run(train_cmd("swg", d4rl_hopper_file(tmp_path), workdir, "--config.critic.lr=1e30"), cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: stage 'critic' diverged in steps 1-100 of 200 (seed 0): q_loss = nan") and \
      "critic.lr = 1e+30" in last
  assert "|" not in out.stdout  # no results table
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["failed"] == last[len("error: "):] and summary["stage"] == "critic" and "eval" not in summary
  assert not list(workdir.glob("eval_*")) and not (workdir / LOCK_FILE).exists()


def test_reproduce_records_a_divergence_beside_the_run_and_goes_on(tmp_path, monkeypatch, capsys):
  from experiments import reproduce_d4rl

  class Package:
    @staticmethod
    def get_config(arg):
      return swg_jax.get_config(arg)

    @staticmethod
    def train_and_evaluate(config, workdir, download=True):
      with run_lib.run_folder(workdir, config, "swg"):
        if config.dataset.startswith("hopper"):
          raise DivergenceError("stage 'critic' diverged in steps 1-100 of 200 (seed 0): q_loss = nan",
                                stage="critic", step=100)
        summary = {"eval": {"swg": {"skipped": "no env"}}}
        run_lib.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
        return summary

  monkeypatch.setattr(reproduce_d4rl, "algorithm_package", lambda algo: Package)
  datasets, out, report = ["hopper-medium-v2", "walker2d-medium-v2"], tmp_path / "runs", tmp_path / "d4rl.md"
  outcomes = reproduce_d4rl.reproduce(datasets, ["swg"], [0], "smoke", str(out), str(report), download=False)
  assert outcomes[("hopper-medium-v2", "swg")] == {"failed": "stage 'critic' diverged in steps 1-100 of 200 (seed "
                                                             "0): q_loss = nan"}
  assert "summary" in outcomes[("walker2d-medium-v2", "swg")]  # the others went on
  hopper = out / "hopper-medium-v2" / "swg"
  assert json.loads((hopper / "not_finished.json").read_text())["failed"].startswith("stage 'critic' diverged")
  assert json.loads((hopper / "summary.json").read_text())["stage"] == "critic"
  assert "| hopper-medium-v2 | failed |" in report.read_text()
  capsys.readouterr()
  again = reproduce_d4rl.reproduce(datasets[:1], ["swg"], [0], "smoke", str(out), str(report), download=False)
  assert "failed earlier, skipped" in capsys.readouterr().out and "failed" in again[("hopper-medium-v2", "swg")]


# ---------------------------------------------------------------------------------------------------------------
# One writer per run folder.


def test_a_second_writer_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(tmp_path, capsys):
  holder = WorkdirLock.acquire(str(tmp_path))
  with pytest.raises(RunError, match=rf"workdir {tmp_path} is in use by process {os.getpid()} on host "
                                     rf"{socket.gethostname()} \(since .*\): two runs writing one folder"):
    WorkdirLock.acquire(str(tmp_path))
  holder.release()
  assert not (tmp_path / LOCK_FILE).exists()

  dead = subprocess.Popen(["true"])
  dead.wait()
  (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": 0}))
  WorkdirLock.acquire(str(tmp_path)).release()  # a killed run's lock: nobody holds it any more
  assert f"took over the lock {tmp_path / LOCK_FILE} of process {dead.pid}" in capsys.readouterr().err

  (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-node", "since": 0}))
  with pytest.raises(RunError, match=rf"in use by process 1 on host another-node .*if that process is gone, delete "
                                     rf"{tmp_path / LOCK_FILE}"):
    WorkdirLock.acquire(str(tmp_path))


def test_train_refuses_a_run_folder_in_use_before_touching_it(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from common.run.lock import WorkdirLock; "
                             f"WorkdirLock.acquire({str(workdir)!r}); print('locked', flush=True); time.sleep(600)"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    out = subprocess.run(train_cmd("swg", d4rl_hopper_file(tmp_path), workdir), cwd=REPO, capture_output=True,
                         text=True, timeout=300)
  finally:
    holder.kill()
    holder.wait()
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1].startswith(
      f"error: workdir {workdir} is in use by process {holder.pid} on host {socket.gethostname()}")
  assert sorted(os.listdir(workdir)) == [LOCK_FILE]  # no config.json, metrics or checkpoints of the second run


# ---------------------------------------------------------------------------------------------------------------
# Config values, before any work.


@pytest.mark.parametrize("algo,field,value,rule", [
    ("swg", "critic.num_steps", -5, "a whole number >= 1"),
    ("srpo", "behavior.num_steps", 0, "a whole number >= 1; a stage of 0 steps would report an untrained model"),
    ("srpo", "policy.batch_size", 0, "a whole number >= 1"),
    ("swg", "diffusion.lr", -3e-4, "a finite number > 0"),
    ("srpo", "policy.lr", float("nan"), "a finite number > 0"),
    ("srpo", "policy.beta", -1.0, "a finite number >= 0"),
    ("swg", "critic.expectile", 1.0, r"a number in \(0, 1\)"),
    ("srpo", "critic.discount", 1.5, r"a number in \[0, 1\]"),
])
def test_config_values_out_of_range_are_named_with_their_range(algo, field, value, rule):
  config = {"swg": swg_jax.get_config, "srpo": srpo_jax.get_config}[algo]("smoke")
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(config_check.ConfigError, match=rf"^config\.{field} = {value!r} is out of range: it must be "
                                                     rf"{rule}"):
    config_check.check_values(config)


def test_a_refused_config_leaves_no_run_folder_behind(tmp_path):
  out = subprocess.run(train_cmd("swg", d4rl_hopper_file(tmp_path), tmp_path / "run", "--config.critic.num_steps=-5"),
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and out.stderr.strip().splitlines()[-1] == (
      "error: config.critic.num_steps = -5 is out of range: it must be a whole number >= 1")
  assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------------
# Damaged inputs and unwritable outputs: one line with the path.


@pytest.mark.parametrize("damage", ["truncated", "garbage over the header"])
def test_a_damaged_minari_file_is_one_error_naming_the_dataset_and_its_path(tmp_path, monkeypatch, damage):
  from common.data.minari_datasets import minari_transitions

  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  make_minari_dataset("test/hopper/damaged-v0", num_episodes=2, max_episode_steps=10)
  path = tmp_path / "test" / "hopper" / "damaged-v0" / "data" / "main_data.hdf5"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00garbage" * 64 + data[512:])
  with pytest.raises(DatasetError, match=rf"Minari dataset 'test/hopper/damaged-v0' in {path.parent}"):
    minari_transitions("test/hopper/damaged-v0")


def test_demo_with_an_unwritable_out_ends_in_one_error_line(tmp_path, monkeypatch, capsys):
  from experiments import demo

  out = tmp_path / "read_only"
  out.mkdir()
  out.chmod(0o555)
  if os.geteuid() == 0:  # root writes anyway: make the folder refuse as it would refuse anyone else
    def refuse(*args, **kwargs):
      raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
  with pytest.raises(SystemExit) as caught:
    demo.main([f"--out={out}", "--preset=smoke"])
  assert caught.value.code == 2
  assert capsys.readouterr().err == f"error: --out={str(out)!r} is not a writable folder: Permission denied\n"


def test_a_used_up_time_budget_saves_and_exits_75_with_one_line(tmp_path):
  """--max_runtime=1: the budget is spent by the time the first chunk ends (imports alone take longer)."""
  workdir = tmp_path / "run"
  out = subprocess.run(train_cmd("swg", d4rl_hopper_file(tmp_path), workdir, "--max_runtime=1"), cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 75, out.stderr[-3000:]
  lines = out.stderr.strip().splitlines()
  assert lines[-2] == f"[critic] time budget of 1 s used up: saved step 100 of 200 in {workdir}/checkpoints/critic"
  assert lines[-1] == f"time budget used up; progress is saved in {workdir}: run the same command again to resume"
  assert json.loads((workdir / "config.json").read_text())["max_runtime_s"] == 1.0
