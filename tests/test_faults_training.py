"""Faults inside a training stage, in one process: divergence, a damaged newest checkpoint, a flipped byte, a torn
metrics line and a full disk. Each ends in one clear message, loses nothing but the chunk in flight, and a resumed run
still equals an uninterrupted one."""
import errno
import glob
import json
import os
import tempfile
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from common import checkpoint, iql, metrics_file, training
from common.checkpoint import Checkpointer
from common.errors import DivergenceError, RunError
from common.training import Trainer
from tests.test_training import assert_trees_close, interruptible_run, small_config


@pytest.fixture(scope="module")
def critic_run():
  """interruptible_run() once per module: (data, step, state, keys, kwargs, uninterrupted). The Trainer copies the
  state it is given, so the arrays stay valid for every test; the one step function keeps its chunks compiled."""
  return interruptible_run()


def strict_json(line):
  """json.loads that refuses the bare NaN / Infinity tokens Python would otherwise accept."""
  return json.loads(line, parse_constant=lambda token: pytest.fail(f"bare {token} in a metrics line"))


def metric_steps(workdir, name="train"):
  with open(os.path.join(workdir, f"metrics_{name}.jsonl")) as f:
    return [strict_json(line)["step"] for line in f]


def latest_checkpoint(workdir, name="train"):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints", name))
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def poisoned_after(step_fn, last_clean_step):
  """step_fn whose value-net parameters turn NaN once the optimiser has taken `last_clean_step` steps, after the
  metrics of that step are computed: the chunk ending there has finite metrics and non-finite parameters."""

  def step(state, data, key):
    state, metrics = step_fn(state, data, key)
    poison = jnp.where(state.v.step > last_clean_step, jnp.nan, 0.0)
    v = state.v.replace(params=jax.tree.map(lambda p: p + poison, state.v.params))
    return state.replace(v=v), metrics

  return step


def test_divergence_stops_the_stage_before_anything_non_finite_is_saved(critic_run, tmp_path):
  """Parameters go NaN in the last step of the chunk ending at a checkpoint step (30): the metrics of that chunk are
  still finite, so only the on-device parameter check can see it. Checkpoint 30 must not be written."""
  data, step, state, keys, kwargs, _ = critic_run
  workdir = str(tmp_path / "run")
  trainer = Trainer(poisoned_after(step, 29), workdir=workdir, seed_ids=[7, 9], suspects={"critic.lr": 1e30},
                    **kwargs)
  with pytest.raises(DivergenceError) as caught:
    trainer.run(state, data, keys)
  message = str(caught.value)
  assert caught.value.stage == "train" and caught.value.step == 30
  assert "stage 'train' diverged in steps 26-30 of 40 (seeds 7, 9): its parameters went non-finite" in message
  assert "critic.lr = 1e+30" in message and "the last checkpoint, step 20" in message
  assert latest_checkpoint(workdir) == 20
  assert metric_steps(workdir) == [5, 10, 15, 20, 25, 30]  # every line valid JSON

  # The next chunk's metrics are NaN too: written as strings, and named in the message.
  with pytest.raises(DivergenceError, match=r"steps 21-25 of 40 \(seeds 7, 9\): q_loss = nan, .*value_loss = nan; "
                                            r"its parameters are non-finite too"):
    Trainer(poisoned_after(step, 20), workdir=workdir, seed_ids=[7, 9], **kwargs).run(state, data, keys)
  with open(os.path.join(workdir, "metrics_train.jsonl")) as f:
    last = strict_json(f.readlines()[-1])
  assert last["step"] == 25 and last["metrics"]["value_loss"] == ["nan", "nan"]
  assert latest_checkpoint(workdir) == 20


def test_a_checkpoint_holding_nan_is_refused_not_resumed(critic_run, tmp_path):
  """A NaN checkpoint (left by a version without the guard) is not trained on as if it were fine."""
  data, step, state, keys, kwargs, _ = critic_run
  directory = tmp_path / "run" / "checkpoints" / "train"
  nan_state = state.replace(v=state.v.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.v.params)))
  ckpt = Checkpointer(str(directory))
  ckpt.save(10, {"state": nan_state, "keys": keys})
  ckpt.close()
  with pytest.raises(DivergenceError, match="checkpoint step 10 .* holds non-finite parameters"):
    Trainer(step, workdir=str(tmp_path / "run"), **kwargs).run(state, data, keys)


