"""Fused multi-seed training: scan == one step per call == plain loop, vmapped seeds == separate runs,
resume == uninterrupted, one compile, sharded seeds == one device."""
import json
import os
import subprocess
import sys
import textwrap

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from common import iql, training
from common.data import OfflineData
from common.errors import RunError
from common.networks import GaussianFourierTime
from common.training import Trainer, init_seeds, seed_keys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config():
  return ml_collections.ConfigDict(dict(hidden=(32, 32), value_layer_norm=True, lr=1e-3, expectile=0.7,
                                        discount=0.99, polyak=0.005, batch_size=64))


def random_data(n=500, obs_dim=5, action_dim=2, seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return OfflineData(observations=f(n, obs_dim), actions=jnp.tanh(f(n, action_dim)), rewards=f(n),
                     next_observations=f(n, obs_dim), masks=jnp.asarray(rng.random(n) > 0.1, jnp.float32))


def initial_state(data, seeds):
  cfg = small_config()
  keys = seed_keys(seeds)
  return init_seeds(lambda k: iql.init_critic(k, data.obs_dim, data.action_dim, cfg), keys), keys


def assert_trees_close(a, b, atol=1e-6):
  chex.assert_trees_all_close(a, b, atol=atol, rtol=1e-5)


def test_fused_equals_one_step_per_call_and_plain_loop():
  data = random_data()
  step = iql.make_critic_step(small_config())
  state, keys = initial_state(data, [3])
  fused = Trainer(step, num_steps=12, steps_per_call=12, progress=False).run(state, data, keys)
  single = Trainer(step, num_steps=12, steps_per_call=1, progress=False).run(state, data, keys)
  # Reference: the bare step function in a Python loop, with the documented per-step key fold_in(seed_key, n).
  ref = jax.tree.map(lambda x: x[0], state)
  jitted = jax.jit(step)
  for n in range(12):
    ref, _ = jitted(ref, data, jax.random.fold_in(keys[0], n))
  assert_trees_close(fused.q.params, single.q.params)
  assert_trees_close(fused.v.params, single.v.params)
  assert_trees_close(jax.tree.map(lambda x: x[0], fused.q.params), ref.q.params)
  assert_trees_close(jax.tree.map(lambda x: x[0], fused.q_target_params), ref.q_target_params)
  assert int(fused.q.step[0]) == 12


def test_vmapped_seeds_equal_separate_runs():
  data = random_data()
  step = iql.make_critic_step(small_config())
  state, keys = initial_state(data, [0, 1, 2])
  together = Trainer(step, num_steps=10, steps_per_call=5, progress=False).run(state, data, keys)
  for i, seed in enumerate([0, 1, 2]):
    alone_state, alone_keys = initial_state(data, [seed])
    alone = Trainer(step, num_steps=10, steps_per_call=5, progress=False).run(alone_state, data, alone_keys)
    assert_trees_close(jax.tree.map(lambda x: x[i], together.q.params), jax.tree.map(lambda x: x[0], alone.q.params))
  # Different seeds really differ.
  assert not np.allclose(together.v.params["params"]["MLP_0"]["Dense_0"]["kernel"][0],
                         together.v.params["params"]["MLP_0"]["Dense_0"]["kernel"][1])


class Interrupted(Exception):
  pass


def interruptible_run():
  """A 40-step, 2-seed critic run in chunks of 5 with checkpoints every 10, and its uninterrupted result."""
  data = random_data()
  step = iql.make_critic_step(small_config())
  state, keys = initial_state(data, [0, 1])
  kwargs = dict(num_steps=40, steps_per_call=5, checkpoint_every=10, progress=False)
  uninterrupted = Trainer(step, **kwargs).run(state, data, keys)
  return data, step, state, keys, kwargs, uninterrupted


def test_killed_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
  data, step, state, keys, kwargs, uninterrupted = interruptible_run()

  # Kill the run inside the chunk after step 25: checkpoints exist for 10 and 20, metrics were written up to 25.
  workdir = str(tmp_path / "run")
  trainer = Trainer(step, workdir=workdir, **kwargs)
  real_chunk_fn = trainer._chunk_fn
  calls = []

  def dying_chunk_fn(k, mesh):
    fn = real_chunk_fn(k, mesh)

    def wrapped(*args):
      calls.append(k)
      if len(calls) == 6:
        raise Interrupted()
      return fn(*args)

    return wrapped

  monkeypatch.setattr(trainer, "_chunk_fn", dying_chunk_fn)
  with pytest.raises(Interrupted):
    trainer.run(state, data, keys)
  steps_logged = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics_train.jsonl"))]
  assert steps_logged == [5, 10, 15, 20, 25]

  resumed = Trainer(step, workdir=workdir, **kwargs).run(state, data, keys)
  assert_trees_close(resumed, uninterrupted)
  steps_logged = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics_train.jsonl"))]
  assert steps_logged == list(range(5, 45, 5))  # lines past the checkpoint (25) were dropped, none duplicated

  # A finished stage is not run again, and a checkpoint with other seeds is refused with a clear message.
  again = Trainer(step, workdir=workdir, **kwargs)
  monkeypatch.setattr(again, "_chunk_fn", lambda *a: pytest.fail("finished stage was re-run"))
  assert_trees_close(again.run(state, data, keys), uninterrupted)
  other_state, other_keys = initial_state(data, [0, 1, 2])
  closed, real_close = [], training.Checkpointer.close
  monkeypatch.setattr(training.Checkpointer, "close", lambda self: (closed.append(1), real_close(self)))
  # Refused from the stored shapes, before orbax reads: a failed read logs its tasks' errors at garbage collection.
  monkeypatch.setattr(ocp.CheckpointManager, "restore", lambda *a, **k: pytest.fail("orbax read mismatched shapes"))
  with pytest.raises(RunError, match="cannot resume stage 'train'.*seeds: 3.*other shapes"):
    Trainer(step, workdir=workdir, **kwargs).run(other_state, data, other_keys)
  assert closed == [1]  # the refused run closed its checkpoint manager


def test_ctrl_c_saves_the_chunk_in_flight(tmp_path, monkeypatch):
  """KeyboardInterrupt while waiting on chunk 3: that chunk is finished, logged and checkpointed (step 15, between
  the periodic checkpoints), then the interrupt propagates; the resumed run equals an uninterrupted one."""
  data, step, state, keys, kwargs, uninterrupted = interruptible_run()

  workdir = str(tmp_path / "run")
  real_device_get, waits = jax.device_get, []

  def ctrl_c_on_third_wait(x):
    waits.append(1)
    if len(waits) == 3:
      raise KeyboardInterrupt
    return real_device_get(x)

  monkeypatch.setattr(training.jax, "device_get", ctrl_c_on_third_wait)
  with pytest.raises(KeyboardInterrupt):
    Trainer(step, workdir=workdir, **kwargs).run(state, data, keys)
  monkeypatch.setattr(training.jax, "device_get", real_device_get)
  ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints", "train"))
  latest = ckpt.latest_step()
  ckpt.close()
  assert latest == 15
  resumed = Trainer(step, workdir=workdir, **kwargs).run(state, data, keys)
  assert_trees_close(resumed, uninterrupted)
  steps_logged = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics_train.jsonl"))]
  assert steps_logged == list(range(5, 45, 5))


def test_fused_step_compiles_once():
  data = random_data()
  step = chex.assert_max_traces(iql.make_critic_step(small_config()), n=1)
  state, keys = initial_state(data, [0, 1])
  trainer = Trainer(step, num_steps=30, steps_per_call=10, progress=False)
  trainer.run(state, data, keys)  # three chunks of 10 steps: one trace
  assert len(trainer.history) == 3
  assert set(trainer.history[0]["metrics"]) == {"value_loss", "q_loss", "v_mean", "q_mean"}
  assert len(trainer.history[0]["metrics"]["q_loss"]) == 2  # one value per seed


def test_optimizer_leaves_frozen_parameters_alone():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, t):
      return nn.Dense(1)(GaussianFourierTime(8)(t))

  net = Net()
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((4,)))
  tx = training.make_optimizer(1e-2, weight_decay=0.1)
  opt_state = tx.init(params)
  loss = lambda p: jnp.mean(jnp.square(net.apply(p, jnp.linspace(0, 1, 4)) - 1.0))
  new = params
  for _ in range(3):
    updates, opt_state = tx.update(jax.grad(loss)(new), opt_state, new)
    new = jax.tree.map(lambda p, u: p + u, new, updates)
  frozen = "frozen_W"
  np.testing.assert_array_equal(new["params"]["GaussianFourierTime_0"][frozen],
                                params["params"]["GaussianFourierTime_0"][frozen])
  assert not np.allclose(new["params"]["Dense_0"]["kernel"], params["params"]["Dense_0"]["kernel"])


