"""Samplers over an eps function: DDPM ancestral sampling and multistep DPM-Solver++ (ODE and SDE variants).

A sampler knows schedules and solver maths, nothing about networks: it takes `eps_fn(x [B, D], t_model []) -> [B, D]`,
where `t_model = schedule.model_time(t)` is what the network was trained on (the step index for `VPDiscrete`, t for
`VPContinuous`). Guidance is a wrapper that turns one eps_fn into another.

Both samplers are one `lax.scan` with a uniform body. Everything that depends only on the schedule and the static
options (the time grid, every per-step coefficient, the warm-up and final lower orders) is computed on the host in
float64 at trace time, so a DPM-Solver++ step is always

    x_{i+1} = a_i x_i + sum_j c_{i,j} m_{i-j}  (+ n_i z_i for the SDE variant),

with m the data predictions held in a fixed-size history; a lower-order step just has zeros for the unused history.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from common.diffusion import VPContinuous, VPDiscrete, discrete_vp_alphas

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]
ArrayFn = Callable[[jax.Array], jax.Array]


class NoiseLevel(NamedTuple):
  """What an eps function may need to know about the noise level of a sampler step (scalars, or [N] per step).

  Samplers compute these on the host ahead of the loop and feed them in as the scan's xs, so a loop body never looks
  a schedule up from a traced time (`jnp.interp` runs a nested loop, which XLA's GPU compiler rejected inside the
  guided SWG sampler).
  """

  t_model: jax.Array     # the network's time input
  alpha: jax.Array       # alpha_t (sqrt(alpha_bar) for VPDiscrete)
  sigma: jax.Array       # sigma_t = sqrt(1 - alpha_t^2)
  step_alpha: jax.Array  # VPDiscrete: the single-step alpha_i at the nearest index; alpha_t for other schedules


def noise_levels(schedule, t_model: np.ndarray) -> NoiseLevel:
  """Host-side (float64 numpy) noise levels at the network times t_model [N] (float32 values)."""
  t_model = np.asarray(t_model, np.float32)
  log_alpha = _eval_schedule(schedule.log_alpha, _eval_schedule(schedule.t_from_model_time, t_model))
  alpha = np.exp(log_alpha)
  step_alpha = alpha
  if isinstance(schedule, VPDiscrete):
    i = np.clip(np.round(t_model).astype(np.int64), 0, schedule.num_steps - 1)
    step_alpha = np.sqrt(discrete_vp_alphas(schedule.num_steps, schedule.b_min, schedule.b_max))[i]
  return NoiseLevel(t_model=t_model, alpha=alpha, sigma=np.sqrt(-np.expm1(2.0 * log_alpha)), step_alpha=step_alpha)


def traced_noise_level(schedule, t_model: jax.Array) -> NoiseLevel:
  """The same as `noise_levels` computed in the graph from a (possibly traced) scalar t_model.

  For eps functions called outside a sampler; inside a loop body use the sampler's levels instead (see NoiseLevel).
  """
  t_model = jnp.asarray(t_model, jnp.float32)
  alpha, sigma = schedule.alpha_sigma(schedule.t_from_model_time(t_model))
  step_alpha = alpha
  if isinstance(schedule, VPDiscrete):
    i = jnp.clip(jnp.round(t_model).astype(jnp.int32), 0, schedule.num_steps - 1)
    step_alpha = jnp.sqrt(jnp.asarray(schedule.alphas))[i]
  return NoiseLevel(t_model=t_model, alpha=alpha, sigma=sigma, step_alpha=step_alpha)


def eps_at_level(eps_fn: EpsFn) -> Callable[[jax.Array, NoiseLevel], jax.Array]:
  """eps(x, level) from an eps_fn: one that needs more than t_model (guidance) provides `at_level(x, level)`."""
  at_level = getattr(eps_fn, "at_level", None)
  return at_level if at_level is not None else (lambda x, level: eps_fn(x, level.t_model))


def _level_xs(levels: NoiseLevel, dtype) -> NoiseLevel:
  """Per-step levels as device arrays for a scan's xs: t_model float32 (what networks were trained on), the rest dtype."""
  return NoiseLevel(t_model=jnp.asarray(levels.t_model, jnp.float32), alpha=jnp.asarray(levels.alpha, dtype),
                    sigma=jnp.asarray(levels.sigma, dtype), step_alpha=jnp.asarray(levels.step_alpha, dtype))

