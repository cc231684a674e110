"""A trained SWG policy (`SWGModel`): fitting the joint (a, w) diffusion on arrays, and guided sampling.

`sample(model, observations, key, **overrides)` defaults to the config's `sampling` block, whose temperature is 0
(the official evaluation): z_T = 0 and no ancestral noise, so one observation always gives the same action. Pass
temperature=1.0 for samples from the guided distribution.
"""
from __future__ import annotations

import functools
import numbers
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from common import iql
from common.diffusion import VPDiscrete
from common.networks import ConditionalEpsNet
from common.offline_data import rows_of
from common.training import Trainer, init_seeds, seed_stage_keys
from swg_jax import model as model_lib, sampling
from swg_jax.configs import get_config
from swg_jax.inputs import as_key, check_guidance, warn_above_w_max, validate_inputs
from swg_jax.model import WeightedData
from swg_jax.sampling import sample_z, select_best


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


def fit(observations, actions, weights, config=None, key=None, *, seed: int | None = None, critic=None,
        workdir: str | None = None, progress: bool = False) -> SWGModel:
  """Trains the joint (a, w) diffusion model (Algorithm 1) and returns the EMA policy.

  config: a full SWG config (`get_config(...)`; default "smoke"); uses config.diffusion and config.sampling.
  key / seed: PRNG key (or int seed; default config.seeds[0]). critic: kept in the model for SWG-R's Q selection.
  """
  config = config if config is not None else get_config("smoke")
  observations, actions, w = validate_inputs(observations, actions, weights)
  warn_above_w_max(w, config)
  key = as_key(key, config.seeds[0] if seed is None else seed)
  data = WeightedData(observations=jnp.asarray(observations), actions=jnp.asarray(actions), weights=jnp.asarray(w))
  model = fit_seeds(data, key[None], config, critic=critic, workdir=workdir, progress=progress)
  return model.seed(0)


def fit_seeds(data: WeightedData, keys: jax.Array, config, *, critic=None, workdir=None, progress=False,
               model_callback=None, callback_every: int = 0, step_fn=None, data_per_seed=None,
               seed_ids=None) -> SWGModel:
  """The diffusion stage for every seed (keys [N, 2]); data.weights is [N_seeds, N] when it has a seed axis.
  model_callback(step, seed-stacked SWGModel): see `swg_jax.pipeline.train`. A population's members
  (`swg_jax.pipeline.train`) come with their own step_fn and data_per_seed, and data that may be member `Rows`."""
  dc = config.diffusion
  rows = rows_of(data[0] if isinstance(data, tuple) else data)
  obs_dim, action_dim = rows.observations.shape[-1], rows.actions.shape[-1]
  init_keys, run_keys = seed_stage_keys(keys, 0), seed_stage_keys(keys, 1)
  state = init_seeds(lambda k: model_lib.init_diffusion(k, obs_dim, action_dim, dc), init_keys)
  per_seed = (data_per_seed if data_per_seed is not None else
              WeightedData(observations=False, actions=False, weights=data.weights.ndim == 2))
  to_model = lambda state: SWGModel(
      params=state.ema_params, critic=critic, net=model_lib.make_network(action_dim, dc),
      schedule=model_lib.make_schedule(dc), obs_dim=obs_dim, action_dim=action_dim,
      sampling_defaults=tuple(sorted(config.sampling.to_dict().items())))
  callback = None if model_callback is None else lambda i, state: model_callback(i, to_model(state))
  trainer = Trainer(step_fn or model_lib.make_diffusion_step(action_dim, dc), num_steps=int(dc.num_steps),
                    steps_per_call=config.steps_per_call, name="diffusion", workdir=workdir, progress=progress,
                    checkpoint_every=config.checkpoint_every, data_per_seed=per_seed, callback=callback,
                    callback_every=callback_every, suspects={"diffusion.lr": dc.lr},
                    max_runtime_s=config.get("max_runtime_s", 0.0),
                    seed_ids=seed_ids if seed_ids is not None else
                    (config.seeds if len(config.seeds) == keys.shape[0] else None))
  return to_model(trainer.run(state, data, run_keys))


# The sampling options: static, each value compiles its own sampler.
SAMPLING_OPTIONS = ("guidance_scale", "sampler", "num_steps", "order", "temperature", "num_candidates", "select",
                    "w_min", "w_max", "w_prediction")


@functools.partial(jax.jit, static_argnames=SAMPLING_OPTIONS)
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
  check_guidance(opts["guidance_scale"])
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
  sampler ("ddpm" | "dpm"), num_steps (DPM-Solver++ steps), order, temperature (default 0, the official
  evaluation: z_T = 0 and no noise, so every call with one observation returns the same action, whatever the key;
  1.0 samples the guided distribution),
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
  return _sample(model, observations, as_key(key, None), **opts)


def act(model: SWGModel, observations, key, **overrides) -> jax.Array:
  """Actions for observations [B, S] (or one observation [S] -> [A]) with the model's default sampling options."""
  observations = np.asarray(observations, np.float32)
  single = observations.ndim == 1
  actions, _ = sample(model, observations[None] if single else observations, key, **overrides)
  return actions[0] if single else actions


@functools.partial(jax.jit, static_argnames=SAMPLING_OPTIONS)
def seed_actions(model: SWGModel, observations, key, **opts) -> jax.Array:
  """Seed-stacked model, observations [num_seeds, B, S] -> actions [num_seeds, B, A]: each seed samples with its own
  parameters and key. opts: every option of `sampling_options`, already checked."""
  keys = jax.random.split(key, observations.shape[0])
  one_seed = lambda m, obs, k: _sample(m, obs.astype(jnp.float32), k, **opts)[0]
  return jax.vmap(one_seed)(model, observations, keys)


def seed_policy(model: SWGModel, **overrides):
  """For a seed-stacked model: policy(obs [num_seeds, B, S], key) -> actions [num_seeds, B, A] (`seed_actions`; the
  options are checked once, here). The parameters are an argument of the compiled program, not constants in it."""
  return functools.partial(seed_actions, model, **sampling_options(model, **overrides))