def damage(step_dir, kind):
  metadata = os.path.join(step_dir, "default", "_METADATA")
  if kind == "truncated metadata":
    with open(metadata, "r+b") as f:
      f.truncate(os.path.getsize(metadata) // 2)
  elif kind == "garbage metadata":
    with open(metadata, "wb") as f:
      f.write(b"\x9d\x00garbage" * 40)
  elif kind == "missing metadata":
    os.remove(metadata)
  elif kind in ("flipped byte", "flipped byte, no checksums"):
    data_files = glob.glob(os.path.join(step_dir, "default", "ocdbt.process_0", "d", "*"))
    biggest = max(data_files, key=os.path.getsize)
    with open(biggest, "r+b") as f:
      f.seek(os.path.getsize(biggest) // 2)
      byte = f.read(1)
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte[0] ^ 0x10]))
  if kind.endswith("no checksums"):
    os.remove(os.path.join(step_dir, "checksums.json"))


@pytest.mark.parametrize("kind", ["truncated metadata", "garbage metadata", "missing metadata", "flipped byte"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(critic_run, tmp_path, kind, capsys):
  data, step, state, keys, kwargs, uninterrupted = critic_run
  workdir = str(tmp_path / "run")
  Trainer(step, workdir=workdir, **dict(kwargs, num_steps=20)).run(state, data, keys)  # checkpoints 10 and 20
  directory = os.path.join(workdir, "checkpoints", "train")
  damage(os.path.join(directory, "20"), kind)
  capsys.readouterr()

  resumed = Trainer(step, workdir=workdir, **kwargs).run(state, data, keys)
  err = capsys.readouterr().err
  assert_trees_close(resumed, uninterrupted)
  skipped = [line for line in err.splitlines() if " is damaged " in line]
  assert len(skipped) == 1 and skipped[0].startswith(f"[train] checkpoint step 20 in {directory} is damaged (")
  assert "skipped, moved to" in skipped[0] and "new workdir" not in err
  assert "[train] resuming from step 10 of 40" in err
  assert os.path.isdir(os.path.join(directory + ".damaged", "20"))  # kept aside, not deleted
  assert metric_steps(workdir) == list(range(5, 45, 5))


def test_a_flipped_byte_is_caught_by_the_checksums(critic_run, tmp_path):
  """Without its checksums the same flipped byte restores silently to other numbers: the checksums catch it."""
  data, step, state, keys, kwargs, _ = critic_run
  like = {"state": state, "keys": keys}
  for kind, caught in (("flipped byte, no checksums", False), ("flipped byte", True)):
    directory = str(tmp_path / kind.replace(" ", "_").replace(",", ""))
    ckpt = Checkpointer(directory)
    ckpt.save(10, like)
    damage(os.path.join(directory, "10"), kind)
    found = ckpt.restore_newest_intact(like, note=lambda line: None)
    ckpt.close()
    if caught:
      assert found is None
    else:
      leaves_equal = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), found[1], like))
      assert not all(leaves_equal)  # restored, silently wrong: what the checksums are for


def test_a_torn_last_metrics_line_is_dropped_with_a_note(critic_run, tmp_path, capsys):
  data, step, state, keys, kwargs, uninterrupted = critic_run
  workdir = str(tmp_path / "run")
  Trainer(step, workdir=workdir, **dict(kwargs, num_steps=20)).run(state, data, keys)
  path = os.path.join(workdir, "metrics_train.jsonl")
  with open(path, "a") as f:
    f.write('{"step": 25, "steps_per_sec": 1.0, "metr')  # the disk filled up mid-line
  capsys.readouterr()
  resumed = Trainer(step, workdir=workdir, **kwargs).run(state, data, keys)
  assert_trees_close(resumed, uninterrupted)
  assert f"note: dropped line 5 of {path}" in capsys.readouterr().err
  assert metric_steps(workdir) == list(range(5, 45, 5))