_SKIP_TYPES = ("logSNR", "time_uniform")
# The reference implementation (Lu et al.) only lowers the order of the final steps for short runs, where it
# stabilises sampling; for longer runs a first-order final step would cap the global order of the solver at 2.
_LOWER_ORDER_FINAL_BELOW = 10


# ----------------------------------------------------------------------------------------------------------------
# DDPM


def ddpm_sample(eps_fn: EpsFn, schedule: VPDiscrete, x_T: jax.Array, key: jax.Array | None, *,
                temperature: float = 1.0, clip_fn: ArrayFn | None = None,
                return_trajectory: bool = False) -> jax.Array:
  """DDPM ancestral sampling over the step indices i = T-1..0 (SWG's Algorithm 2), as one `lax.scan`.

    x_{i-1} = (x_i - beta_i / sqrt(1 - alpha_bar_i) eps(x_i, i)) / sqrt(alpha_i) + 1[i > 0] sqrt(beta_i) temperature z

  Args:
    eps_fn: noise prediction, called with t_model = float32(i) (or `eps_fn.at_level(x, NoiseLevel)`, see
      `eps_at_level`).
    schedule: the discrete VP schedule (T = schedule.num_steps).
    x_T: [B, D] start, a sample of the marginal at index T-1 (alpha_bar_{T-1} ~ 0.0064, so nearly N(0, I)).
    key: PRNG key for the ancestral noise; unused (may be None) when temperature is the Python number 0.
    temperature: noise scale. A Python 0 builds a deterministic sampler that draws no noise at all (a static
      choice); any other value, including a traced one, scales the noise.
    clip_fn: applied to x after every step (e.g. clip actions to [-1, 1]).
    return_trajectory: return [T+1, B, D] (x_T first, the sample last) instead of the sample.
  Returns:
    x_0 [B, D], or the trajectory [T+1, B, D].
  """
  if not isinstance(schedule, VPDiscrete):
    raise TypeError(f"ddpm_sample needs a VPDiscrete schedule, got {type(schedule).__name__}")
  deterministic = isinstance(temperature, numbers.Real) and temperature == 0
  if not deterministic and key is None:
    raise ValueError(f"ddpm_sample with temperature={temperature!r} needs a PRNG key, got None")
  T = schedule.num_steps
  # float64 from the closed form: 1 - alpha and 1 - alpha_bar lose most of their digits if formed from float32.
  log_alpha = np.log(discrete_vp_alphas(T, schedule.b_min, schedule.b_max))
  beta = -np.expm1(log_alpha)
  one_minus_alpha_bar = -np.expm1(np.cumsum(log_alpha))
  idx = np.arange(T - 1, -1, -1)
  dtype = x_T.dtype
  x_coef = np.exp(-0.5 * log_alpha)[idx]
  eps_coef = (np.exp(-0.5 * log_alpha) * beta / np.sqrt(one_minus_alpha_bar))[idx]
  noise_std = (np.sqrt(beta) * (np.arange(T) > 0))[idx]

  eps = eps_at_level(eps_fn)
  xs = {"level": _level_xs(noise_levels(schedule, idx), dtype), "x_coef": jnp.asarray(x_coef, dtype),
        "eps_coef": jnp.asarray(eps_coef, dtype)}
  if not deterministic:
    xs["noise_std"] = jnp.asarray(noise_std, dtype) * jnp.asarray(temperature, dtype)
    xs["key"] = jax.random.split(key, T)

  def step(x, inp):
    x = inp["x_coef"] * x - inp["eps_coef"] * eps(x, inp["level"])
    if not deterministic:
      x = x + inp["noise_std"] * jax.random.normal(inp["key"], x.shape, x.dtype)
    if clip_fn is not None:
      x = clip_fn(x)
    return x, (x if return_trajectory else None)

  x_0, traj = jax.lax.scan(step, x_T, xs)
  if return_trajectory:
    return jnp.concatenate([x_T[None], traj], axis=0)
  return x_0


# ----------------------------------------------------------------------------------------------------------------
# DPM-Solver++


