"""SRPO's diffusion behaviour model: eps(a_t, t, s) on the continuous VP-SDE, trained by eps matching.

Training (official SRPO_behavior): t ~ U(1e-3, 1), a_t = alpha_t a + sigma_t eps, loss = mean_B sum_A (eps_psi - eps)^2,
AdamW lr 3e-4 wd 0.01 (PyTorch default), batch 2048, dropout 0.1 on. The score of the noised behaviour is
grad log mu_t(a_t | s) = -eps_psi(a_t, t, s) / sigma_t; at use time the network runs without dropout.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from common.diffusion import VPContinuous, eps_matching_loss, noise
from common.networks import ConditionalEpsNet, compute_dtype
from common.offline_data import row_indices, rows_of
from common.solvers import dpm_solver_pp
from common.training import make_optimizer

# eps(a_t [B, A], t [B] or [], s [B, S]) -> [B, A]
EpsFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

SCHEDULE = VPContinuous()


def behavior_net(action_dim: int, config) -> ConditionalEpsNet:
  """config fields: hidden, num_blocks, dropout_rate, time_embed_dim, compute_dtype (optional, "float32")."""
  return ConditionalEpsNet(out_dim=action_dim, time_embed_dim=config.time_embed_dim, hidden=config.hidden,
                           num_blocks=config.num_blocks, dropout_rate=config.dropout_rate,
                           dtype=compute_dtype(config.get("compute_dtype", "float32")))


def init_behavior(key: jax.Array, obs_dim: int, action_dim: int, config) -> TrainState:
  """Behaviour TrainState. config fields: those of `behavior_net` plus lr, weight_decay."""
  net = behavior_net(action_dim, config)
  params = net.init(key, jnp.zeros((1, action_dim)), jnp.zeros((1,)), jnp.zeros((1, obs_dim)))
  return TrainState.create(apply_fn=net.apply, params=params,
                           tx=make_optimizer(config.lr, weight_decay=config.weight_decay))


def behavior_loss(params, apply_fn, observations, actions, key, *, train: bool = True, t_min: float = 1e-3):
  """Eps-matching loss on one batch: observations [B, S], actions [B, A] -> scalar."""
  t_key, eps_key, drop_key = jax.random.split(key, 3)
  b = actions.shape[0]
  t = jax.random.uniform(t_key, (b,), minval=t_min, maxval=1.0)
  eps = jax.random.normal(eps_key, actions.shape, actions.dtype)
  alpha, sigma = SCHEDULE.alpha_sigma(t)
  a_t = noise(actions, eps, alpha, sigma)
  pred = apply_fn(params, a_t, SCHEDULE.model_time(t), observations, train=train, rngs={"dropout": drop_key})
  return eps_matching_loss(pred, eps)


def make_behavior_step(config):
  """`step(state, data, key) -> (state, metrics)`; data has `.observations` [N, S] and `.actions` [N, A]
  (an `OfflineData`, or any pytree with those fields). config fields: batch_size."""

  def step(state: TrainState, data, key: jax.Array):
    idx_key, loss_key = jax.random.split(key)
    idx = row_indices(data, idx_key, config.batch_size)
    rows = rows_of(data)
    obs, act = jnp.take(rows.observations, idx, axis=0), jnp.take(rows.actions, idx, axis=0)
    loss, grads = jax.value_and_grad(behavior_loss)(state.params, state.apply_fn, obs, act, loss_key)
    return state.apply_gradients(grads=grads), {"behavior_loss": loss}

  return step


def behavior_eps_fn(params, net: ConditionalEpsNet | None = None, *, apply_fn=None) -> EpsFn:
  """eps(a_t, t, s) of a trained behaviour model, without dropout. Give the module (`net`) or its `apply_fn`."""
  apply = apply_fn if apply_fn is not None else net.apply

  def eps_fn(a_t, t, s):
    return apply(params, a_t, t, s, train=False)

  return eps_fn


def behavior_action_dim(params) -> int:
  """Output (action) dim of a ConditionalEpsNet's params: the kernel of its final Dense."""
  p = params["params"]
  last = max((k for k in p if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))
  return int(p[last]["kernel"].shape[-1])


def sample_behavior(eps_fn: EpsFn, observations: jax.Array, action_dim: int, key: jax.Array, *,
                    num_steps: int = 25, order: int = 2, clip: bool = True) -> jax.Array:
  """Actions a ~ mu(. | s) by DPM-Solver++ on the behaviour ODE: observations [B, S] -> [B, A].

  `clip` clips every data prediction to [-1, 1] (the action box), as SRPO's/IDQL's samplers do.
  """
  x_key, _ = jax.random.split(key)
  x_T = jax.random.normal(x_key, (observations.shape[0], action_dim), observations.dtype)
  clip_fn = (lambda x: jnp.clip(x, -1.0, 1.0)) if clip else None
  return dpm_solver_pp(lambda x, t: eps_fn(x, t, observations), SCHEDULE, x_T, num_steps=num_steps, order=order,
                       x0_clip_fn=clip_fn, denoise_to_zero=False)
