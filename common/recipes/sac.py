"""Soft Actor-Critic (Haarnoja et al. 2018, with automatic entropy tuning) as pure JAX functions: the online agent
that D4RL's dataset recipes trained (`common.recipes.datasets`). Shapes: B batch, S state dim, A action dim, K fused updates.

Critic:  y = r + discount * mask * (min_i Q_target_i(s', a') - alpha * log pi(a'|s')),  a' ~ pi(.|s');
         L_Q = sum_i mean((Q_i(s, a) - y)^2).
Actor:   L_pi = mean(alpha * log pi(a~|s) - min_i Q_i(s, a~)),  a~ ~ pi(.|s) (reparameterised).
Alpha:   L_alpha = -mean(log_alpha * (log pi(a~|s) + target_entropy)),  target_entropy = -A by default.
All three losses are taken at the parameters before the step (rlkit's order), then the Q targets move by Polyak
averaging. The policy is a tanh-squashed Gaussian, so actions lie in (-1, 1) (the MuJoCo envs' box).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from common.networks import MLP, TwinQ

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit's clamp, as in the SAC that made D4RL's data


@dataclasses.dataclass(frozen=True)
class SACConfig:
  hidden: tuple[int, ...] = (256, 256)
  lr: float = 3e-4
  discount: float = 0.99
  tau: float = 0.005  # Polyak rate of the Q targets
  batch_size: int = 256
  init_alpha: float = 1.0
  target_entropy: float | None = None  # None: -action_dim


class TanhGaussianActor(nn.Module):
  """pi(a|s) = tanh(N(mean(s), std(s)^2)): MLP trunk, then mean and clamped log-std heads.  -> ([B, A], [B, A])"""

  action_dim: int
  hidden: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, s):
    h = MLP(tuple(self.hidden), nn.relu, activate_final=True)(s)
    mean = nn.Dense(self.action_dim)(h)
    log_std = jnp.clip(nn.Dense(self.action_dim)(h), LOG_STD_MIN, LOG_STD_MAX)
    return mean, log_std


def squash(mean: jax.Array, log_std: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
  """a = tanh(mean + std * noise) and log pi(a|s) with the tanh change of variables.  -> ([B, A], [B])

  log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2 u)), exact and stable for large |u|."""
  u = mean + jnp.exp(log_std) * noise
  gaussian = -0.5 * jnp.square(noise) - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
  log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
  return jnp.tanh(u), jnp.sum(gaussian - log_det, axis=-1)


class SACState(flax.struct.PyTreeNode):
  actor: TrainState
  critic: TrainState
  critic_target_params: Any
  log_alpha: TrainState  # params: {"log_alpha": scalar}
  target_entropy: jax.Array


class Batch(flax.struct.PyTreeNode):
  """observations [B, S], actions [B, A], rewards [B], next_observations [B, S], masks [B] (0 at a termination)."""

  observations: jax.Array
  actions: jax.Array
  rewards: jax.Array
  next_observations: jax.Array
  masks: jax.Array


def init_sac(key: jax.Array, obs_dim: int, action_dim: int, config: SACConfig) -> SACState:
  actor_key, critic_key = jax.random.split(key)
  actor = TanhGaussianActor(action_dim, tuple(config.hidden))
  critic = TwinQ(hidden=tuple(config.hidden))
  s, a = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
  critic_params = critic.init(critic_key, s, a)
  tx = lambda: optax.adam(config.lr)
  entropy = -float(action_dim) if config.target_entropy is None else float(config.target_entropy)
  return SACState(
      actor=TrainState.create(apply_fn=actor.apply, params=actor.init(actor_key, s), tx=tx()),
      critic=TrainState.create(apply_fn=critic.apply, params=critic_params, tx=tx()),
      critic_target_params=jax.tree.map(jnp.copy, critic_params),  # own buffers: the update donates the state
      log_alpha=TrainState.create(
          apply_fn=None, params={"log_alpha": jnp.asarray(np.log(config.init_alpha), jnp.float32)}, tx=tx()),
      target_entropy=jnp.asarray(entropy, jnp.float32))


def sac_losses(state: SACState, batch: Batch, next_noise: jax.Array, noise: jax.Array, config: SACConfig):
  """The three losses at the current parameters, with the Gaussian draws given ([B, A] each), as
  ((critic_loss_fn, actor_loss_fn, alpha_loss_fn), metrics): each loss function takes its own parameters."""
  alpha = alpha_of(state)
  next_mean, next_log_std = state.actor.apply_fn(state.actor.params, batch.next_observations)
  next_a, next_logp = squash(next_mean, next_log_std, next_noise)
  next_q = jnp.min(state.critic.apply_fn(state.critic_target_params, batch.next_observations, next_a), axis=0)
  y = jax.lax.stop_gradient(batch.rewards + config.discount * batch.masks * (next_q - alpha * next_logp))

  def critic_loss(params):
    qs = state.critic.apply_fn(params, batch.observations, batch.actions)
    return jnp.sum(jnp.mean(jnp.square(qs - y[None]), axis=-1)), qs

  def actor_loss(params):
    mean, log_std = state.actor.apply_fn(params, batch.observations)
    a, logp = squash(mean, log_std, noise)
    q = jnp.min(state.critic.apply_fn(state.critic.params, batch.observations, a), axis=0)
    return jnp.mean(jax.lax.stop_gradient(alpha) * logp - q), logp

  def alpha_loss(params, logp):
    return -jnp.mean(params["log_alpha"] * jax.lax.stop_gradient(logp + state.target_entropy))

  return critic_loss, actor_loss, alpha_loss


def alpha_of(state: SACState) -> jax.Array:
  """The entropy temperature alpha = exp(log_alpha).  -> []"""
  return jnp.exp(state.log_alpha.params["log_alpha"])


def sac_update(state: SACState, batch: Batch, key: jax.Array, config: SACConfig) -> tuple[SACState, dict]:
  """One SAC step on `batch` (all losses at the parameters before the step), then the Polyak target update."""
  next_noise, noise = jax.random.normal(key, (2, *batch.actions.shape))
  critic_loss, actor_loss, alpha_loss = sac_losses(state, batch, next_noise, noise, config)
  (q_loss, qs), q_grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic.params)
  (pi_loss, logp), pi_grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor.params)
  a_loss, a_grad = jax.value_and_grad(alpha_loss)(state.log_alpha.params, logp)
  critic = state.critic.apply_gradients(grads=q_grads)
  new = state.replace(
      critic=critic, actor=state.actor.apply_gradients(grads=pi_grads),
      log_alpha=state.log_alpha.apply_gradients(grads=a_grad),
      critic_target_params=optax.incremental_update(critic.params, state.critic_target_params, config.tau))
  metrics = {"critic_loss": q_loss, "actor_loss": pi_loss, "alpha_loss": a_loss, "alpha": alpha_of(state),
             "entropy": -jnp.mean(logp), "q_mean": jnp.mean(qs)}
  return new, metrics


@functools.lru_cache(maxsize=8)  # one compiled chunk per config, shared by every run in the process
def make_update_chunk(config: SACConfig):
  """Jitted `chunk(state, batches, key) -> (state, metrics)`: K SAC steps in one lax.scan over `batches`, a `Batch`
  whose leaves carry a leading [K] axis; metrics are the means over the K steps. The state's buffers are donated."""

  def chunk(state: SACState, batches: Batch, key: jax.Array):
    def body(state, xs):
      batch, n = xs
      return sac_update(state, batch, jax.random.fold_in(key, n), config)

    num = batches.rewards.shape[0]
    state, metrics = jax.lax.scan(body, state, (batches, jnp.arange(num)))
    return state, jax.tree.map(jnp.mean, metrics)

  return jax.jit(chunk, donate_argnums=0)


@jax.jit
def sample_actions(actor: TrainState, observations: jax.Array, key: jax.Array) -> jax.Array:
  """Actions drawn from pi(.|s) for a batch of observations [n, S].  -> [n, A]"""
  mean, log_std = actor.apply_fn(actor.params, observations)
  return squash(mean, log_std, jax.random.normal(key, mean.shape))[0]


@jax.jit
def mean_actions(actor: TrainState, observations: jax.Array) -> jax.Array:
  """tanh(mean(s)): the policy's deterministic action.  -> [n, A]"""
  return jnp.tanh(actor.apply_fn(actor.params, observations)[0])
