"""Stopping a training process from outside: SIGTERM (a cluster's notice) and SIGINT mid-chunk save the chunk in
flight and exit non-zero with a message, also in a background job of a script (started with SIGINT ignored); kill -9
at a random moment loses at most the chunk in flight; a time budget saves and stops. Every resumed run ends bitwise
equal to an uninterrupted one. The processes are tests/critic_process.py."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from common import interrupts
from common.training import Trainer
from tests.critic_process import critic_stage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Chunks of 2000 tiny critic steps last about a third of a second on the 2-core CPU: long enough to signal one in
# flight; seven of them leave room to stop the run twice before its end.
NUM_STEPS, CHUNK = 14_000, 2_000


@pytest.fixture(scope="module")
def uninterrupted():
  step, state, data, keys = critic_stage()
  final = Trainer(step, num_steps=NUM_STEPS, steps_per_call=CHUNK, progress=False).run(state, data, keys)
  return [np.asarray(x) for x in jax.tree.leaves(final)]


def command(workdir, checkpoint_every=0):
  """The run, checkpointing only at its end (and when stopped) unless `checkpoint_every` says otherwise."""
  return [sys.executable, "-m", "tests.critic_process", str(workdir), str(NUM_STEPS), str(CHUNK),
          str(checkpoint_every)]


def wait_for_chunks(proc, workdir, count=1, timeout=120):
  """Wait until `count` chunks are logged (the next is then in flight); returns the trainer's pid."""
  metrics = workdir / "metrics_train.jsonl"
  deadline = time.time() + timeout
  while time.time() < deadline:
    if metrics.exists() and metrics.read_text().count("\n") >= count:
      return int((workdir / "pid").read_text())
    if proc.poll() is not None:
      pytest.fail(f"the run ended before its first chunk: {proc.stderr.read()[-2000:]}")
    time.sleep(0.02)
  pytest.fail("no chunk within the timeout")


def resume_and_compare(workdir, uninterrupted):
  done = subprocess.run(command(workdir), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  final = np.load(workdir / "final.npz")
  assert len(final.files) == len(uninterrupted)
  for i, expected in enumerate(uninterrupted):
    np.testing.assert_array_equal(final[f"leaf_{i}"], expected)  # bitwise
  steps = [json.loads(line)["step"] for line in (workdir / "metrics_train.jsonl").read_text().splitlines()]
  assert steps == list(range(CHUNK, NUM_STEPS + 1, CHUNK))  # no chunk logged twice, none lost
  return done.stderr


def saved_step(stderr, reason):
  line = next(line for line in stderr.splitlines() if line.startswith(f"[train] {reason}: saved step "))
  return int(line.split("saved step ")[1].split()[0])


def test_sigterm_mid_chunk_saves_that_chunk_then_kill_9_at_a_random_moment_loses_only_what_followed(
    tmp_path, uninterrupted):
  """SIGTERM right after the first chunk: the chunk in flight is finished, saved (the only checkpoint before the end),
  and the process says so and exits 143. Its rerun is killed with SIGKILL at a random moment; the next rerun resumes
  from what was saved and ends bitwise equal to an uninterrupted run."""
  workdir = tmp_path / "run"
  proc = subprocess.Popen(command(workdir), cwd=REPO, stderr=subprocess.PIPE, text=True)
  pid = wait_for_chunks(proc, workdir)
  os.kill(pid, signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err[-2000:]
  step = saved_step(err, "stopped by SIGTERM")
  assert 2 * CHUNK <= step <= NUM_STEPS - 3 * CHUNK and step % CHUNK == 0  # the chunk in flight, finished and saved
  assert err.strip().splitlines()[-1] == f"stopped by SIGTERM; progress is saved in {workdir}"
  assert "Traceback" not in err

  proc = subprocess.Popen(command(workdir, checkpoint_every=CHUNK), cwd=REPO, stderr=subprocess.PIPE, text=True)
  wait_for_chunks(proc, workdir, count=step // CHUNK + 2)  # the second chunk of the rerun: its time without compiling
  with open(workdir / "metrics_train.jsonl") as f:
    chunk_seconds = CHUNK / json.loads(f.readlines()[-1])["steps_per_sec"]
  left = NUM_STEPS // CHUNK - step // CHUNK - 2
  delay = random.uniform(0.0, (left - 0.5) * chunk_seconds)  # anywhere in the chunks left, checkpoints included
  time.sleep(delay)
  proc.kill()
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL, f"the run ended on its own within {delay:.2f} s"
  assert "[train] resuming from step" in resume_and_compare(workdir, uninterrupted), f"killed after {delay:.2f} s"


def test_sigint_reaches_a_background_job_of_a_script(tmp_path):
  """`cmd &` in a non-interactive shell starts cmd with SIGINT ignored; the run still saves and stops on it."""
  workdir = tmp_path / "run"
  script = " ".join(f"'{a}'" for a in command(workdir)) + " & wait $!"
  proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True)
  pid = wait_for_chunks(proc, workdir)
  with open(f"/proc/{pid}/status") as f:
    ignored = int(next(line for line in f if line.startswith("SigIgn:")).split()[1], 16)
  assert ignored & (1 << (signal.SIGINT - 1)) == 0, "the trainer left SIGINT ignored"
  os.kill(pid, signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  assert saved_step(err, "interrupted") >= 2 * CHUNK
  assert err.strip().splitlines()[-1] == f"interrupted; progress is saved in {workdir}"


def test_a_used_up_time_budget_saves_and_stops(tmp_path, monkeypatch, capsys):
  step, state, data, keys = critic_stage()
  clock = iter([10.0, 10.0, 100.0])  # process seconds seen after each chunk: the third leaves no time for a fourth
  monkeypatch.setattr(interrupts, "process_seconds", lambda: next(clock))
  trainer = Trainer(step, num_steps=50, steps_per_call=5, workdir=str(tmp_path), progress=False, max_runtime_s=100.0)
  with pytest.raises(interrupts.Interrupted) as caught:
    trainer.run(state, data, keys)
  assert caught.value.reason == "time budget" and interrupts.exit_code(caught.value) == 75
  assert "[train] time budget of 100 s used up: saved step 15 of 50" in capsys.readouterr().err
