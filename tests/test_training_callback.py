"""Trainer's callback (evaluation on the way): called at every multiple of callback_every and at the end with the
state of exactly that step, checkpointed first, and again after a resume for the step it resumes from."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.training import Trainer, seed_keys


def step_fn(state, data, key):
  """x <- 0.5 x + u(key) + data: each step's result depends on the step's key, so a wrong step count shows."""
  x = 0.5 * state["x"] + jax.random.uniform(key) + data
  return {"x": x}, {"x": x}


def reference_states(keys, num_steps):
  """The state after every step 1..num_steps, per seed, in a plain Python loop: {step: [N]}."""
  x, out = np.zeros(keys.shape[0], np.float64), {}
  for n in range(num_steps):
    x = 0.5 * x + np.array([float(jax.random.uniform(jax.random.fold_in(k, n))) for k in keys]) + 1.0
    out[n + 1] = x.copy()
  return out


def run(callback, workdir=None, num_steps=10, every=4, steps_per_call=7):
  keys = seed_keys([0, 1])
  state = {"x": jnp.zeros(2)}
  return Trainer(step_fn, num_steps=num_steps, steps_per_call=steps_per_call, name="t", workdir=workdir,
                 progress=False, callback=callback, callback_every=every).run(state, jnp.float32(1.0), keys)


def test_callback_sees_the_state_of_each_multiple_and_of_the_end():
  seen = []
  run(lambda step, state: seen.append((step, np.asarray(state["x"]))))
  ref = reference_states(seed_keys([0, 1]), 10)
  assert [s for s, _ in seen] == [4, 8, 10]  # chunks of 7 are cut at 4 and 8
  for step, x in seen:
    np.testing.assert_allclose(x, ref[step], rtol=1e-6)


def test_interrupted_callback_is_called_again_after_resume(tmp_path):
  workdir = str(tmp_path / "run")
  seen = []

  def interrupt_at_8(step, state):
    seen.append(step)
    if step == 8:
      raise KeyboardInterrupt  # e.g. Ctrl-C during an evaluation

  with pytest.raises(KeyboardInterrupt):
    run(interrupt_at_8, workdir)
  assert seen == [4, 8]
  resumed = []
  final = run(lambda step, state: resumed.append((step, np.asarray(state["x"]))), workdir)
  ref = reference_states(seed_keys([0, 1]), 10)
  assert [s for s, _ in resumed] == [8, 10]  # step 8 was checkpointed before its callback ran: redone, then 10
  for step, x in resumed:
    np.testing.assert_allclose(x, ref[step], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(final["x"]), ref[10], rtol=1e-6)
  # A finished stage calls it once more for its last step (the callback skips what it has).
  again = []
  run(lambda step, state: again.append(step), workdir)
  assert again == [10]


def test_bad_callback_every_is_refused():
  with pytest.raises(ValueError, match="callback_every"):
    Trainer(step_fn, num_steps=3, callback=lambda s, x: None, callback_every=-1)