SHARDED_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, {repo!r})
    import jax, numpy as np
    from tests.test_training import initial_state, small_config, per_seed_rewards
    from common import iql
    from common.training import Trainer
    assert jax.device_count() == 2
    data, per_field = per_seed_rewards(4)
    state, keys = initial_state(data, [0, 1, 2, 3])
    out = Trainer(iql.make_critic_step(small_config()), num_steps=20, steps_per_call=10, progress=False,
                  shard_seeds=True, data_per_seed=per_field).run(state, data, keys)
    leaf = out.q.params["params"]["VmapMLP_0"]["Dense_2"]["kernel"]
    assert len(leaf.sharding.device_set) == 2, leaf.sharding
    np.save(sys.argv[1], np.asarray(leaf))
""")


def per_seed_rewards(num_seeds):
  """Data whose rewards differ per seed (scaled copies) and the matching `data_per_seed` pytree prefix."""
  base = random_data(seed=12)
  data = base.replace(rewards=jnp.stack([base.rewards * (1.0 - i) for i in range(num_seeds)]))
  per_field = OfflineData(observations=False, actions=False, rewards=True, next_observations=False, masks=False)
  return data, per_field


def test_seed_axis_sharded_over_two_cpu_devices_matches_one_device(tmp_path):
  """Seeds sharded over 2 devices, shared data fields replicated and a per-seed field sharded == one device."""
  script = tmp_path / "sharded.py"
  script.write_text(SHARDED_SCRIPT.format(repo=REPO))
  out_file = tmp_path / "leaf.npy"
  subprocess.run([sys.executable, str(script), str(out_file)], check=True, timeout=300, cwd=REPO)
  data, per_field = per_seed_rewards(4)
  state, keys = initial_state(data, [0, 1, 2, 3])
  one_device = Trainer(iql.make_critic_step(small_config()), num_steps=20, steps_per_call=10,
                       progress=False, shard_seeds=False, data_per_seed=per_field).run(state, data, keys)
  np.testing.assert_allclose(np.load(out_file), one_device.q.params["params"]["VmapMLP_0"]["Dense_2"]["kernel"],
                             atol=1e-6, rtol=1e-5)


def test_learning_curve_plot_from_metrics(tmp_path):
  from common.run.plots import plot_learning_curves, read_metrics

  data = random_data()
  state, keys = initial_state(data, [0, 1])
  Trainer(iql.make_critic_step(small_config()), num_steps=20, steps_per_call=5, workdir=str(tmp_path),
          name="critic", progress=False).run(state, data, keys)
  steps, metrics = read_metrics(str(tmp_path / "metrics_critic.jsonl"))
  np.testing.assert_array_equal(steps, [5, 10, 15, 20])
  assert metrics["q_loss"].shape == (4, 2)
  png = plot_learning_curves(str(tmp_path / "metrics_critic.jsonl"))
  assert os.path.getsize(png) > 1000 and open(png, "rb").read(4) == b"\x89PNG"


def test_per_seed_data_equals_separate_runs():
  datasets = [random_data(seed=10), random_data(seed=11)]
  step = iql.make_critic_step(small_config())
  state, keys = initial_state(datasets[0], [0, 1])
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *datasets)
  together = Trainer(step, num_steps=6, steps_per_call=3, progress=False, data_per_seed=True).run(state, stacked, keys)
  for i in range(2):
    alone_state, alone_keys = initial_state(datasets[i], [i])
    alone = Trainer(step, num_steps=6, steps_per_call=3, progress=False).run(alone_state, datasets[i], alone_keys)
    assert_trees_close(jax.tree.map(lambda x: x[i], together.v.params), jax.tree.map(lambda x: x[0], alone.v.params))


def test_per_seed_data_fields_equal_separate_runs():
  """Only the rewards differ per seed (data_per_seed as a pytree prefix); the rest is shared, not copied."""
  mixed, per_field = per_seed_rewards(2)
  base = random_data(seed=12)
  rewards = list(mixed.rewards)
  step = iql.make_critic_step(small_config())
  state, keys = initial_state(base, [0, 1])
  together = Trainer(step, num_steps=6, steps_per_call=3, progress=False, data_per_seed=per_field).run(
      state, mixed, keys)
  for i in range(2):
    alone_state, alone_keys = initial_state(base, [i])
    alone = Trainer(step, num_steps=6, steps_per_call=3, progress=False).run(
        alone_state, base.replace(rewards=rewards[i]), alone_keys)
    assert_trees_close(jax.tree.map(lambda x: x[i], together.q.params), jax.tree.map(lambda x: x[0], alone.q.params))
