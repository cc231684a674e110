"""How far SRPO's policy has drifted from the behaviour it regularises towards, on a batch of dataset states.

- `behaviour_distance`: distance from the policy's action to the nearest of K actions sampled from the behaviour
  model at the same state, in units of those samples' spread (their RMS distance to their own mean). About 1 or less:
  the action lies among what the data does there; many: it left the data, where the critic only extrapolates.
- `at_bounds`: the share of action coordinates at the action box's bounds (|a| > 0.99).
- `q_pull` and `reg_pull`: the two forces on an action in the policy's loss, as RMS over states and action dims:
  beta * grad_a Q(s, a), and the regulariser's w(t) (eps(a_t, t, s) - z) averaged over the noise levels t it samples.

Before the policy trains, the same forces give a rule for beta (`behaviour_scale`, `beta_for_distance`): under a
Gaussian behaviour policy of per-coordinate spread sigma the regulariser pulls an action offset by d from the mean
back with c(sigma) d (`pull_per_offset`; about 0.23 d for narrow data), so beta * |grad_a Q| = c d puts the policy
d = beta |grad_a Q| / c from the data's mean: beta = k c sigma / |grad_a Q| keeps it about k spreads away.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from common.diffusion import noise
from srpo_jax.behavior import SCHEDULE, sample_behavior
from srpo_jax.policy import weight

DRIFT_METRICS = ("behaviour_distance", "at_bounds", "q_pull", "reg_pull")


def drift_metrics(act_fn: Callable, eps_fn: Callable, q_fn: Callable, observations: jax.Array, key: jax.Array,
                  config, *, num_behaviour_samples: int = 16, num_levels: int = 16) -> dict[str, jax.Array]:
  """One member's drift on states [B, S]. act_fn(s) -> [B, A]; eps_fn(a_t, t, s) -> [B, A] (the behaviour model
  without dropout); q_fn(s, a) -> [B]; config: the policy config (beta, weighting, t_min, t_max)."""
  sample_key, t_key, z_key = jax.random.split(key, 3)
  a = act_fn(observations)
  b, action_dim = a.shape
  k = num_behaviour_samples
  obs_k = jnp.repeat(observations, k, axis=0)  # [B * K, S], the samples of one state adjacent
  samples = sample_behavior(eps_fn, obs_k, action_dim, sample_key).reshape(b, k, action_dim)
  spread = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(samples - samples.mean(axis=1, keepdims=True)), axis=-1), axis=1))
  nearest = jnp.min(jnp.linalg.norm(samples - a[:, None, :], axis=-1), axis=1)
  grad_q = jax.grad(lambda x: jnp.sum(q_fn(observations, x)))(a)

  def pull(t, z):  # the regulariser's gradient on a at one noise level
    t = jnp.full((b,), t, a.dtype)
    alpha, sigma = SCHEDULE.alpha_sigma(t)
    eps = eps_fn(noise(a, z, alpha, sigma), SCHEDULE.model_time(t), observations)
    return weight(t, config.weighting)[:, None] * (eps - z)

  ts = jax.random.uniform(t_key, (num_levels,), a.dtype, minval=config.t_min, maxval=config.t_max)
  zs = jax.random.normal(z_key, (num_levels, b, action_dim), a.dtype)
  reg = jnp.mean(jax.vmap(pull)(ts, zs), axis=0)
  return {"behaviour_distance": jnp.mean(nearest / jnp.maximum(spread, 1e-6)),
          "at_bounds": jnp.mean((jnp.abs(a) > 0.99).astype(jnp.float32)),
          "q_pull": config.beta * jnp.sqrt(jnp.mean(jnp.square(grad_q))),
          "reg_pull": jnp.sqrt(jnp.mean(jnp.square(reg)))}


def pull_per_offset(sigma: float, config, num_levels: int = 512) -> float:
  """c(sigma): the regulariser's mean pull on an action offset by d from the mean of a Gaussian behaviour policy of
  per-coordinate std sigma is c d (exact eps, averaged over the noise levels the policy loss samples: uniform in
  [t_min, t_max], or fixed_t). The exact eps at a_t = alpha a + s z is s (a_t - alpha mean) / (alpha^2 sigma^2 + s^2),
  whose mean over z is s alpha d / (alpha^2 sigma^2 + s^2)."""
  from srpo_jax.behavior import SCHEDULE
  from srpo_jax.policy import weight

  if config.t_sampling == "fixed":
    ts = np.asarray([config.fixed_t])
  else:  # midpoints of num_levels equal parts of [t_min, t_max]
    ts = config.t_min + (np.arange(num_levels) + 0.5) * (config.t_max - config.t_min) / num_levels
  ts = jnp.asarray(ts, jnp.float32)
  alpha, s = SCHEDULE.alpha_sigma(ts)
  return float(jnp.mean(weight(ts, config.weighting) * s * alpha / (alpha**2 * sigma**2 + s**2)))


def behaviour_scale(eps_fn: Callable, q_fn: Callable, observations: jax.Array, action_dim: int, key: jax.Array, *,
                    num_behaviour_samples: int = 16) -> dict[str, jax.Array]:
  """What sets beta's effect, known before the policy trains: `sigma`, the behaviour model's per-coordinate spread
  (RMS distance of K samples at a state to their mean, over sqrt(A), averaged over states), and `grad_q`, the RMS of
  grad_a Q at those samples."""
  b, k = observations.shape[0], num_behaviour_samples
  obs_k = jnp.repeat(observations, k, axis=0)
  samples = sample_behavior(eps_fn, obs_k, action_dim, key)
  grouped = samples.reshape(b, k, action_dim)
  spread = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grouped - grouped.mean(axis=1, keepdims=True)), axis=-1), axis=1))
  grad_q = jax.grad(lambda x: jnp.sum(q_fn(obs_k, x)))(samples)
  return {"sigma": jnp.mean(spread) / np.sqrt(action_dim), "grad_q": jnp.sqrt(jnp.mean(jnp.square(grad_q)))}


def beta_for_distance(sigma: float, grad_q: float, config, distance: float = 1.0) -> float:
  """The beta at which beta * grad_q balances the regulariser's pull `distance` spreads (sigma per coordinate) from
  the behaviour's mean: distance * c(sigma) * sigma / grad_q."""
  return distance * pull_per_offset(sigma, config) * sigma / grad_q


def predicted_distance(beta: float, sigma: float, grad_q: float, config) -> float:
  """The inverse: how many spreads from the behaviour's mean beta * grad_q holds the policy."""
  return beta * grad_q / (pull_per_offset(sigma, config) * sigma)
