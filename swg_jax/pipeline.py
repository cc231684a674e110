"""SWG's full pipeline (Algorithm 3 then 1) for every seed of a config, and the main job with evaluation."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from common import iql
from common import run as run_lib
from common import population
from common.offline_data import OfflineData, map_rows
from common.training import Trainer, init_seeds, seed_keys, seed_stage_keys
from swg_jax import configs, model as model_lib, weights as weights_lib
from swg_jax.inputs import warn_above_w_max
from swg_jax.model import WeightedData
from swg_jax.policy import SWGModel, fit_seeds, seed_policy


class TrainResult(NamedTuple):
  """Seed-stacked: model and critic have a leading seed axis; weights and advantages are [num_seeds, N]."""

  model: SWGModel
  critic: iql.CriticState
  weights: np.ndarray
  advantages: np.ndarray


def train(config, data, *, workdir: str | None = None, members: list[population.Member] | None = None,
          model_callback=None, callback_every: int = 0) -> TrainResult:
  """Algorithm 3 then 1 for every seed in config.seeds, vmapped: IQL critic -> weights over the dataset (one set per
  seed, from that seed's critic) -> joint diffusion. data: preprocessed OfflineData, or {dataset: OfflineData} of
  one obs and action dim for a population. members: the runs of a population (`common.population`), trained as one
  program, sharing the stages they agree on; default one per seed of config.seeds. With a workdir every stage
  checkpoints and an interrupted run resumes (the weights are recomputed from the restored critic).
  model_callback(step, model): called with the seed-stacked `SWGModel` (EMA parameters, with the critic) of the
  diffusion stage at every multiple of `callback_every` and at its last step (`common.training.Trainer`'s
  callback), e.g. to evaluate on the way. The result is member-stacked (weights [members, rows of all datasets])."""
  datasets, members, paths, shared = population.prepare(config, data, members)
  first = next(iter(datasets.values()))
  cc = config.critic
  critic_paths = [p for p in paths if p.startswith("critic.")]
  critic_plan = population.plan_stage(members, critic_paths)
  keys = seed_keys([u.seed for u in critic_plan.units])
  critic_data, critic_flags = population.step_input(shared, critic_plan.units, critic_paths)
  critic = init_seeds(lambda k: iql.init_critic(k, first.obs_dim, first.action_dim, cc), seed_stage_keys(keys, 0))
  critic = Trainer(population.with_values(iql.make_critic_step, cc, "critic", paths), num_steps=int(cc.num_steps),
                   steps_per_call=config.steps_per_call, name="critic", workdir=workdir, progress=config.progress,
                   checkpoint_every=config.checkpoint_every, data_per_seed=critic_flags,
                   **{**run_lib.guard_kwargs(config, {"critic.lr": cc.lr}),
                      "seed_ids": [u.seed for u in critic_plan.units]}).run(critic, critic_data,
                                                                           seed_stage_keys(keys, 1))
  rows = shared.data
  model_paths = [p for p in paths if p.startswith(("diffusion.", "weights."))]
  model_plan = population.plan_stage(members, model_paths, upstream=(critic_plan,))
  if not model_paths and len(model_plan) == len(critic_plan):  # one weighting per critic: as a plain run
    w, adv = weights_lib.compute_weights(critic, rows.observations, rows.actions, config.weights, seed_axis=True)
  else:
    w, adv = unit_weights(critic, critic_plan, model_plan, rows, config.weights)
  warn_above_w_max(w, config)
  weighted = lambda r: WeightedData(observations=r.observations, actions=r.actions, weights=jnp.asarray(w))
  model_data, model_flags = population.step_input(shared, model_plan.units, [p for p in model_paths
                                                                             if p.startswith("diffusion.")],
                                                  lambda r: map_rows(r, weighted),
                                                  data_flag=WeightedData(False, False, True))
  unit_critics = jax.tree.map(lambda x: x[jnp.asarray(_upstream(model_plan, critic_plan))], critic)
  step = population.with_values(lambda c: model_lib.make_diffusion_step(first.action_dim, c), config.diffusion,
                                "diffusion", paths)
  model_keys = seed_keys([u.seed for u in model_plan.units])
  to_members = lambda model: model.replace(params=model_plan.gather(model.params),
                                           critic=model_plan.gather(model.critic))
  callback = None if model_callback is None else lambda i, model: model_callback(i, to_members(model))
  model = fit_seeds(model_data, seed_stage_keys(model_keys, 2), config, critic=unit_critics, workdir=workdir,
                    progress=config.progress, model_callback=callback, callback_every=callback_every,
                    step_fn=step, data_per_seed=model_flags, seed_ids=[u.seed for u in model_plan.units])
  return TrainResult(model=to_members(model), critic=critic_plan.gather(critic),
                     weights=np.asarray(w)[model_plan.index], advantages=np.asarray(adv)[model_plan.index])


def _upstream(plan: population.StagePlan, upstream: population.StagePlan) -> list[int]:
  """For each unit of `plan`, the unit of the `upstream` stage it was trained on."""
  return [int(upstream.index[plan.first_member(u)]) for u in range(len(plan))]


def unit_weights(critic, critic_plan, model_plan, rows, weights_config) -> tuple[np.ndarray, np.ndarray]:
  """(weights, advantages) [model units, rows]: each unit's critic's advantages over every row, weighted with the
  unit's own values of the weights.* fields."""
  adv = weights_lib.compute_advantages(critic, rows.observations, rows.actions,
                                       chunk_size=weights_config.get("chunk_size", 16384), seed_axis=True)
  weights_lib.check_advantages(adv)
  critic_of = _upstream(model_plan, critic_plan)
  ws = []
  for u, unit in enumerate(model_plan.units):
    cfg = population.ConfigView(weights_config, population.section_overrides(dict(unit.values), "weights"))
    ws.append(np.asarray(weights_lib.weights_from_advantage(
        jnp.asarray(adv[critic_of[u]]), cfg.kind, expectile=cfg.expectile, temperature=cfg.temperature,
        clip_min=cfg.clip_min, clip_max=cfg.clip_max, hard_threshold=cfg.hard_threshold), np.float32))
  return np.stack(ws), adv[critic_of]


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


def train_and_evaluate_population(settings, workdir: str | None = None, *, download: bool = True) -> dict:
  """Several runs as one program (`common.run.populations`): each setting's dataset and swept values (a critic's or
  the weights' fields, or only the sampling's: the guidance scale, the temperature), the same seeds. Writes
  settings/<name>/ (eval_swg.json, eval_swgr.json, summary.json) for every setting and report.md beside them.
  Returns {"settings": [summary, ...]}."""
  from common.run import populations

  for s in settings:
    run_lib.check_config(s.config)
    configs.note_dataset_defaults(s.config)
  datasets, infos = run_lib.load_population_data([s.config for s in settings], download=download)
  members = populations.members(settings, configs.SWEEPABLE)
  with run_lib.run_folder(workdir, populations.population_config(settings), "swg"):
    result = train(settings[0].config, datasets, workdir=workdir, members=members)
    shared = {"stage_seconds": run_lib.stage_seconds(workdir)} if workdir else {}  # the one program's, all settings'
    summaries = []
    for s, part in zip(settings, populations.member_slices(settings)):
      folder = populations.setting_dir(workdir, s)
      model = jax.tree.map(lambda x: x[part], result.model)
      sampling = dict(s.config.sampling)
      evals = {}
      for name, overrides in {"swg": sampling, "swgr": {**sampling, **dict(s.config.resampling)}}.items():
        evals[name] = run_lib.load_eval(folder, name) or run_lib.evaluate_policy(
            seed_policy(model, **overrides), s.config, infos[s.config.dataset], folder, name)
      summaries.append(run_lib.write_summary(folder, "swg", s.config, infos[s.config.dataset], evals, extra=shared))
    text = populations.report(settings, summaries)
    run_lib.write_population_report(workdir, text)
    return {"settings": summaries, "report": text}

