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
from flax.training.train_state import TrainState

from common import iql
from common import run as run_lib
from common.offline_data import OfflineData
from common.networks import TwinQ, compute_dtype
from common.training import Trainer, init_seeds, seed_keys, seed_stage_keys
from srpo_jax import behavior as behavior_lib, configs
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


def train(config, data: OfflineData, workdir: str | None = None, *, policy_callback=None,
          callback_every: int = 0) -> SRPOResult:
  """Critic -> behaviour -> policy for every seed in config.seeds (vmapped), with checkpoints/resume in workdir.

  policy_callback(step, policy): called with the seed-stacked `Policy` of the policy stage at every multiple of
  `callback_every` and at its last step (e.g. to evaluate on the way; `common.training.Trainer`'s callback)."""
  if data.observations.ndim != 2 or data.actions.ndim != 2:
    raise ValueError(f"data.observations [N, S] and data.actions [N, A] needed, got {data.observations.shape}, "
                     f"{data.actions.shape}")
  obs_dim, action_dim = data.obs_dim, data.action_dim
  keys = seed_keys(config.seeds)
  stage_keys = lambda i: seed_stage_keys(keys, i)
  common = dict(steps_per_call=config.steps_per_call, workdir=workdir, progress=config.progress,
                checkpoint_every=config.checkpoint_every)

  critic = init_seeds(lambda k: iql.init_critic(k, obs_dim, action_dim, config.critic), stage_keys(0))
  critic = Trainer(iql.make_critic_step(config.critic), num_steps=int(config.critic.num_steps), name="critic",
                   **common, **run_lib.guard_kwargs(config, {"critic.lr": config.critic.lr})).run(
                       critic, data, stage_keys(1))

  beh = init_seeds(lambda k: behavior_lib.init_behavior(k, obs_dim, action_dim, config.behavior), stage_keys(2))
  beh = Trainer(behavior_lib.make_behavior_step(config.behavior), num_steps=int(config.behavior.num_steps),
                name="behavior", **common, **run_lib.guard_kwargs(config, {"behavior.lr": config.behavior.lr})).run(
                    beh, data, stage_keys(3))

  pcfg = config.policy
  net = behavior_lib.behavior_net(action_dim, config.behavior)
  twin = TwinQ(hidden=tuple(config.critic.hidden), dtype=compute_dtype(config.critic.get("compute_dtype", "float32")))
  eps_apply = lambda p, a_t, t, s: net.apply(p, a_t, t, s, train=False)
  q_apply = lambda p, s, a: jnp.mean(twin.apply(p, s, a), axis=0)

  def init_stage(k, bp, qp):
    return policy_lib.PolicyStageState(policy=policy_lib.init_policy(k, obs_dim, action_dim, pcfg),
                                       behavior_params=bp, q_params=qp)

  state = jax.vmap(init_stage)(stage_keys(4), beh.params, critic.q_target_params)
  first = jax.tree.map(lambda x: x[0], state)
  probe = data.observations[: min(256, data.size)]
  policy_lib.check_action_dims(lambda a, t, s: eps_apply(first.behavior_params, a, t, s), obs_dim, action_dim)
  probe_actions = first.policy.apply_fn(first.policy.params, probe)
  policy_lib.check_q_grad(lambda s, a: q_apply(first.q_params, s, a), probe, probe_actions, pcfg.normalize_q_grad)
  policy_lib.check_behavior_eps(lambda a, t, s: eps_apply(first.behavior_params, a, t, s), probe, probe_actions)
  step = policy_lib.make_policy_step(eps_apply, q_apply, pcfg)
  to_policy = lambda state: Policy(params=state.policy.params, action_dim=action_dim, hidden=pcfg.hidden,
                                   num_layers=pcfg.num_layers, stacked=True)
  callback = None if policy_callback is None else lambda i, state: policy_callback(i, to_policy(state))
  state, _ = policy_lib.run_policy_stage(step, state, data.observations, stage_keys(5), pcfg, callback=callback,
                                         callback_every=callback_every, **common,
                                         **run_lib.guard_kwargs(config, {"policy.lr": pcfg.lr, "policy.beta": pcfg.beta}))
  return SRPOResult(critic=critic, behavior=beh, policy=to_policy(state))


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
