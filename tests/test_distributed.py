"""Several processes training one set of seeds (common.distributed): which devices take the seed axis, and a real
2-process run on this machine's CPU (jax.distributed over localhost) equal to one process, checkpointed, resumed
(in 2 processes and in one) and written once."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import NamedTuple

import numpy as np
import pytest

from common import iql
from common.distributed import mesh_devices
from common.training import Trainer
from tests.test_training import initial_state, per_seed_rewards, small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeDevice(NamedTuple):
  process_index: int
  id: int


def devices(processes, per_process):
  return [FakeDevice(p, 100 * p + i) for p in range(processes) for i in range(per_process)]


def test_one_process_takes_as_many_devices_as_divide_the_seeds():
  assert mesh_devices(6, devices(1, 4)) == devices(1, 3)
  assert mesh_devices(5, devices(1, 8)) == devices(1, 5)
  assert mesh_devices(7, devices(1, 4)) == devices(1, 1)


def test_every_process_takes_the_same_number_of_devices_in_process_order():
  two_by_four = devices(2, 4)
  interleaved = [d for pair in zip(two_by_four[:4], two_by_four[4:]) for d in pair]
  expected = [FakeDevice(0, 0), FakeDevice(0, 1), FakeDevice(1, 100), FakeDevice(1, 101)]
  assert mesh_devices(4, interleaved) == expected  # 2 seeds per process: 2 devices each
  assert mesh_devices(6, two_by_four) == [FakeDevice(0, 0), FakeDevice(0, 1), FakeDevice(0, 2),
                                          FakeDevice(1, 100), FakeDevice(1, 101), FakeDevice(1, 102)]
  # A process with fewer devices limits them all.
  uneven = devices(2, 4)[:5]
  assert mesh_devices(8, uneven) == [FakeDevice(0, 0), FakeDevice(1, 100)]


def test_seeds_the_processes_cannot_share_evenly_are_refused():
  with pytest.raises(ValueError, match="3 seeds cannot be shared evenly by 2 processes"):
    mesh_devices(3, devices(2, 2))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_processes(cmd_for, num_processes=2, timeout=300, env=None):
  """Start `cmd_for(process_id)` for every process at once, wait for all; [(returncode, stdout, stderr)].

  Output goes to files, not pipes: a process blocked on a full pipe would stall the others at their next collective.
  """
  with contextlib.ExitStack() as stack:
    files = [[stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2)] for _ in range(num_processes)]
    procs = [subprocess.Popen(cmd_for(i), cwd=REPO, env=env, stdout=out, stderr=err, text=True)
             for i, (out, err) in enumerate(files)]
    try:
      deadline = time.time() + timeout
      codes = [p.wait(timeout=max(1.0, deadline - time.time())) for p in procs]
    finally:
      for p in procs:
        p.kill()
    results = []
    for code, (out, err) in zip(codes, files):
      out.seek(0)
      err.seek(0)
      results.append((code, out.read(), err.read()))
    return results


TRAINER_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, {repo!r})
    address, process_id, workdir, num_steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    from common import distributed
    distributed.initialize(address, 2, process_id)
    import jax, numpy as np
    from tests.test_training import initial_state, small_config, per_seed_rewards
    from common import iql
    from common.training import Trainer
    assert jax.process_count() == 2 and jax.device_count() == 2
    data, per_field = per_seed_rewards(4)
    state, keys = initial_state(data, [0, 1, 2, 3])
    trainer = Trainer(iql.make_critic_step(small_config()), num_steps=num_steps, steps_per_call=5,
                      checkpoint_every=10, workdir=workdir, progress=False, data_per_seed=per_field)
    assert trainer.shard_seeds  # always across processes
    out = trainer.run(state, data, keys)
    leaf = out.q.params["params"]["VmapMLP_0"]["Dense_2"]["kernel"]
    assert leaf.is_fully_addressable and leaf.shape[0] == 4  # every process gets every seed back
    np.save(os.path.join(workdir, f"leaf_{{process_id}}.npy"), np.asarray(leaf))
""")


def test_two_processes_train_checkpoint_and_resume_like_one(tmp_path):
  """Seeds sharded over 2 processes (one CPU device each), stopped at a checkpoint and resumed in 2 new processes,
  end where one process running straight through does; metrics are written once, by process 0."""
  script = tmp_path / "trainer.py"
  script.write_text(TRAINER_SCRIPT.format(repo=REPO))
  workdir = tmp_path / "run"
  for num_steps in (10, 20):  # the second launch resumes from the checkpoint at step 10
    address = f"localhost:{free_port()}"
    results = run_processes(lambda i: [sys.executable, str(script), address, str(i), str(workdir), str(num_steps)])
    for code, _, err in results:
      assert code == 0, err[-3000:]
  assert "resuming from step 10" in results[0][2]

  data, per_field = per_seed_rewards(4)
  state, keys = initial_state(data, [0, 1, 2, 3])
  one = Trainer(iql.make_critic_step(small_config()), num_steps=20, steps_per_call=5, progress=False,
                shard_seeds=False, data_per_seed=per_field).run(state, data, keys)
  expected = np.asarray(one.q.params["params"]["VmapMLP_0"]["Dense_2"]["kernel"])
  for i in range(2):
    np.testing.assert_allclose(np.load(workdir / f"leaf_{i}.npy"), expected, atol=1e-6, rtol=1e-5)
  # The checkpoint written by 2 processes restores in one.
  restored = Trainer(iql.make_critic_step(small_config()), num_steps=20, steps_per_call=5, progress=False,
                     workdir=str(workdir), shard_seeds=False, data_per_seed=per_field).run(state, data, keys)
  np.testing.assert_allclose(restored.q.params["params"]["VmapMLP_0"]["Dense_2"]["kernel"],
                             np.load(workdir / "leaf_0.npy"))
  with open(workdir / "metrics_train.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [5, 10, 15, 20]
  assert all(len(r["metrics"]["q_loss"]) == 4 for r in records)  # all 4 seeds, gathered from both processes
