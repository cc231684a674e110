"""SWG sampling (Algorithm 2): the self-weighted guided eps, DDPM / DPM-Solver++ over z = (a, w), and SWG-R.

Guided noise prediction (guidance scale rho; rho = 1 exact, rho = 0 the behaviour policy):
  eps~ = eps - rho sigma_t grad_{z_t} log w0hat(z_t),   w0hat = (w_t - sigma_t eps_w(z_t)) / alpha_t,
with w0hat clipped to [w_min, w_max] before the log and NaN gradients replaced by 0.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Callable

import jax
import jax.numpy as jnp

from common.diffusion import VPDiscrete
from common.solvers import NoiseLevel, ddpm_sample, dpm_solver_pp, traced_noise_level

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]
HeadsFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
W_MIN, W_MAX = 1e-4, 1.0
SAMPLERS = ("ddpm", "dpm")
W_PREDICTIONS = ("tweedie", "official")


def is_static_zero(x) -> bool:
  return isinstance(x, numbers.Real) and x == 0


def w0_prediction(x: jax.Array, eps_w: jax.Array, level: NoiseLevel,
                  w_prediction: str = "tweedie") -> jax.Array:
  """Data prediction of the weight coordinate from its eps.  x [B, A + 1], eps_w [B] -> [B]

  "tweedie": (w_t - sigma_t eps_w) / alpha_t with alpha_t = sqrt(abar) (the correct one, default);
  "official": the official JAX code's division by sqrt of the single-step alpha (parity option).
  """
  if w_prediction == "official":
    alpha = level.step_alpha
  elif w_prediction == "tweedie":
    alpha = level.alpha
  else:
    raise ValueError(f"w_prediction must be one of {W_PREDICTIONS}, got {w_prediction!r}")
  return (x[:, -1] - level.sigma * eps_w) / alpha


def split_heads(eps_fn: EpsFn) -> HeadsFn:
  """heads_fn from a joint eps_fn: (eps of the action dims [B, A], eps of w [B, 1])."""
  def heads(x, t_model):
    eps = eps_fn(x, t_model)
    return eps[:, :-1], eps[:, -1:]
  return heads


@dataclasses.dataclass(frozen=True)
class GuidedEps:
  """SWG's guided eps. Samplers call `at_level(z, level)` with the step's noise level from their scan's xs; calling
  it as eps(z, t_model) looks the level up from the schedule (fine outside a loop, see `traced_noise_level`)."""

  heads_fn: HeadsFn
  schedule: VPDiscrete
  guidance_scale: float | jax.Array
  w_min: float = W_MIN
  w_max: float = W_MAX
  w_prediction: str = "tweedie"

  def at_level(self, x: jax.Array, level: NoiseLevel) -> jax.Array:
    def log_w0(x):
      eps_a, eps_w = self.heads_fn(x, level.t_model)
      w0 = jnp.clip(w0_prediction(x, eps_w[:, 0], level, self.w_prediction), self.w_min, self.w_max)
      # Each sample's w0 depends only on its own z (no cross-batch layers), so the gradient of the sum is per-sample.
      return jnp.sum(jnp.log(w0)), jnp.concatenate([eps_a, eps_w], axis=-1)

    grad, eps = jax.grad(log_w0, has_aux=True)(x)
    grad = jnp.where(jnp.isnan(grad), 0.0, grad)
    return eps - self.guidance_scale * level.sigma * grad

  def __call__(self, x: jax.Array, t_model) -> jax.Array:
    return self.at_level(x, traced_noise_level(self.schedule, t_model))


def guided_eps_fn(eps_fn: EpsFn, schedule: VPDiscrete, guidance_scale, *, heads_fn: HeadsFn | None = None,
                  w_min: float = W_MIN, w_max: float = W_MAX, w_prediction: str = "tweedie") -> EpsFn:
  """Wrap eps_fn(z [B, A + 1], t_model) into SWG's guided one (a `GuidedEps`). A Python 0 scale returns eps_fn.

  heads_fn(z, t_model) -> (eps_a [B, A], eps_w [B, 1]): the same eps with its two heads apart (the network's
  `split_heads=True`). The guidance gradient then runs backward only through the layers eps_w reads; from the joint
  eps_fn alone it also runs back, with a zero cotangent, through the layers only eps_a reads (SWG's block 3 and
  action head: about 15 % of a guided step's weight reads at the paper's size).
  """
  if is_static_zero(guidance_scale):
    return eps_fn
  if isinstance(guidance_scale, numbers.Real) and guidance_scale < 0:
    raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale!r}")
  if w_prediction not in W_PREDICTIONS:
    raise ValueError(f"w_prediction must be one of {W_PREDICTIONS}, got {w_prediction!r}")
  return GuidedEps(heads_fn=heads_fn if heads_fn is not None else split_heads(eps_fn), schedule=schedule,
                   guidance_scale=guidance_scale, w_min=w_min, w_max=w_max, w_prediction=w_prediction)


def clip_z(z: jax.Array, w_min: float = W_MIN, w_max: float = W_MAX, action_bound: float = 1.0) -> jax.Array:
  """Actions to [-action_bound, action_bound], w to [w_min, w_max].  [B, A + 1]"""
  actions = jnp.clip(z[:, :-1], -action_bound, action_bound)
  return jnp.concatenate([actions, jnp.clip(z[:, -1:], w_min, w_max)], axis=-1)


def sample_z(eps_fn: EpsFn, schedule: VPDiscrete, batch: int, dim: int, key: jax.Array, *, guidance_scale=1.0,
             sampler: str = "ddpm", num_steps: int = 10, order: int = 2, temperature=0.0, w_min: float = W_MIN,
             w_max: float = W_MAX, w_prediction: str = "tweedie", action_bound: float = 1.0,
             heads_fn: HeadsFn | None = None) -> jax.Array:
  """Samples z_0 = (a, w) [batch, dim] with the (guided) eps (heads_fn: see `guided_eps_fn`).

  z_T = temperature * N(0, I) (temperature 0: z_T = 0, a deterministic sampler). DDPM runs all T steps with ancestral
  noise scaled by temperature and clips z after every step; "dpm" runs num_steps of deterministic DPM-Solver++
  (order `order`) clipping every data prediction and finishing with the denoising step to index 0. Actions are
  clipped to [-action_bound, action_bound] (1: the D4RL action box).
  """
  eps = guided_eps_fn(eps_fn, schedule, guidance_scale, heads_fn=heads_fn, w_min=w_min, w_max=w_max,
                      w_prediction=w_prediction)
  clip = lambda z: clip_z(z, w_min, w_max, action_bound)
  init_key, noise_key = jax.random.split(key)
  if is_static_zero(temperature):
    z_T = jnp.zeros((batch, dim), jnp.float32)
  else:
    z_T = temperature * jax.random.normal(init_key, (batch, dim), jnp.float32)
  if sampler == "ddpm":
    return ddpm_sample(eps, schedule, z_T, noise_key, temperature=temperature, clip_fn=clip)
  if sampler == "dpm":
    return dpm_solver_pp(eps, schedule, z_T, num_steps=num_steps, order=order, x0_clip_fn=clip,
                         denoise_to_zero=True)
  raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def select_best(candidates: jax.Array, scores: jax.Array) -> jax.Array:
  """SWG-R: per state, the candidate with the highest score.  [B, N, D], [B, N] -> [B, D]"""
  best = jnp.argmax(scores, axis=1)
  return jnp.take_along_axis(candidates, best[:, None, None], axis=1)[:, 0]
