"""SRPO (Score Regularized Policy Optimization, Chen et al. ICLR 2024) in JAX.

Pipeline: IQL critic (common.iql) -> diffusion behaviour model (srpo_jax.behavior) -> score-regularised Dirac
policy (srpo_jax.policy). Every stage is a pure step function run by `common.training.Trainer`, seeds vmapped.

  config = srpo_jax.configs.get_config("hopper-medium-v2:paper")
  result = srpo_jax.train(config, data)          # data: common.data.OfflineData
  actions = srpo_jax.act(result.policy.seed(0), observations)
  summary = srpo_jax.train_and_evaluate(config, workdir)   # + dataset loading, evaluation, report
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from common import iql, population
from common import run as run_lib
from common.offline_data import OfflineData, map_rows
from common.networks import TwinQ, compute_dtype
from common.training import Trainer, init_seeds, seed_keys, seed_stage_keys
from srpo_jax import behavior as behavior_lib, configs, drift as drift_lib
from srpo_jax import policy as policy_lib
from srpo_jax.behavior import behavior_eps_fn, sample_behavior
from srpo_jax.configs import get_config
from srpo_jax.policy import NonFiniteQGradError, Policy, act, extract_policy, seed_act

__all__ = ["get_config", "fit_behavior", "extract_policy", "train", "train_and_evaluate", "act", "seed_act",
           "behavior_eps_fn", "sample_behavior", "Policy", "SRPOResult", "NonFiniteQGradError", "critic_q_fn"]


class _Arrays(flax.struct.PyTreeNode):
  observations: jax.Array
  actions: jax.Array


def fit_behavior(observations, actions, config, key: jax.Array, *, steps_per_call: int = 1000,
                 progress: bool = False) -> TrainState:
  """Train the diffusion behaviour model on (s [N, S], a [N, A]) for config.num_steps (config: the `behavior`
  sub-config). Returns the (unstacked) TrainState; `behavior_eps_fn(state.params, apply_fn=state.apply_fn)` gives
  eps(a_t, t, s)."""
  observations = jnp.asarray(observations, jnp.float32)
  actions = jnp.asarray(actions, jnp.float32)
  if observations.ndim != 2 or actions.ndim != 2 or observations.shape[0] != actions.shape[0]:
    raise ValueError(f"observations [N, S] and actions [N, A] needed, got {observations.shape} and {actions.shape}")
  init_key, run_key = jax.random.split(key)
  state = init_seeds(lambda k: behavior_lib.init_behavior(k, observations.shape[1], actions.shape[1], config),
                     init_key[None])
  state = Trainer(behavior_lib.make_behavior_step(config), num_steps=int(config.num_steps),
                  steps_per_call=steps_per_call, name="behavior", progress=progress).run(
                      state, _Arrays(observations, actions), run_key[None])
  return jax.tree.map(lambda x: x[0], state)


def critic_q_fn(q_params, hidden=(256, 256)):
  """Qbar(s, a) = mean of the twin (target) Qs, the Q that SRPO's policy follows.  -> [B]"""
  net = TwinQ(hidden=tuple(hidden))
  return lambda s, a: jnp.mean(net.apply(q_params, s, a), axis=0)


class SRPOResult(flax.struct.PyTreeNode):
  """Seed-stacked results of `train`: critic (iql.CriticState), behavior (TrainState), policy (Policy, stacked)."""

  critic: Any
  behavior: Any
  policy: Policy