def test_a_full_disk_ends_in_one_error_naming_the_file_and_loses_nothing(critic_run, tmp_path, monkeypatch):
  data, step, state, keys, kwargs, uninterrupted = critic_run
  workdir = str(tmp_path / "run")
  path = os.path.join(workdir, "metrics_train.jsonl")
  real_write, writes = os.write, []

  def disk_full_on_the_fourth_record(fd, data):
    writes.append(1)
    if len(writes) == 4:
      real_write(fd, data[: len(data) // 2])  # half a line reaches the disk, then no more space
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_write(fd, data)

  monkeypatch.setattr(metrics_file.os, "write", disk_full_on_the_fourth_record)
  with pytest.raises(RunError, match=rf"cannot write the metrics of stage 'train' \({path}\): No space left on "
                                     r"device\. Nothing already saved was lost: free some space"):
    Trainer(step, workdir=workdir, **kwargs).run(state, data, keys)
  monkeypatch.setattr(metrics_file.os, "write", real_write)
  assert metric_steps(workdir) == [5, 10, 15]  # the half line was taken back

  # Half a megabyte left: found before orbax starts writing (its own failures come from several threads at once).
  monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: SimpleNamespace(total=1 << 30, free=500_000))
  monkeypatch.setattr(ocp.CheckpointManager, "save", lambda *a, **k: pytest.fail("orbax began a doomed write"))
  with pytest.raises(RunError, match=r"cannot write the checkpoint of stage 'train' at step 20 \(.*checkpoints/train"
                                     r"\): No space left on device \(a checkpoint needs about 1\.\d MB, 0\.5 MB are "
                                     r"free\)\. Nothing already saved was lost"):
    Trainer(step, workdir=workdir, **kwargs).run(state, data, keys)
  monkeypatch.undo()
  assert latest_checkpoint(workdir) == 10
  resumed = Trainer(step, workdir=workdir, **kwargs).run(state, data, keys)
  assert_trees_close(resumed, uninterrupted)
  assert metric_steps(workdir) == list(range(5, 45, 5))


def test_training_chunks_report_parameter_finiteness_per_seed(critic_run):
  data, step, state, keys, _, _ = critic_run
  chunk = jax.jit(training.make_chunk_fn(poisoned_after(iql.make_critic_step(small_config()), 3), 2))
  state, metrics, finite = chunk(state, data, keys, jnp.uint32(0))
  assert finite.shape == (2,) and finite.all()
  _, _, finite = chunk(state, data, keys, jnp.uint32(2))
  assert not finite.any() and np.isfinite(metrics["q_loss"]).all()


def test_a_folder_made_read_only_mid_run_ends_in_one_error_and_loses_nothing(critic_run, tmp_path, monkeypatch):
  """As a user without root sees it (root writes anyway): the checkpoint folder refuses new files from step 20 on;
  then orbax fails mid-write as it reports that itself (a ValueError carrying the OS error)."""
  data, step, state, keys, kwargs, uninterrupted = critic_run
  workdir = str(tmp_path / "run")
  real_temporary_file, probes = tempfile.NamedTemporaryFile, []

  def read_only_from_the_second_checkpoint(*args, **kw):
    probes.append(1)
    if len(probes) >= 2:
      raise PermissionError(errno.EACCES, "Permission denied", kw.get("dir"))
    return real_temporary_file(*args, **kw)

  monkeypatch.setattr(checkpoint.tempfile, "NamedTemporaryFile", read_only_from_the_second_checkpoint)
  with pytest.raises(RunError, match=r"cannot write the checkpoint of stage 'train' at step 20 \(.*\): Permission "
                                     r"denied\. Nothing already saved was lost: make the folder writable again"):
    Trainer(step, workdir=workdir, **kwargs).run(state, data, keys)
  monkeypatch.undo()

  def failing_mid_write(*args, **kw):
    raise ValueError("RESOURCE_EXHAUSTED: Error writing local file \"_sharding\": No space left on device "
                     "[os_error_code='28']")

  monkeypatch.setattr(ocp.CheckpointManager, "save", failing_mid_write)
  with pytest.raises(RunError, match=r"cannot write the checkpoint of stage 'train' at step 20 .*RESOURCE_EXHAUSTED"):
    Trainer(step, workdir=workdir, **kwargs).run(state, data, keys)
  monkeypatch.undo()
  assert latest_checkpoint(workdir) == 10
  assert_trees_close(Trainer(step, workdir=workdir, **kwargs).run(state, data, keys), uninterrupted)
