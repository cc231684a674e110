"""IQL critic (expectile value + twin Q with Polyak targets) as pure functions on a `CriticState` pytree.

Value step:  u = min_i Q_target_i(s, a) - V(s);  L_V = mean(|tau - 1[u < 0]| u^2).
Q step:      y = r + discount * mask * V(s');    L_Q = mean over both nets of (Q_i(s, a) - y)^2.
The Q step's target V(s') uses the value net after this step's value update (as IQL's JAX code does; SRPO's
PyTorch code takes V(s') before the value update, one value step older), then the targets move by Polyak averaging.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from common.offline_data import OfflineData, sample_batch
from common.networks import TwinQ, ValueNet, compute_dtype


class CriticState(flax.struct.PyTreeNode):
  q: TrainState
  q_target_params: Any
  v: TrainState


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
  """mean(|tau - 1[diff < 0]| diff^2)."""
  weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
  return jnp.mean(weight * jnp.square(diff))


def init_critic(key: jax.Array, obs_dim: int, action_dim: int, config) -> CriticState:
  """config fields: hidden (tuple), value_layer_norm (bool), lr (float), compute_dtype (optional, "float32")."""
  q_key, v_key = jax.random.split(key)
  dtype = compute_dtype(config.get("compute_dtype", "float32"))
  q_net = TwinQ(hidden=tuple(config.hidden), dtype=dtype)
  v_net = ValueNet(hidden=tuple(config.hidden), layer_norm_input=config.value_layer_norm, dtype=dtype)
  q_params = q_net.init(q_key, jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim)))
  v_params = v_net.init(v_key, jnp.zeros((1, obs_dim)))
  q = TrainState.create(apply_fn=q_net.apply, params=q_params, tx=optax.adam(config.lr))
  v = TrainState.create(apply_fn=v_net.apply, params=v_params, tx=optax.adam(config.lr))
  return CriticState(q=q, q_target_params=q_params, v=v)


def target_q(state: CriticState, observations: jax.Array, actions: jax.Array) -> jax.Array:
  """min over the twin target Qs.  [B]"""
  return jnp.min(state.q.apply_fn(state.q_target_params, observations, actions), axis=0)


def advantage(state: CriticState, observations: jax.Array, actions: jax.Array) -> jax.Array:
  """A(s, a) = min_i Q_target_i(s, a) - V(s).  [B]"""
  return target_q(state, observations, actions) - state.v.apply_fn(state.v.params, observations)


def critic_update(state: CriticState, batch: OfflineData, config) -> tuple[CriticState, dict]:
  """One value step then one Q step on `batch`. config fields: expectile, discount, polyak."""
  q_min = target_q(state, batch.observations, batch.actions)

  def value_loss(v_params):
    v = state.v.apply_fn(v_params, batch.observations)
    return expectile_loss(q_min - v, config.expectile), v

  (v_loss, v_pred), v_grads = jax.value_and_grad(value_loss, has_aux=True)(state.v.params)
  v_state = state.v.apply_gradients(grads=v_grads)

  next_v = v_state.apply_fn(v_state.params, batch.next_observations)
  y = batch.rewards + config.discount * batch.masks * next_v

  def q_loss(q_params):
    qs = state.q.apply_fn(q_params, batch.observations, batch.actions)
    return jnp.mean(jnp.square(qs - y[None])), qs

  (q_loss_value, qs), q_grads = jax.value_and_grad(q_loss, has_aux=True)(state.q.params)
  q_state = state.q.apply_gradients(grads=q_grads)
  q_target_params = optax.incremental_update(q_state.params, state.q_target_params, config.polyak)

  metrics = {"value_loss": v_loss, "q_loss": q_loss_value, "v_mean": jnp.mean(v_pred), "q_mean": jnp.mean(qs)}
  return CriticState(q=q_state, q_target_params=q_target_params, v=v_state), metrics


def make_critic_step(config):
  """`step(state, data, key) -> (state, metrics)` sampling a batch of `config.batch_size` on device."""

  def step(state: CriticState, data: OfflineData, key: jax.Array):
    return critic_update(state, sample_batch(data, key, config.batch_size), config)

  return step