def train(config, data, workdir: str | None = None, *, members: list[population.Member] | None = None,
          policy_callback=None, callback_every: int = 0, drift_states=None, on_drift=None) -> SRPOResult:
  """Critic -> behaviour -> policy for every seed in config.seeds (vmapped), with checkpoints/resume in workdir.

  data: an OfflineData, or {dataset name: OfflineData} of one obs and action dim for a population. members: the runs
  of a population (`common.population`: seed × dataset × values of swept fields such as "policy.beta"), trained as
  one program; default one per seed of config.seeds on `data`. Members that agree on what a stage depends on share
  its training (a beta sweep trains one critic and one behaviour model per seed). The result is member-stacked.
  policy_callback(step, policy): called with the member-stacked `Policy` of the policy stage at every multiple of
  `callback_every` and at its last step (e.g. to evaluate on the way; `common.training.Trainer`'s callback).
  on_drift(step, {metric: [members]}): called at the same steps with every member's drift (`srpo_jax.drift`) on
  its dataset's states in drift_states ({dataset: [B, S]})."""
  datasets, members, paths, shared = population.prepare(config, data, members)
  first = next(iter(datasets.values()))
  obs_dim, action_dim = first.obs_dim, first.action_dim
  common = dict(steps_per_call=config.steps_per_call, workdir=workdir, progress=config.progress,
                checkpoint_every=config.checkpoint_every)
  keys_of = lambda plan, i: seed_stage_keys(seed_keys([u.seed for u in plan.units]), i)
  guard = lambda plan, suspects: {**run_lib.guard_kwargs(config, suspects), "seed_ids": [u.seed for u in plan.units]}

  critic_plan = population.plan_stage(members, paths_in(paths, "critic"))
  critic_data, critic_flags = population.step_input(shared, critic_plan.units, paths_in(paths, "critic"))
  critic = init_seeds(lambda k: iql.init_critic(k, obs_dim, action_dim, config.critic), keys_of(critic_plan, 0))
  critic = Trainer(population.with_values(iql.make_critic_step, config.critic, "critic", paths),
                   num_steps=int(config.critic.num_steps), name="critic", data_per_seed=critic_flags, **common,
                   **guard(critic_plan, {"critic.lr": config.critic.lr})).run(critic, critic_data,
                                                                              keys_of(critic_plan, 1))

  beh_plan = population.plan_stage(members, paths_in(paths, "behavior"))
  beh_data, beh_flags = population.step_input(shared, beh_plan.units, paths_in(paths, "behavior"))
  beh = init_seeds(lambda k: behavior_lib.init_behavior(k, obs_dim, action_dim, config.behavior), keys_of(beh_plan, 2))
  beh = Trainer(population.with_values(behavior_lib.make_behavior_step, config.behavior, "behavior", paths),
                num_steps=int(config.behavior.num_steps), name="behavior", data_per_seed=beh_flags, **common,
                **guard(beh_plan, {"behavior.lr": config.behavior.lr})).run(beh, beh_data, keys_of(beh_plan, 3))

  pcfg = config.policy
  net = behavior_lib.behavior_net(action_dim, config.behavior)
  twin = TwinQ(hidden=tuple(config.critic.hidden), dtype=compute_dtype(config.critic.get("compute_dtype", "float32")))
  eps_apply = lambda p, a_t, t, s: net.apply(p, a_t, t, s, train=False)
  q_apply = lambda p, s, a: jnp.mean(twin.apply(p, s, a), axis=0)

  def init_stage(k, bp, qp):
    return policy_lib.PolicyStageState(policy=policy_lib.init_policy(k, obs_dim, action_dim, pcfg),
                                       behavior_params=bp, q_params=qp)

  policy_plan = population.plan_stage(members, paths_in(paths, "policy"), upstream=(critic_plan, beh_plan))
  reps = [policy_plan.first_member(u) for u in range(len(policy_plan))]  # each unit's critic and behaviour model
  pick = lambda plan, tree: jax.tree.map(lambda x: x[jnp.asarray([int(plan.index[r]) for r in reps])], tree)
  state = jax.vmap(init_stage)(keys_of(policy_plan, 4), pick(beh_plan, beh.params),
                               pick(critic_plan, critic.q_target_params))
  one = jax.tree.map(lambda x: x[0], state)
  probe = first.observations[: min(256, first.size)]
  policy_lib.check_action_dims(lambda a, t, s: eps_apply(one.behavior_params, a, t, s), obs_dim, action_dim)
  probe_actions = one.policy.apply_fn(one.policy.params, probe)
  policy_lib.check_q_grad(lambda s, a: q_apply(one.q_params, s, a), probe, probe_actions, pcfg.normalize_q_grad)
  policy_lib.check_behavior_eps(lambda a, t, s: eps_apply(one.behavior_params, a, t, s), probe, probe_actions)
  step = population.with_values(lambda c: policy_lib.make_policy_step(eps_apply, q_apply, c), pcfg, "policy", paths)
  to_policy = lambda state: Policy(params=state.policy.params, action_dim=action_dim, hidden=pcfg.hidden,
                                   num_layers=pcfg.num_layers, stacked=True)
  members_policy = lambda state: to_policy(state).replace(params=policy_plan.gather(state.policy.params))

  def callback(i, state):
    if policy_callback is not None:
      policy_callback(i, members_policy(state))
    if on_drift is not None:
      on_drift(i, drift_of_members(members, policy_plan.gather(state.policy.params),
                                   policy_plan.gather(state.behavior_params), policy_plan.gather(state.q_params),
                                   drift_states, config, action_dim))

  if policy_callback is None and on_drift is None:
    callback = None
  states, flags = population.step_input(shared, policy_plan.units, paths_in(paths, "policy"),
                                        lambda rows: map_rows(rows, lambda d: d.observations))
  state, _ = policy_lib.run_policy_stage(step, state, states, keys_of(policy_plan, 5), pcfg, callback=callback,
                                         callback_every=callback_every, data_per_seed=flags, **common,
                                         **guard(policy_plan, {"policy.lr": pcfg.lr, "policy.beta": pcfg.beta}))
  return SRPOResult(critic=critic_plan.gather(critic), behavior=beh_plan.gather(beh), policy=members_policy(state))


def paths_in(paths, section: str) -> list[str]:
  return [p for p in paths if p.startswith(section + ".")]