@dataclasses.dataclass(frozen=True)
class SolverPlan:
  """Host-side (numpy float64) description of a DPM-Solver++ run of N steps with a history of K = order.

  Step i (i = 0..N-1) calls the model at t[i] and moves x from t[i] to t[i+1]:
    m_i = (x_i - sigma[i] eps(x_i, t_model[i])) / alpha[i]
    x_{i+1} = x_coef[i] x_i + sum_j m_coef[i, j] m_{i-j} + noise_coef[i] z_i.
  """

  t: np.ndarray           # [N+1] times, t[0] = t_start > ... > t[N] = t_end
  t_model: np.ndarray     # [N+1] float32 network times of those points
  alpha: np.ndarray       # [N+1]
  sigma: np.ndarray       # [N+1]
  log_snr: np.ndarray     # [N+1] lambda = log(alpha / sigma), increasing
  orders: np.ndarray      # [N] order used by each step (warm-up and final steps may be lower)
  x_coef: np.ndarray      # [N]
  m_coef: np.ndarray      # [N, K]; column j multiplies m_{i-j}
  noise_coef: np.ndarray  # [N]; zero for the ODE solver


def _kernel_moments(h: float, c: float, n: int) -> np.ndarray:
  """J_k = int_0^h c e^{-c (h - u)} (u / h)^k du for k < n.  [n]

  The exact solution over one step is x_t = (sigma_t / sigma_s) e^{-(c-1) h} x_s + alpha_t int kernel * x0(lambda)
  (c = 1: probability-flow ODE; c = 2: the SDE); these moments integrate a polynomial x0 exactly.
  """
  ch = c * h
  if ch < 1.0:
    # Series in ch: J_k = ch sum_m (-ch)^m k! / (m + k + 1)!; the recursion below cancels badly for small ch.
    return np.array([ch * sum((-ch) ** m * math.factorial(k) / math.factorial(m + k + 1) for m in range(24))
                     for k in range(n)])
  # I_k = int c e^{-c(h-u)} u^k du satisfies I_0 = 1 - e^{-ch}, I_k = h^k - (k / c) I_{k-1} (by parts).
  out, I = [], -math.expm1(-ch)
  for k in range(n):
    if k > 0:
      I = h**k - (k / c) * I
    out.append(I / h**k)
  return np.array(out)


def _phi_3(h: float) -> float:
  """phi_3 of the reference code's D1/D2 form: phi_2 / h - 1/2 with phi_2 = phi_1 / h + 1, phi_1 = e^{-h} - 1."""
  phi_2 = math.expm1(-h) / h + 1.0
  return phi_2 / h - 0.5


def _d2_weights(r0: float, r1: float) -> np.ndarray:
  """D2 = (D1_0 - D1_1) / (r0 + r1) with D1_0 = (m_i - m_{i-1}) / r0, D1_1 = (m_{i-1} - m_{i-2}) / r1, as weights of
  (m_i, m_{i-1}, m_{i-2}); r0, r1: the last two steps in log-SNR over this step's."""
  return np.array([1.0 / r0, -1.0 / r0 - 1.0 / r1, 1.0 / r1]) / (r0 + r1)


def _eval_schedule(fn, t: np.ndarray) -> np.ndarray:
  """Evaluate a schedule function eagerly (also while tracing: the grid is a trace-time constant).  float64 out."""
  with jax.ensure_compile_time_eval():
    return np.asarray(jax.device_get(fn(jnp.asarray(t, jnp.float32))), np.float64)


THIRD_ORDER_FORMS = ("reference", "exact")


