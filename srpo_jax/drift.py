"""How far SRPO's policy has drifted from the behaviour it regularises towards, on a batch of dataset states.

- `behaviour_distance`: distance from the policy's action to the nearest of K actions sampled from the behaviour
  model at the same state, in units of those samples' spread (their RMS distance to their own mean). About 1 or less:
  the action lies among what the data does there; many: it left the data, where the critic only extrapolates.
- `at_bounds`: the share of action coordinates at the action box's bounds (|a| > 0.99).
- `q_pull` and `reg_pull`: the two forces on an action in the policy's loss, as RMS over states and action dims:
  beta * grad_a Q(s, a), and the regulariser's w(t) (eps(a_t, t, s) - z) averaged over the noise levels t it samples.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

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
