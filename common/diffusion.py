"""Noise schedules, forward noising and the eps-matching loss.

Two schedules are used in this project:
  * `VPContinuous`: the continuous VP-SDE with beta(t) linear from 0.1 to 20 (SRPO's behaviour model).
  * `VPDiscrete`: SWG's T-step discrete VP schedule (T = 15, b_min = 0.1, b_max = 10).

Both expose the same continuous-time interface (`log_alpha`, `alpha_sigma`, `log_snr`, `t_from_log_snr`,
`model_time`) so the DPM-Solver in `common.solvers` serves both; for the discrete schedule log(alpha) is linearly
interpolated between the grid points t_i = i / T (i = 1..T), as in DPM-Solver's discrete wrapper.
Schedules are plain Python objects: they are static at trace time, never pytrees.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def _alpha_from_log_snr(lam):
  """log alpha for a VP process given lambda = log(alpha / sigma), alpha^2 + sigma^2 = 1."""
  return -0.5 * jnp.logaddexp(0.0, -2.0 * lam)


class _VPFromLogAlpha:
  """alpha, sigma and lambda of a VP process (alpha^2 + sigma^2 = 1) from a subclass's `log_alpha(t)`."""

  def alpha_sigma(self, t):
    log_alpha = self.log_alpha(t)
    return jnp.exp(log_alpha), jnp.sqrt(-jnp.expm1(2.0 * log_alpha))

  def log_snr(self, t):
    log_alpha = self.log_alpha(t)
    return log_alpha - 0.5 * jnp.log(-jnp.expm1(2.0 * log_alpha))


@dataclasses.dataclass(frozen=True)
class VPContinuous(_VPFromLogAlpha):
  """Continuous VP-SDE: log alpha_t = -t^2 (b_max - b_min) / 4 - t b_min / 2, sigma_t = sqrt(1 - alpha_t^2)."""

  beta_min: float = 0.1
  beta_max: float = 20.0
  t_min: float = 1e-3
  t_max: float = 1.0

  def log_alpha(self, t):
    return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min


  def t_from_log_snr(self, lam):
    """Inverse of `log_snr`: solve the quadratic in t for the given log alpha."""
    log_alpha = _alpha_from_log_snr(lam)
    a = 0.25 * (self.beta_max - self.beta_min)
    b = 0.5 * self.beta_min
    # a t^2 + b t + log_alpha = 0, positive root written to avoid cancellation.
    return -2.0 * log_alpha / (b + jnp.sqrt(b**2 - 4.0 * a * log_alpha))

  def model_time(self, t):
    """The time value fed to the eps network."""
    return t

  def t_from_model_time(self, t_model):
    return t_model


def discrete_vp_alphas(num_steps: int = 15, b_min: float = 0.1, b_max: float = 10.0) -> np.ndarray:
  """SWG's per-step alpha_t = exp(-b_min/T - (b_max - b_min)(2t - 1) / (2 T^2)), t = 1..T.  [T]"""
  t = np.arange(1, num_steps + 1, dtype=np.float64)
  T = float(num_steps)
  return np.exp(-b_min / T - 0.5 * (b_max - b_min) * (2.0 * t - 1.0) / T**2)


@dataclasses.dataclass(frozen=True)
class VPDiscrete(_VPFromLogAlpha):
  """SWG's discrete VP schedule. Index i = 0..T-1 is diffusion step t = i + 1; the network sees the index i."""

  num_steps: int = 15
  b_min: float = 0.1
  b_max: float = 10.0

  # Per-step quantities as float32 numpy arrays, [T]. Numpy so they are trace-time constants.
  @property
  def alphas(self) -> np.ndarray:
    return discrete_vp_alphas(self.num_steps, self.b_min, self.b_max).astype(np.float32)

  @property
  def betas(self) -> np.ndarray:
    return (1.0 - discrete_vp_alphas(self.num_steps, self.b_min, self.b_max)).astype(np.float32)

  @property
  def alpha_bars(self) -> np.ndarray:
    return np.cumprod(discrete_vp_alphas(self.num_steps, self.b_min, self.b_max)).astype(np.float32)

  def index_alpha_sigma(self, i):
    """sqrt(alpha_bar_i), sqrt(1 - alpha_bar_i) for integer step indices i in [0, T)."""
    alpha_bar = jnp.asarray(self.alpha_bars)[i]
    return jnp.sqrt(alpha_bar), jnp.sqrt(1.0 - alpha_bar)

  # Continuous-time view for DPM-Solver: t in [1/T, 1], grid t_i = (i + 1) / T.
  @property
  def t_min(self) -> float:
    return 1.0 / self.num_steps

  t_max: float = 1.0

  def _grid(self):
    t_grid = np.arange(1, self.num_steps + 1, dtype=np.float64) / self.num_steps
    log_alpha_grid = 0.5 * np.log(np.cumprod(discrete_vp_alphas(self.num_steps, self.b_min, self.b_max)))
    return t_grid, log_alpha_grid

  def log_alpha(self, t):
    t_grid, log_alpha_grid = self._grid()
    return jnp.interp(t, t_grid, log_alpha_grid)


  def t_from_log_snr(self, lam):
    t_grid, log_alpha_grid = self._grid()
    # log alpha decreases with t; jnp.interp needs increasing x, so flip both grids.
    return jnp.interp(_alpha_from_log_snr(lam), log_alpha_grid[::-1], t_grid[::-1])

  def model_time(self, t):
    """Continuous t -> (fractional) step index fed to the network: t = (i + 1) / T."""
    return t * self.num_steps - 1.0

  def t_from_model_time(self, t_model):
    return (t_model + 1.0) / self.num_steps


def noise(x0: jax.Array, eps: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
  """Forward noising x_t = alpha x_0 + sigma eps. alpha, sigma: [B] (broadcast over trailing dims) or scalars."""
  alpha = jnp.reshape(alpha, jnp.shape(alpha) + (1,) * (x0.ndim - jnp.ndim(alpha)))
  sigma = jnp.reshape(sigma, jnp.shape(sigma) + (1,) * (x0.ndim - jnp.ndim(sigma)))
  return alpha * x0 + sigma * eps


def eps_matching_loss(eps_pred: jax.Array, eps: jax.Array) -> jax.Array:
  """Mean over the batch of the squared error summed over all non-batch dims.  [B, D] -> scalar."""
  sq = jnp.square(eps_pred - eps).reshape(eps.shape[0], -1)
  return jnp.mean(jnp.sum(sq, axis=-1))
