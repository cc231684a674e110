"""SWG — Diffusion Self-Weighted Guidance (Tagle et al., TMLR 2025) in JAX.

  model = swg_jax.fit(observations, actions, weights, config, seed=0)       # joint (a, w) diffusion
  actions, w = swg_jax.sample(model, observations, key, guidance_scale=1.0)  # guided sampling
  result = swg_jax.train(config, data)              # critic -> weights -> diffusion, every seed of config.seeds
  summary = swg_jax.train_and_evaluate(config, workdir)   # + dataset loading, SWG / SWG-R evaluation, report

Shapes: observations [N, S] (S may be 0: a bandit), actions [N, A] in [-1, 1], weights [N] >= 0.
"""
from __future__ import annotations

import functools
import math
import numbers
import warnings
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from common import iql
from common import run as run_lib
from common.data import OfflineData
from common.diffusion import VPDiscrete
from common.networks import ConditionalEpsNet
from common.training import Trainer, init_seeds, seed_keys, seed_stage_keys
from swg_jax import configs, model as model_lib, sampling, weights as weights_lib
from swg_jax.configs import get_config
from swg_jax.model import WeightedData
from swg_jax.sampling import guided_eps_fn, sample_z, select_best

ACTION_TOLERANCE = 1e-4


class SWGModel(flax.struct.PyTreeNode):
  """A trained SWG policy: EMA parameters of the joint network, optionally the critic (for SWG-R's Q selection).

  `train` returns it seed-stacked (a leading seed axis on every array); `model.seed(i)` is one seed's model.
  """

  params: Any
  critic: Any = None
  net: ConditionalEpsNet = flax.struct.field(pytree_node=False, default=None)
  schedule: VPDiscrete = flax.struct.field(pytree_node=False, default=None)
  obs_dim: int = flax.struct.field(pytree_node=False, default=0)
  action_dim: int = flax.struct.field(pytree_node=False, default=0)
  sampling_defaults: tuple = flax.struct.field(pytree_node=False, default=())  # sorted (name, value) pairs

  def eps_fn(self, observations: jax.Array):
    """eps_fn(z [B, A + 1], t_model) for the given observations [B, S]."""
    return lambda z, t_model: self.net.apply(self.params, z, t_model, observations)

  def heads_fn(self, observations: jax.Array):
    """The same eps as `eps_fn` with its heads apart: (eps_a [B, A], eps_w [B, 1]) (see `guided_eps_fn`)."""
    return lambda z, t_model: self.net.apply(self.params, z, t_model, observations, split_heads=True)

  def seed(self, i: int) -> "SWGModel":
    return jax.tree.map(lambda x: x[i], self)


class TrainResult(NamedTuple):
  """Seed-stacked: model and critic have a leading seed axis; weights and advantages are [num_seeds, N]."""

  model: SWGModel
  critic: iql.CriticState
  weights: np.ndarray
  advantages: np.ndarray


# ---------------------------------------------------------------------------------------------------------------
# Validation


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


def _check_guidance(guidance_scale) -> None:
  if isinstance(guidance_scale, numbers.Real):
    if math.isnan(guidance_scale) or guidance_scale < 0:
      raise ValueError(f"guidance_scale (rho) must be a finite number >= 0, got {guidance_scale!r}")
  else:
    raise ValueError(f"guidance_scale (rho) must be a Python number >= 0, got {type(guidance_scale).__name__}")


def _as_key(key, seed) -> jax.Array:
  if key is None:
    return jax.random.PRNGKey(0 if seed is None else int(seed))
  key = key if isinstance(key, jax.Array) else jnp.asarray(key)  # no conversion on the per-action path
  return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


# ---------------------------------------------------------------------------------------------------------------
# Fit and sample


def fit(observations, actions, weights, config=None, key=None, *, seed: int | None = None, critic=None,
        workdir: str | None = None, progress: bool = False) -> SWGModel:
  """Trains the joint (a, w) diffusion model (Algorithm 1) and returns the EMA policy.

  config: a full SWG config (`get_config(...)`; default "smoke"); uses config.diffusion and config.sampling.
  key / seed: PRNG key (or int seed; default config.seeds[0]). critic: kept in the model for SWG-R's Q selection.
  """
  config = config if config is not None else get_config("smoke")
  observations, actions, w = validate_inputs(observations, actions, weights)
  _warn_above_w_max(w, config)
  key = _as_key(key, config.seeds[0] if seed is None else seed)
  data = WeightedData(observations=jnp.asarray(observations), actions=jnp.asarray(actions), weights=jnp.asarray(w))
  model = _fit_seeds(data, key[None], config, critic=critic, workdir=workdir, progress=progress)
  return model.seed(0)


def _warn_above_w_max(w: np.ndarray, config) -> None:
  w_max = config.sampling.w_max
  if w.max() > w_max:
    warnings.warn(f"weights reach {float(w.max()):.4g} > sampling.w_max = {w_max:g}: the sampler clips w (and the "
                  "guidance clips w0hat) to [w_min, w_max]; rescale the weights (e.g. divide by their max) or raise "
                  "w_max", stacklevel=3)


