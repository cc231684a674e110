"""Faults of a whole run, as a user meets them: a diverged SWG or SRPO stage, stopped where it diverged and blamed on
the right model."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import srpo_jax
import swg_jax
from common import iql
from common.errors import DivergenceError
from swg_jax import weights as weights_lib
from tests.test_training import random_data, small_config


# ---------------------------------------------------------------------------------------------------------------
# Divergence: caught at the stage that diverged, blamed on the right model, recorded beside the run.


@pytest.mark.parametrize("kind", weights_lib.WEIGHT_KINDS)
def test_a_nan_advantage_never_becomes_a_valid_looking_weight(kind):
  w = np.asarray(weights_lib.weights_from_advantage(jnp.asarray([0.5, jnp.nan, -0.5]), kind))
  assert np.isnan(w[1]) and np.isfinite(w[[0, 2]]).all()


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