def dpm_solver_pp_plan(schedule, num_steps: int, order: int = 2, *, stochastic: bool = False,
                       skip_type: str = "logSNR", t_start: float | None = None, t_end: float | None = None,
                       lower_order_final: bool = True, third_order: str | None = None) -> SolverPlan:
  """Time grid and all step coefficients of multistep DPM-Solver++ (Lu et al. 2022, Algorithm 2 and its 3M/SDE kin).

  Order k uses the last k data predictions. Order 2 is the published 2M update (the 'midpoint' form of Algorithm 2:
  D = (1 + 1/(2r)) m_i - 1/(2r) m_{i-1}). Order 3 comes in two forms (`third_order`). In the D1/D2 form of the
  reference implementation (LuChengTHU/dpm-solver, and diffusers) a step is
  x_t = sigma_t/sigma_s x - alpha_t phi_1 m_i + alpha_t phi_2 D1 - w alpha_t phi_3 D2:
    "reference" (the ODE's default): w = 1, as the reference code. Not exact for a quadratic x0, so it converges at
      order 2, yet at the 10 to 20 steps samplers use it is the more accurate of the two (tests/test_solvers.py).
    "exact": w = 2, the quadratic through the last three predictions integrated exactly against the exponential
      kernel (a third-order exponential Adams-Bashforth step); converges at order 3.
  The SDE variant (stochastic=True, SDE-DPM-Solver++) uses the kernel 2 e^{-2(h-u)}, x_coef = sigma_t/sigma_s e^{-h}
  and noise sigma_t sqrt(1 - e^{-2h}); its orders 1 and 2 are the published ones, its order 3 the exact
  construction (the reference has no third-order SDE step), its default.
  """
  if order not in (1, 2, 3):
    raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
  third_order = ("exact" if stochastic else "reference") if third_order is None else third_order
  if third_order not in THIRD_ORDER_FORMS:
    raise ValueError(f"third_order must be one of {THIRD_ORDER_FORMS}, got {third_order!r}")
  if stochastic and third_order == "reference":
    raise ValueError("third_order='reference' exists for the ODE solver only (the reference code has no third-order "
                     "SDE step): pass third_order='exact' or leave it out with a key")
  if not isinstance(num_steps, numbers.Integral) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
  num_steps = int(num_steps)
  if skip_type not in _SKIP_TYPES:
    raise ValueError(f"skip_type must be one of {_SKIP_TYPES}, got {skip_type!r}")
  t_start = float(schedule.t_max if t_start is None else t_start)
  t_end = float(schedule.t_min if t_end is None else t_end)
  lo, hi = float(schedule.t_min), float(schedule.t_max)
  if 0.0 < t_end < lo - 1e-9 and t_end < t_start and isinstance(schedule, VPContinuous):
    raise ValueError(f"t_end={t_end} is below this schedule's t_min={lo}: the schedule's range is the times the network "
                     f"was trained on. To integrate further (e.g. t_end=1e-4 at more than 15 steps), pass the schedule "
                     f"VPContinuous(t_min={t_end}) and a network trained down to that time")
  if not lo - 1e-9 <= t_end < t_start <= hi + 1e-9:
    raise ValueError(f"need t_min={lo} <= t_end < t_start <= t_max={hi}, got t_start={t_start}, t_end={t_end}")

  if skip_type == "logSNR":
    lam_ends = _eval_schedule(schedule.log_snr, np.array([t_start, t_end]))
    t = _eval_schedule(schedule.t_from_log_snr, np.linspace(lam_ends[0], lam_ends[1], num_steps + 1))
  else:
    t = np.linspace(t_start, t_end, num_steps + 1)
  t[0], t[-1] = t_start, t_end  # the inverse of log_snr is only float32-accurate
  # Coefficients use the alpha the network's time input implies, so a network (or an exact eps) and the solver
  # agree on the noise level at every call even after the float32 round trip through model time.
  t_model = _eval_schedule(schedule.model_time, t).astype(np.float32)
  log_alpha = _eval_schedule(schedule.log_alpha, _eval_schedule(schedule.t_from_model_time, t_model))
  alpha = np.exp(log_alpha)
  sigma = np.sqrt(-np.expm1(2.0 * log_alpha))
  lam = log_alpha - np.log(sigma)
  h = np.diff(lam)
  if not np.all(h > 0):
    raise ValueError(f"log-SNR must increase along the time grid; got steps {h} (t = {t})")

  steps = np.arange(num_steps)
  orders = np.minimum(order, steps + 1)  # warm-up: only i + 1 predictions exist at step i
  if lower_order_final and num_steps < _LOWER_ORDER_FINAL_BELOW:
    orders = np.minimum(orders, num_steps - steps)

  c = 2.0 if stochastic else 1.0
  x_coef = sigma[1:] / sigma[:-1] * (np.exp(-h) if stochastic else 1.0)
  noise_coef = sigma[1:] * np.sqrt(-np.expm1(-2.0 * h)) if stochastic else np.zeros(num_steps)
  m_coef = np.zeros((num_steps, order))
  for i in range(num_steps):
    k = int(orders[i])
    J = _kernel_moments(h[i], c, k)
    if k == 2:
      J[1] = 0.5 * J[0]  # the published 2M ('midpoint') approximates the first moment by half the zeroth
    nodes = (lam[i - np.arange(k)] - lam[i]) / h[i]  # 0, -r_0, -(r_0 + r_1): scaled positions of m_i, m_{i-1}, ...
    vander = nodes[:, None] ** np.arange(k)[None, :]
    # Weights of the interpolating polynomial's integral: w = V^{-T} J.
    m_coef[i, :k] = alpha[i + 1] * np.linalg.solve(vander.T, J)
    if k == 3 and third_order == "reference":  # D2 weighted by -phi_3 instead of the exact -2 phi_3: add phi_3 D2
      m_coef[i] += alpha[i + 1] * _phi_3(h[i]) * _d2_weights(-nodes[1], nodes[1] - nodes[2])
  return SolverPlan(t=t, t_model=t_model, alpha=alpha, sigma=sigma, log_snr=lam, orders=orders, x_coef=x_coef,
                    m_coef=m_coef, noise_coef=noise_coef)