def _fit_seeds(data: WeightedData, keys: jax.Array, config, *, critic=None, workdir=None, progress=False) -> SWGModel:
  """The diffusion stage for every seed (keys [N, 2]); data.weights is [N_seeds, N] when it has a seed axis."""
  dc = config.diffusion
  obs_dim, action_dim = data.observations.shape[-1], data.actions.shape[-1]
  init_keys, run_keys = seed_stage_keys(keys, 0), seed_stage_keys(keys, 1)
  state = init_seeds(lambda k: model_lib.init_diffusion(k, obs_dim, action_dim, dc), init_keys)
  per_seed = WeightedData(observations=False, actions=False, weights=data.weights.ndim == 2)
  trainer = Trainer(model_lib.make_diffusion_step(action_dim, dc), num_steps=int(dc.num_steps),
                    steps_per_call=config.steps_per_call, name="diffusion", workdir=workdir, progress=progress,
                    checkpoint_every=config.checkpoint_every, data_per_seed=per_seed)
  state = trainer.run(state, data, run_keys)
  return SWGModel(params=state.ema_params, critic=critic, net=model_lib.make_network(action_dim, dc),
                  schedule=model_lib.make_schedule(dc), obs_dim=obs_dim, action_dim=action_dim,
                  sampling_defaults=tuple(sorted(config.sampling.to_dict().items())))


@functools.partial(jax.jit, static_argnames=("guidance_scale", "sampler", "num_steps", "order", "temperature",
                                             "num_candidates", "select", "w_min", "w_max", "w_prediction"))
def _sample(model: SWGModel, observations, key, *, guidance_scale, sampler, num_steps, order, temperature,
            num_candidates, select, w_min, w_max, w_prediction):
  b = observations.shape[0]
  obs = jnp.repeat(observations, num_candidates, axis=0)  # [B * N, S], candidates of one state adjacent
  z = sample_z(model.eps_fn(obs), model.schedule, b * num_candidates, model.action_dim + 1, key,
               guidance_scale=guidance_scale, sampler=sampler, num_steps=num_steps, order=order,
               temperature=temperature, w_min=w_min, w_max=w_max, w_prediction=w_prediction,
               heads_fn=model.heads_fn(obs))
  if num_candidates > 1:
    if select == "q":
      scores = iql.target_q(model.critic, obs, z[:, :-1])
    else:
      scores = z[:, -1]
    z = select_best(z.reshape(b, num_candidates, -1), scores.reshape(b, num_candidates))
  return z[:, :-1], z[:, -1]


def sampling_options(model: SWGModel, **overrides) -> dict:
  """The model's default sampling options with `overrides`, checked; raises ValueError naming the bad option."""
  opts = dict(model.sampling_defaults)
  unknown = set(overrides) - set(opts)
  if unknown:
    raise ValueError(f"unknown sampling option(s) {sorted(unknown)}; expected some of {sorted(opts)}")
  opts.update(overrides)
  _check_guidance(opts["guidance_scale"])
  if opts["sampler"] not in sampling.SAMPLERS:
    raise ValueError(f"sampler must be one of {sampling.SAMPLERS}, got {opts['sampler']!r}")
  if opts["w_prediction"] not in sampling.W_PREDICTIONS:
    raise ValueError(f"w_prediction must be one of {sampling.W_PREDICTIONS}, got {opts['w_prediction']!r}")
  temperature = opts["temperature"]
  if not isinstance(temperature, numbers.Real) or not temperature >= 0:
    raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
  n = opts["num_candidates"]
  if not isinstance(n, numbers.Integral) or n < 1:
    raise ValueError(f"num_candidates must be an int >= 1, got {n!r}")
  if n > 1:
    if temperature == 0:
      raise ValueError("num_candidates > 1 (SWG-R) needs temperature > 0: with temperature 0 all candidates are equal")
    if opts["select"] not in ("q", "w"):
      raise ValueError(f"select must be 'q' or 'w', got {opts['select']!r}")
    if opts["select"] == "q" and model.critic is None:
      raise ValueError("select='q' (SWG-R by min-Q_target) needs a critic in the model; pass critic= to fit or use "
                       "select='w'")
  # 0 stays an int: rho = 0 and temperature = 0 are static choices that compile to the plain / deterministic sampler.
  opts["guidance_scale"] = float(opts["guidance_scale"]) if opts["guidance_scale"] != 0 else 0
  opts["temperature"] = float(temperature) if temperature != 0 else 0
  return opts