def train_and_evaluate(config, workdir: str | None = None, *, download: bool = True) -> dict:
  """The main job: load config.dataset, train every seed (resuming in workdir), evaluate the policies in the
  dataset's env, write eval_srpo.json, plots and summary.json. Returns the summary. Raises common.data.DatasetError /
  common.run.RunError with a message for the user."""
  run_lib.check_config(config)  # before any work: a refused config leaves nothing behind
  configs.note_dataset_defaults(config)
  data, info = run_lib.load_run_data(config, download=download)
  with run_lib.run_folder(workdir, config, "srpo"):  # after loading: a dataset that fails leaves no run behind
    policy = train(config, data, workdir=workdir).policy
    evaluation = run_lib.load_eval(workdir, "srpo") or run_lib.evaluate_policy(
        lambda obs, key: seed_act(policy, obs), config, info, workdir, "srpo")
    return run_lib.write_summary(workdir, "srpo", config, info, {"srpo": evaluation})


def train_and_evaluate_population(settings, workdir: str | None = None, *, download: bool = True) -> dict:
  """Several runs as one program (`common.run.populations`): each setting's dataset and swept values, the same
  seeds. Writes settings/<name>/ (eval_srpo.json and summary.json, with the policy's drift) for every setting and
  report.md beside them. Returns {"settings": [summary, ...]}."""
  from common.run import populations

  for s in settings:
    run_lib.check_config(s.config)
    configs.note_dataset_defaults(s.config)
  datasets, infos = run_lib.load_population_data([s.config for s in settings], download=download)
  members = populations.members(settings, configs.SWEEPABLE)
  base = settings[0].config
  with run_lib.run_folder(workdir, populations.population_config(settings), "srpo"):
    parts = populations.member_slices(settings)
    final = {}

    def on_drift(step, values):  # each setting's drift curve: settings/<name>/metrics_drift.jsonl
      final.update(values)
      for s, part in zip(settings, parts):
        populations.append_setting_metrics(workdir, s, "drift", step, {k: v[part] for k, v in values.items()})

    num_policy_steps = int(base.policy.num_steps)
    result = train(base, datasets, workdir=workdir, members=members, callback_every=max(1, num_policy_steps // 4),
                   drift_states=drift_states(datasets), on_drift=on_drift)
    if not final:  # the policy stage had finished earlier: its last drift, once more
      on_drift(num_policy_steps, drift_of_members(members, result.policy.params, result.behavior.params,
                                                  result.critic.q_target_params, drift_states(datasets), base,
                                                  result.policy.action_dim))
    shared = {"stage_seconds": run_lib.stage_seconds(workdir)} if workdir else {}  # the one program's, all settings'
    summaries = []
    for s, part in zip(settings, parts):
      folder = populations.setting_dir(workdir, s)
      policy = result.policy.replace(params=jax.tree.map(lambda x: x[part], result.policy.params))
      evaluation = run_lib.load_eval(folder, "srpo") or run_lib.evaluate_policy(
          lambda obs, key, p=policy: seed_act(p, obs), s.config, infos[s.config.dataset], folder, "srpo")
      drift = {k: {"mean": float(np.mean(v[part])), "std": float(np.std(v[part])), "per_seed": v[part]}
               for k, v in final.items()}
      summaries.append(run_lib.write_summary(folder, "srpo", s.config, infos[s.config.dataset],
                                             {"srpo": evaluation}, extra={"drift": drift, **shared}))
    text = populations.report(settings, [{**x, **x["drift"]} for x in summaries], extra=drift_lib.DRIFT_METRICS)
    run_lib.write_population_report(workdir, text)
    return {"settings": summaries, "report": text}


def drift_of_members(members, policy_params, behavior_params, q_params, states: dict, config,
                     action_dim: int) -> dict[str, list[float]]:
  """Every member's drift (`srpo_jax.drift.DRIFT_METRICS`) on its own dataset's states ({dataset: [B, S]}), given
  the member-stacked parameters of its policy, behaviour model and critic Q."""
  net = behavior_lib.behavior_net(action_dim, config.behavior)
  twin = TwinQ(hidden=tuple(config.critic.hidden), dtype=compute_dtype(config.critic.get("compute_dtype", "float32")))
  dirac = policy_lib.policy_net(action_dim, config.policy)
  names = list(states)
  stacked = jnp.stack([jnp.asarray(states[n]) for n in names])
  which = jnp.asarray([names.index(m.dataset) for m in members])
  betas = jnp.asarray([m.value("policy.beta", config.policy.beta) for m in members], jnp.float32)

  def one(policy_p, behavior_p, q_p, dataset, beta):
    pcfg = population.ConfigView(config.policy, {"beta": beta})
    return drift_lib.drift_metrics(
        lambda s: dirac.apply(policy_p, s), lambda a_t, t, s: net.apply(behavior_p, a_t, t, s, train=False),
        lambda s, a: jnp.mean(twin.apply(q_p, s, a), axis=0), stacked[dataset], jax.random.PRNGKey(0), pcfg)

  values = jax.jit(jax.vmap(one))(policy_params, behavior_params, q_params, which, betas)
  return {k: [float(x) for x in v] for k, v in values.items()}


def drift_states(datasets: dict, num_states: int = 256) -> dict:
  """The states drift is measured on: the first `num_states` of each dataset (as many of each)."""
  n = min([num_states] + [d.size for d in datasets.values()])
  return {name: d.observations[:n] for name, d in datasets.items()}
