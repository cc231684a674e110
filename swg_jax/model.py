"""SWG's joint (a, w) diffusion model and its training step (Algorithm 1).

z_0 = concat(a, w) [B, A + 1]; i ~ U{0..T-1}; z_i = sqrt(abar_i) z_0 + sqrt(1 - abar_i) eps; the network predicts
eps for all A + 1 dims (the last from the weight head on residual block 2); loss = mean_B sum_d (eps_hat - eps)^2.
AdamW with cosine-decayed lr, EMA of the parameters every step (sampling uses the EMA), dropout on in training.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from common.diffusion import VPDiscrete, eps_matching_loss, noise
from common.networks import ConditionalEpsNet, compute_dtype
from common.offline_data import sample_batch
from common.training import make_optimizer


class WeightedData(flax.struct.PyTreeNode):
  """The diffusion stage's data: observations [N, S] (S may be 0), actions [N, A], weights [N]."""

  observations: jax.Array
  actions: jax.Array
  weights: jax.Array

  @property
  def size(self) -> int:
    return self.actions.shape[0]


class DiffusionState(flax.struct.PyTreeNode):
  params: Any
  ema_params: Any
  opt_state: Any
  step: jax.Array


def make_network(action_dim: int, config) -> ConditionalEpsNet:
  """The joint network: eps for the A action dims from the trunk, eps for w from the head on block `weight_head_block`.
  config fields: hidden, num_blocks, dropout_rate, time_embed_dim, time_features, weight_head_block, compute_dtype
  (optional, "float32")."""
  return ConditionalEpsNet(out_dim=action_dim, time_embedding="learnable", time_embed_dim=config.time_embed_dim,
                           time_features=tuple(config.time_features), hidden=config.hidden,
                           num_blocks=config.num_blocks, dropout_rate=config.dropout_rate, activation="swish",
                           aux_head_after_block=config.weight_head_block, aux_out_dim=1,
                           dtype=compute_dtype(config.get("compute_dtype", "float32")))


def make_schedule(config) -> VPDiscrete:
  return VPDiscrete(num_steps=config.num_timesteps, b_min=config.b_min, b_max=config.b_max)


def make_diffusion_optimizer(config) -> optax.GradientTransformation:
  """AdamW, lr cosine-decayed from config.lr over config.decay_steps (the paper's 3M even when training 1M)."""
  schedule = optax.cosine_decay_schedule(config.lr, config.decay_steps)
  return make_optimizer(schedule, weight_decay=config.weight_decay)


def init_diffusion(key: jax.Array, obs_dim: int, action_dim: int, config) -> DiffusionState:
  net = make_network(action_dim, config)
  params = net.init(key, jnp.zeros((1, action_dim + 1)), jnp.zeros((1,)), jnp.zeros((1, obs_dim)))
  opt_state = make_diffusion_optimizer(config).init(params)
  return DiffusionState(params=params, ema_params=params, opt_state=opt_state, step=jnp.zeros((), jnp.int32))


def make_diffusion_step(action_dim: int, config):
  """`step(state, data: WeightedData, key) -> (state, metrics)` for one seed (Algorithm 1)."""
  net = make_network(action_dim, config)
  schedule = make_schedule(config)
  tx = make_diffusion_optimizer(config)
  T = schedule.num_steps

  def step(state: DiffusionState, data: WeightedData, key: jax.Array):
    batch_key, t_key, eps_key, drop_key = jax.random.split(key, 4)
    batch = sample_batch(data, batch_key, config.batch_size)  # any pytree with .size
    z0 = jnp.concatenate([batch.actions, batch.weights[:, None]], axis=-1)
    i = jax.random.randint(t_key, (config.batch_size,), 0, T)
    alpha, sigma = schedule.index_alpha_sigma(i)
    eps = jax.random.normal(eps_key, z0.shape, z0.dtype)
    z_t = noise(z0, eps, alpha, sigma)

    def loss_fn(params):
      pred = net.apply(params, z_t, i.astype(jnp.float32), batch.observations, train=True,
                       rngs={"dropout": drop_key})
      return eps_matching_loss(pred, eps), pred

    (loss, pred), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = optax.incremental_update(params, state.ema_params, config.ema)
    metrics = {"loss": loss, "loss_w": jnp.mean(jnp.square(pred[:, -1] - eps[:, -1])),
               "grad_norm": optax.tree.norm(grads)}
    return DiffusionState(params=params, ema_params=ema_params, opt_state=opt_state, step=state.step + 1), metrics

  return step
