"""SWG's full pipeline (Algorithm 3 then 1) for every seed of a config, and the main job with evaluation."""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from common import iql
from common import run as run_lib
from common.offline_data import OfflineData
from common.training import Trainer, init_seeds, seed_keys, seed_stage_keys
from swg_jax import configs, weights as weights_lib
from swg_jax.inputs import warn_above_w_max
from swg_jax.model import WeightedData
from swg_jax.policy import SWGModel, fit_seeds, seed_policy


class TrainResult(NamedTuple):
  """Seed-stacked: model and critic have a leading seed axis; weights and advantages are [num_seeds, N]."""

  model: SWGModel
  critic: iql.CriticState
  weights: np.ndarray
  advantages: np.ndarray


def train(config, data: OfflineData, *, workdir: str | None = None, model_callback=None,
          callback_every: int = 0) -> TrainResult:
  """Algorithm 3 then 1 for every seed in config.seeds, vmapped: IQL critic -> weights over the dataset (one set per
  seed, from that seed's critic) -> joint diffusion. data: preprocessed OfflineData. With a workdir every stage
  checkpoints and an interrupted run resumes (the weights are recomputed from the restored critic).
  model_callback(step, model): called with the seed-stacked `SWGModel` (EMA parameters, with the critic) of the
  diffusion stage at every multiple of `callback_every` and at its last step (`common.training.Trainer`'s
  callback), e.g. to evaluate on the way."""
  if data.observations.ndim != 2 or data.actions.ndim != 2:
    raise ValueError(f"data.observations [N, S] and data.actions [N, A] needed, got {data.observations.shape}, "
                     f"{data.actions.shape}")
  keys = seed_keys(config.seeds)
  cc = config.critic
  critic = init_seeds(lambda k: iql.init_critic(k, data.obs_dim, data.action_dim, cc), seed_stage_keys(keys, 0))
  critic = Trainer(iql.make_critic_step(cc), num_steps=int(cc.num_steps), steps_per_call=config.steps_per_call,
                   name="critic", workdir=workdir, progress=config.progress, checkpoint_every=config.checkpoint_every,
                   **run_lib.guard_kwargs(config, {"critic.lr": cc.lr})).run(critic, data, seed_stage_keys(keys, 1))
  w, adv = weights_lib.compute_weights(critic, data.observations, data.actions, config.weights, seed_axis=True)
  warn_above_w_max(w, config)
  weighted = WeightedData(observations=data.observations, actions=data.actions, weights=jnp.asarray(w))
  model = fit_seeds(weighted, seed_stage_keys(keys, 2), config, critic=critic, workdir=workdir,
                     progress=config.progress, model_callback=model_callback, callback_every=callback_every)
  return TrainResult(model=model, critic=critic, weights=w, advantages=adv)


def train_and_evaluate(config, workdir: str | None = None, *, download: bool = True) -> dict:
  """The main job: load config.dataset, train every seed (resuming in workdir), evaluate SWG (config.sampling) and
  SWG-R (config.resampling) in the dataset's env, write eval_swg.json, eval_swgr.json, plots and summary.json.
  Returns the summary. Raises common.data.DatasetError / common.run.RunError with a message for the user."""
  run_lib.check_config(config)  # before any work: a refused config leaves nothing behind
  configs.note_dataset_defaults(config)
  data, info = run_lib.load_run_data(config, download=download)
  with run_lib.run_folder(workdir, config, "swg"):  # after loading: a dataset that fails leaves no run behind
    result = train(config, data, workdir=workdir)
    policies = {"swg": {}, "swgr": dict(config.resampling)}
    evals = {}
    for name, overrides in policies.items():
      evals[name] = run_lib.load_eval(workdir, name) or run_lib.evaluate_policy(
          seed_policy(result.model, **overrides), config, info, workdir, name)
    return run_lib.write_summary(workdir, "swg", config, info, evals)