def sample(model: SWGModel, observations, key, **overrides) -> tuple[jax.Array, jax.Array]:
  """Guided samples: (actions [B, A], sampled weights [B]) for observations [B, S].

  overrides (defaults from the config's `sampling` block): guidance_scale (rho >= 0; 0 = behaviour policy),
  sampler ("ddpm" | "dpm"), num_steps (DPM-Solver++ steps), order, temperature (0: deterministic, z_T = 0),
  num_candidates (SWG-R: N > 1 candidates per state, needs temperature > 0), select ("q": argmax min-Q_target, needs
  the critic; "w": argmax sampled w), w_min, w_max, w_prediction ("tweedie" | "official").
  """
  opts = sampling_options(model, **overrides)
  if isinstance(observations, jax.Array):  # stays on its device
    observations = observations.astype(jnp.float32)
  else:
    observations = np.asarray(observations, np.float32)
  if observations.ndim != 2 or observations.shape[1] != model.obs_dim:
    raise ValueError(f"observations must have shape [B, {model.obs_dim}], got shape {observations.shape}")
  # A numpy array goes straight to the jitted call, which moves it 0.1 ms faster than jnp.asarray would.
  return _sample(model, observations, _as_key(key, None), **opts)


def act(model: SWGModel, observations, key, **overrides) -> jax.Array:
  """Actions for observations [B, S] (or one observation [S] -> [A]) with the model's default sampling options."""
  observations = np.asarray(observations, np.float32)
  single = observations.ndim == 1
  actions, _ = sample(model, observations[None] if single else observations, key, **overrides)
  return actions[0] if single else actions


def seed_policy(model: SWGModel, **overrides):
  """For a seed-stacked model: a jitted policy(obs [num_seeds, B, S], key) -> actions [num_seeds, B, A], each seed
  sampling with its own parameters and key (the options are checked once, here)."""
  opts = sampling_options(model, **overrides)

  @jax.jit
  def policy(observations, key):
    keys = jax.random.split(key, observations.shape[0])
    one_seed = lambda m, obs, k: _sample(m, obs.astype(jnp.float32), k, **opts)[0]
    return jax.vmap(one_seed)(model, observations, keys)

  return policy


# ---------------------------------------------------------------------------------------------------------------
# Full pipeline


def train(config, data: OfflineData, *, workdir: str | None = None) -> TrainResult:
  """Algorithm 3 then 1 for every seed in config.seeds, vmapped: IQL critic -> weights over the dataset (one set per
  seed, from that seed's critic) -> joint diffusion. data: preprocessed OfflineData. With a workdir every stage
  checkpoints and an interrupted run resumes (the weights are recomputed from the restored critic)."""
  if data.observations.ndim != 2 or data.actions.ndim != 2:
    raise ValueError(f"data.observations [N, S] and data.actions [N, A] needed, got {data.observations.shape}, "
                     f"{data.actions.shape}")
  keys = seed_keys(config.seeds)
  cc = config.critic
  critic = init_seeds(lambda k: iql.init_critic(k, data.obs_dim, data.action_dim, cc), seed_stage_keys(keys, 0))
  critic = Trainer(iql.make_critic_step(cc), num_steps=int(cc.num_steps), steps_per_call=config.steps_per_call,
                   name="critic", workdir=workdir, progress=config.progress,
                   checkpoint_every=config.checkpoint_every).run(critic, data, seed_stage_keys(keys, 1))
  w, adv = weights_lib.compute_weights(critic, data.observations, data.actions, config.weights, seed_axis=True)
  _warn_above_w_max(w, config)
  weighted = WeightedData(observations=data.observations, actions=data.actions, weights=jnp.asarray(w))
  model = _fit_seeds(weighted, seed_stage_keys(keys, 2), config, critic=critic, workdir=workdir,
                     progress=config.progress)
  return TrainResult(model=model, critic=critic, weights=w, advantages=adv)


def train_and_evaluate(config, workdir: str | None = None, *, download: bool = True) -> dict:
  """The main job: load config.dataset, train every seed (resuming in workdir), evaluate SWG (config.sampling) and
  SWG-R (config.resampling) in the dataset's env, write eval_swg.json, eval_swgr.json, plots and summary.json.
  Returns the summary. Raises common.data.DatasetError / common.run.RunError with a message for the user."""
  data, info = run_lib.load_run_data(config, download=download)
  if workdir is not None:  # after loading: a dataset that fails leaves no run behind
    run_lib.prepare_workdir(workdir, config, "swg")
  result = train(config, data, workdir=workdir)
  policies = {"swg": {}, "swgr": dict(config.resampling)}
  evals = {}
  for name, overrides in policies.items():
    evals[name] = run_lib.load_eval(workdir, name) or run_lib.evaluate_policy(
        seed_policy(result.model, **overrides), config, info, workdir, name)
  return run_lib.write_summary(workdir, "swg", config, info, evals)


__all__ = ["SWGModel", "TrainResult", "WeightedData", "act", "configs", "fit", "get_config", "guided_eps_fn",
           "sample", "sample_z", "sampling_options", "seed_policy", "select_best", "train", "train_and_evaluate",
           "validate_inputs"]
