"""SWG — Diffusion Self-Weighted Guidance (Tagle et al., TMLR 2025) in JAX.

  model = swg_jax.fit(observations, actions, weights, config, seed=0)       # joint (a, w) diffusion
  actions, w = swg_jax.sample(model, observations, key, guidance_scale=1.0, temperature=1.0)  # guided samples
  # (the default temperature 0 is deterministic: one observation always gives the same action)
  result = swg_jax.train(config, data)              # critic -> weights -> diffusion, every seed of config.seeds
  summary = swg_jax.train_and_evaluate(config, workdir)   # + dataset loading, SWG / SWG-R evaluation, report
  swg_jax.train_and_evaluate_population(settings, workdir)  # several runs (datasets x swept values) as one program

Shapes: observations [N, S] (S may be 0: a bandit), actions [N, A] in [-1, 1], weights [N] >= 0.
"""
from swg_jax import configs, model, sampling, weights
from swg_jax.configs import get_config
from swg_jax.inputs import validate_inputs
from swg_jax.model import WeightedData
from swg_jax.pipeline import TrainResult, train, train_and_evaluate, train_and_evaluate_population
from swg_jax.policy import SWGModel, act, fit, sample, sampling_options, seed_policy
from swg_jax.sampling import guided_eps_fn, sample_z, select_best

__all__ = ["SWGModel", "TrainResult", "WeightedData", "act", "configs", "fit", "get_config", "guided_eps_fn",
           "sample", "sample_z", "sampling_options", "seed_policy", "select_best", "train", "train_and_evaluate",
           "train_and_evaluate_population", "validate_inputs"]