def dpm_solver_pp(eps_fn: EpsFn, schedule, x_T: jax.Array, *, num_steps: int, order: int = 2,
                  key: jax.Array | None = None, skip_type: str = "logSNR", t_start: float | None = None,
                  t_end: float | None = None, x0_clip_fn: ArrayFn | None = None, lower_order_final: bool = True,
                  denoise_to_zero: bool = False, third_order: str | None = None) -> jax.Array:
  """Multistep DPM-Solver++ (data prediction x0 = (x - sigma eps) / alpha), orders 1..3, as one `lax.scan`.

  Integrates from t_start (default schedule.t_max) to t_end (default schedule.t_min) with num_steps model calls on
  any schedule with the continuous interface (`VPContinuous`, or `VPDiscrete` through its interpolated log alpha).
  The first steps use lower orders (warm-up); with lower_order_final and num_steps < 10 so do the last ones.

  Args:
    eps_fn: noise prediction eps_fn(x, t_model) with t_model = schedule.model_time(t), a float32 scalar (or
      `eps_fn.at_level(x, NoiseLevel)`, see `eps_at_level`).
    schedule: noise schedule (static).
    x_T: [B, D] start, a sample of the marginal at t_start.
    num_steps: number of steps = model calls (plus one with denoise_to_zero).
    order: 1 (DDIM), 2 (2M) or 3 (3M).
    third_order: the form of order 3, "reference" (the ODE's default) or "exact"; see `dpm_solver_pp_plan`.
    key: None for the deterministic ODE solver; a PRNG key for SDE-DPM-Solver++ (fresh noise every step).
    skip_type: "logSNR" (uniform in lambda = log(alpha / sigma)) or "time_uniform".
    x0_clip_fn: applied to every data prediction (thresholding, e.g. clip actions to [-1, 1]).
    lower_order_final: use order <= num_steps - i at step i when num_steps < 10.
    denoise_to_zero: finish with one more model call and return its (clipped) data prediction at t_end. For
      VPDiscrete this is exactly DDPM's last step (index 0 -> clean), whose noise level t_min = 1/T is far from zero.
  Returns:
    x at t_end [B, D] (the data prediction there when denoise_to_zero).
  """
  plan = dpm_solver_pp_plan(schedule, num_steps, order, stochastic=key is not None, skip_type=skip_type,
                            t_start=t_start, t_end=t_end, lower_order_final=lower_order_final,
                            third_order=third_order)
  dtype = x_T.dtype
  as_x = lambda a: jnp.asarray(a, dtype)
  eps = eps_at_level(eps_fn)
  levels = _level_xs(noise_levels(schedule, plan.t_model), dtype)  # the plan's alpha and sigma, and step_alpha

  def data_prediction(x, level):
    x0 = (x - level.sigma * eps(x, level)) / level.alpha
    return x0 if x0_clip_fn is None else x0_clip_fn(x0)

  xs = {"level": jax.tree.map(lambda a: a[:-1], levels), "x_coef": as_x(plan.x_coef), "m_coef": as_x(plan.m_coef)}
  if key is not None:
    xs["noise_coef"] = as_x(plan.noise_coef)
    xs["key"] = jax.random.split(key, num_steps)

  def step(carry, inp):
    x, history = carry  # history[j] = m_{i-1-j}
    m = data_prediction(x, inp["level"])
    history = jnp.concatenate([m[None], history[:-1]], axis=0)  # now history[j] = m_{i-j}
    x = inp["x_coef"] * x + jnp.tensordot(inp["m_coef"], history, axes=1)
    if key is not None:
      x = x + inp["noise_coef"] * jax.random.normal(inp["key"], x.shape, dtype)
    return (x, history), None

  history = jnp.zeros((order,) + x_T.shape, dtype)
  (x, _), _ = jax.lax.scan(step, (x_T, history), xs)
  if denoise_to_zero:
    x = data_prediction(x, jax.tree.map(lambda a: a[-1], levels))
  return x
