"""Messages printed while a progress bar is live start a line of their own (not `...v_mean=-40.17][critic]
interrupted`), and the SRPO toy shows a progress bar with its rate and ETA."""
import io
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import training
from common.training import Trainer


def counting_step(state, data, key):
  return state + data, {"value": state}


def test_ctrl_c_message_starts_its_own_line(tmp_path, monkeypatch, capsys):
  real_device_get, waits = jax.device_get, []

  def ctrl_c_on_second_wait(x):
    waits.append(1)
    if len(waits) == 2:
      raise KeyboardInterrupt
    return real_device_get(x)

  monkeypatch.setattr(training.jax, "device_get", ctrl_c_on_second_wait)
  trainer = Trainer(counting_step, num_steps=20, steps_per_call=5, name="critic", workdir=str(tmp_path),
                    progress=True, shard_seeds=False)
  with pytest.raises(KeyboardInterrupt):
    trainer.run(jnp.zeros((1, 3)), jnp.ones(3), jax.random.PRNGKey(0)[None])
  err = capsys.readouterr().err
  assert "critic:" in err  # the bar was shown
  at = err.index("[critic] interrupted: saved step 10 of 20")
  assert err[at - 1] == "\n", repr(err[max(0, at - 80):at + 20])


def test_srpo_toy_has_a_progress_bar_and_keeps_its_lines(tmp_path, monkeypatch):
  from experiments.toy import srpo as toy_srpo

  monkeypatch.setattr(toy_srpo, "INV_BETAS", (0.0, 1.0))  # each 1/beta compiles a policy: two are enough here
  terminal = io.StringIO()  # stdout and stderr interleaved, as on a terminal
  monkeypatch.setattr(sys, "stdout", terminal)
  monkeypatch.setattr(sys, "stderr", terminal)
  toy_srpo.main(["--size=smoke", f"--out={tmp_path}"])
  text = terminal.getvalue()
  total = toy_srpo.total_steps(toy_srpo.SIZES["smoke"])
  # The bar's last state: every step counted, the elapsed<remaining time and a rate.
  assert re.search(rf"toy_srpo: 100%\|.*\| {total}/{total} \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?(s/step|step/s)", text), \
      text[-300:]
  lines = text.replace("\r", "\n").splitlines()
  result_lines = [line for line in lines if "1/beta=" in line and "|a - target|" in line]
  assert len(result_lines) == 2
  assert all(line.startswith("  8gaussians 1/beta=") for line in result_lines), result_lines  # none on a bar
