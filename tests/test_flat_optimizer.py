"""flat_optimizer: one flattened optimizer update per stage gives the same parameters as one update per array (the
same element-wise arithmetic), keeps frozen parameters fixed, and compiles to fewer kernels."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import srpo_jax
import swg_jax
from common import iql
from common.data import OfflineData
from common.networks import ConditionalEpsNet
from common.training import make_optimizer
from srpo_jax import behavior


def _data(n=512, s=3, a=2, seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return OfflineData(observations=f(n, s), actions=jnp.clip(f(n, a), -1, 1), rewards=f(n), masks=jnp.ones(n),
                     next_observations=f(n, s))


def _run(step, state, data, steps=5):
  for i in range(steps):
    state, _ = jax.jit(step)(state, data, jax.random.PRNGKey(i))
  return state


def _stage(stage, flat):
  """(initial state, step, the trained parameters of a state) of a stage with flat_optimizer = flat."""
  if stage == "critic":
    config = swg_jax.get_config("smoke").critic
    config.flat_optimizer = flat
    return (iql.init_critic(jax.random.PRNGKey(0), 3, 2, config), iql.make_critic_step(config),
            lambda st: (st.q.params, st.v.params))
  config = srpo_jax.get_config("smoke").behavior
  config.update(flat_optimizer=flat, dropout_rate=0.0)
  return (behavior.init_behavior(jax.random.PRNGKey(0), 3, 2, config), behavior.make_behavior_step(config),
          lambda st: st.params)


@pytest.mark.parametrize("stage", ["critic", "behavior"])
def test_flat_update_trains_the_same_parameters(stage):
  data = _data()
  trained = {}
  for flat in (False, True):
    state, step, params_of = _stage(stage, flat)
    trained[flat] = params_of(_run(step, state, data))
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), trained[False], params_of(state))
  assert max(jax.tree.leaves(moved)) > 1e-4, "training did not move the parameters: the comparison proves nothing"
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), trained[False], trained[True])


def test_flat_update_keeps_frozen_parameters_and_fuses_the_update():
  net = ConditionalEpsNet(out_dim=2, hidden=32, num_blocks=2, time_features=(16, 16), time_embed_dim=8,
                          dropout_rate=0.0)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)), jnp.zeros((1, 3)))
  grads = jax.tree.map(jnp.ones_like, params)
  results, ops = {}, {}
  for flat in (False, True):
    tx = make_optimizer(1e-2, weight_decay=0.01, flat=flat)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p))
    updates, _ = update(grads, tx.init(params), params)
    results[flat] = updates
    hlo = update.lower(grads, tx.init(params), params).compile().as_text()
    ops[flat] = hlo.count("fusion(") + hlo.count(" multiply(") + hlo.count(" add(")
  frozen = params["params"]["GaussianFourierTime_0"]["frozen_W"]
  assert frozen.size and not np.any(results[True]["params"]["GaussianFourierTime_0"]["frozen_W"])
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), results[False], results[True])
  print("compiled update ops (fusions + unfused multiply/add): per array", ops[False], "flat", ops[True])
  assert ops[True] < ops[False]
