"""SWG's input checks: the diffusion stage's arrays, the guidance scale, keys, and weights above w_max."""
from __future__ import annotations

import math
import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np

ACTION_TOLERANCE = 1e-4


def _as_2d(name: str, x, n: int | None = None) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must have shape [N, D], got shape {x.shape}")
  if n is not None and x.shape[0] != n:
    raise ValueError(f"{name} has {x.shape[0]} rows (shape {x.shape}) but expected N = {n}")
  if x.dtype.kind not in "biuf":
    raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
  bad = ~np.isfinite(x)
  if bad.any():
    i, j = (int(k) for k in np.argwhere(bad)[0])
    raise ValueError(f"{name} has a non-finite value {x[i, j]} at index {i} (element ({i}, {j}))")
  return x.astype(np.float32)


def validate_inputs(observations, actions, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Checks the diffusion-stage inputs; returns float32 copies. Raises ValueError naming the field/shape/value."""
  actions = _as_2d("actions", actions)
  n = actions.shape[0]
  if n == 0 or actions.shape[1] == 0:
    raise ValueError(f"actions must be non-empty [N, A] with N, A >= 1, got shape {actions.shape}")
  observations = _as_2d("observations", observations, n)
  w = np.asarray(weights)
  if w.ndim == 2 and w.shape[1] == 1:
    w = w[:, 0]
  if w.ndim != 1 or w.shape[0] != n:
    raise ValueError(f"weights must have shape [N] = [{n}], got shape {w.shape}")
  if w.dtype.kind not in "biuf":
    raise ValueError(f"weights must be numeric, got dtype {w.dtype}")
  if not np.all(np.isfinite(w)):
    i = int(np.flatnonzero(~np.isfinite(w))[0])
    raise ValueError(f"weights has a non-finite value {w[i]} at index {i}")
  if np.any(w < 0):
    i = int(np.flatnonzero(w < 0)[0])
    raise ValueError(f"weights must be >= 0, got {w[i]} at index {i}")
  biggest = float(np.max(np.abs(actions)))
  if biggest > 1.0 + ACTION_TOLERANCE:
    i = int(np.argmax(np.max(np.abs(actions), axis=1)))
    raise ValueError(f"actions must lie in [-1, 1], got max |a| = {biggest:.6g} at index {i}")
  return observations, actions, w.astype(np.float32)


def check_guidance(guidance_scale) -> None:
  if isinstance(guidance_scale, numbers.Real):
    if math.isnan(guidance_scale) or guidance_scale < 0:
      raise ValueError(f"guidance_scale (rho) must be a finite number >= 0, got {guidance_scale!r}")
  else:
    raise ValueError(f"guidance_scale (rho) must be a Python number >= 0, got {type(guidance_scale).__name__}")


def as_key(key, seed) -> jax.Array:
  if key is None:
    return jax.random.PRNGKey(0 if seed is None else int(seed))
  key = key if isinstance(key, jax.Array) else jnp.asarray(key)  # no conversion on the per-action path
  return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def warn_above_w_max(w: np.ndarray, config) -> None:
  w_max = config.sampling.w_max
  if w.max() > w_max:
    warnings.warn(f"weights reach {float(w.max()):.4g} > sampling.w_max = {w_max:g}: the sampler clips w (and the "
                  "guidance clips w0hat) to [w_min, w_max]; rescale the weights (e.g. divide by their max) or raise "
                  "w_max", stacklevel=3)
