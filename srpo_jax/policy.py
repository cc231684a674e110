"""Score-regularised extraction of a deterministic (Dirac) policy, the core of SRPO.

For a = pi_theta(s), t ~ U(t_min, t_max), eps ~ N(0, I), a_t = alpha_t a + sigma_t eps:

  loss = mean_B( w(t) <sg(eps_psi(a_t, t, s)) [- eps], a> - beta <sg(grad_a Qbar(s, a)), a> )

whose gradient in theta is (w(t) (eps_psi - [eps]) - beta grad_a Q) da/dtheta: the KL(pi || mu) gradient
ensembled over diffusion times (grad_a log mu_t = -eps_psi / sigma_t) against the Q gradient. Qbar is the mean of
the two target Qs; with `normalize_q_grad` (AntMaze) grad_a Q is divided per sample by its RMS over action dims.
Weightings w(t): "sigma2" (sigma_t^2, default), "one", "alpha_over_sigma"; t_sampling "uniform" or "fixed"
(t = fixed_t for every sample).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from common.diffusion import noise
from common.networks import DiracPolicy
from common.offline_data import row_indices, rows_of
from common.training import Trainer, init_seeds
from srpo_jax.behavior import SCHEDULE, EpsFn

QFn = Callable[[jax.Array, jax.Array], jax.Array]  # q(s [B, S], a [B, A]) -> [B]
WEIGHTINGS = ("sigma2", "one", "alpha_over_sigma")
T_SAMPLINGS = ("uniform", "fixed")


class PolicyStageState(flax.struct.PyTreeNode):
  """The policy being trained plus the frozen behaviour / critic parameters it reads (None for closures)."""

  policy: TrainState
  behavior_params: Any = None
  q_params: Any = None


def policy_net(action_dim: int, config) -> DiracPolicy:
  return DiracPolicy(action_dim=action_dim, hidden=config.hidden, num_layers=config.num_layers)


def policy_optimizer(config) -> optax.GradientTransformation:
  """Adam with cosine decay of the lr to 0 over config.num_steps (config.lr_schedule == "cosine") or constant."""
  if config.lr_schedule == "cosine":
    lr = optax.cosine_decay_schedule(config.lr, max(int(config.num_steps), 1), alpha=0.0)
  elif config.lr_schedule == "constant":
    lr = config.lr
  else:
    raise ValueError(f"policy.lr_schedule must be 'cosine' or 'constant', got {config.lr_schedule!r}")
  return optax.adam(lr)


def init_policy(key: jax.Array, obs_dim: int, action_dim: int, config) -> TrainState:
  net = policy_net(action_dim, config)
  params = net.init(key, jnp.zeros((1, obs_dim)))
  return TrainState.create(apply_fn=net.apply, params=params, tx=policy_optimizer(config))


def _check_config(config) -> None:
  if config.weighting not in WEIGHTINGS:
    raise ValueError(f"policy.weighting must be one of {WEIGHTINGS}, got {config.weighting!r}")
  if config.t_sampling not in T_SAMPLINGS:
    raise ValueError(f"policy.t_sampling must be one of {T_SAMPLINGS}, got {config.t_sampling!r}")


def weight(t: jax.Array, weighting: str) -> jax.Array:
  alpha, sigma = SCHEDULE.alpha_sigma(t)
  if weighting == "sigma2":
    return sigma**2
  if weighting == "one":
    return jnp.ones_like(t)
  if weighting == "alpha_over_sigma":
    return alpha / sigma
  raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")


def q_grad(q_fn: QFn, observations: jax.Array, actions: jax.Array, normalize: bool = False) -> jax.Array:
  """grad_a sum_B q(s, a), optionally divided per sample by its RMS over action dims.  [B, A]"""
  g = jax.grad(lambda a: jnp.sum(q_fn(observations, a)))(actions)
  if normalize:
    g = g / jnp.sqrt(jnp.mean(jnp.square(g), axis=-1, keepdims=True))
  return g


def srpo_loss(policy_params, policy_apply, eps_fn: EpsFn, q_fn: QFn, observations: jax.Array, key: jax.Array,
              config) -> tuple[jax.Array, dict]:
  """The SRPO surrogate loss on one batch of states [B, S] (see module docstring). Returns (loss, metrics)."""
  t_key, eps_key = jax.random.split(key)
  a = policy_apply(policy_params, observations)
  b = a.shape[0]
  if config.t_sampling == "fixed":
    t = jnp.full((b,), config.fixed_t, a.dtype)
  else:
    t = jax.random.uniform(t_key, (b,), a.dtype, minval=config.t_min, maxval=config.t_max)
  z = jax.random.normal(eps_key, a.shape, a.dtype)
  alpha, sigma = SCHEDULE.alpha_sigma(t)
  a_sg = jax.lax.stop_gradient(a)
  eps = jax.lax.stop_gradient(eps_fn(noise(a_sg, z, alpha, sigma), SCHEDULE.model_time(t), observations))
  if config.baseline:
    eps = eps - z
  g = jax.lax.stop_gradient(q_grad(q_fn, observations, a_sg, config.normalize_q_grad))
  w = weight(t, config.weighting)
  reg = jnp.sum(eps * a, axis=-1) * w
  guide = jnp.sum(g * a, axis=-1) * config.beta
  loss = jnp.mean(reg - guide)
  metrics = {"policy_loss": loss, "q_mean": jnp.mean(q_fn(observations, a_sg)),
             "q_grad_rms": jnp.sqrt(jnp.mean(jnp.square(g))), "reg_grad_rms": jnp.sqrt(jnp.mean(jnp.square(eps)))}
  return loss, metrics


def make_policy_step(eps_apply, q_apply, config):
  """`step(state: PolicyStageState, observations [N, S], key) -> (state, metrics)`.

  eps_apply(behavior_params, a_t, t, s) -> [B, A] and q_apply(q_params, s, a) -> [B] read the frozen parameters
  carried in the state (so seeds vmap). config fields: batch_size, beta, weighting, baseline, t_sampling, t_min,
  t_max, fixed_t, normalize_q_grad.
  """
  _check_config(config)

  def step(state: PolicyStageState, observations: jax.Array, key: jax.Array):
    idx_key, loss_key = jax.random.split(key)
    idx = row_indices(observations, idx_key, config.batch_size)  # a population member's: only its dataset's rows
    s = jnp.take(rows_of(observations), idx, axis=0)
    eps_fn = lambda a_t, t, obs: eps_apply(state.behavior_params, a_t, t, obs)
    q_fn = lambda obs, a: q_apply(state.q_params, obs, a)
    (_, metrics), grads = jax.value_and_grad(srpo_loss, has_aux=True)(
        state.policy.params, state.policy.apply_fn, eps_fn, q_fn, s, loss_key, config)
    return state.replace(policy=state.policy.apply_gradients(grads=grads)), metrics

  return step


class Policy(flax.struct.PyTreeNode):
  """A trained Dirac policy: `params` (with a leading seed axis when `stacked`) and its static architecture."""

  params: Any
  action_dim: int = flax.struct.field(pytree_node=False)
  hidden: int = flax.struct.field(pytree_node=False, default=256)
  num_layers: int = flax.struct.field(pytree_node=False, default=2)
  stacked: bool = flax.struct.field(pytree_node=False, default=False)

  @property
  def net(self) -> DiracPolicy:
    return DiracPolicy(self.action_dim, self.hidden, self.num_layers)

  def seed(self, i: int) -> "Policy":
    if not self.stacked:
      raise ValueError("this policy has no seed axis")
    return self.replace(params=jax.tree.map(lambda x: x[i], self.params), stacked=False)


@jax.jit
def act(policy: Policy, observations: jax.Array) -> jax.Array:
  """One forward pass: observations [B, S] -> actions [B, A] ([N, B, A] for a seed-stacked policy)."""
  apply = lambda p: policy.net.apply(p, observations)
  return jax.vmap(apply)(policy.params) if policy.stacked else apply(policy.params)


@jax.jit
def seed_act(policy: Policy, observations: jax.Array) -> jax.Array:
  """A seed-stacked policy on per-seed observations: [num_seeds, B, S] -> [num_seeds, B, A] (seed i acts on row i)."""
  if not policy.stacked:
    raise ValueError("seed_act needs a seed-stacked policy (srpo_jax.train's); use act for one seed")
  return jax.vmap(lambda p, obs: policy.net.apply(p, obs))(policy.params, observations)


def check_action_dims(eps_fn: EpsFn, obs_dim: int, action_dim: int) -> None:
  """Raise a clear ValueError when the behaviour model does not map [B, action_dim] actions to [B, action_dim]."""
  a = jax.ShapeDtypeStruct((2, action_dim), jnp.float32)
  s = jax.ShapeDtypeStruct((2, obs_dim), jnp.float32)
  t = jax.ShapeDtypeStruct((2,), jnp.float32)
  try:
    out = jax.eval_shape(eps_fn, a, t, s)
  except Exception as e:  # e.g. a Dense kernel shape mismatch inside the behaviour network
    raise ValueError(
        f"behaviour model does not accept actions of the data's action dim {action_dim} (obs dim {obs_dim}): "
        f"was it trained on another dataset? Cause: {type(e).__name__}: {e}") from e
  if tuple(out.shape) != (2, action_dim):
    raise ValueError(f"behaviour model action dim {out.shape[-1]} != data action dim {action_dim} "
                     f"(eps output shape {tuple(out.shape)} for actions [2, {action_dim}])")


class NonFiniteQGradError(FloatingPointError):
  """The critic's action gradient is NaN/inf: the Q network (or its checkpoint) is broken."""


class NonFiniteBehaviorError(FloatingPointError):
  """The behaviour model's eps is NaN/inf: the behaviour network (or its checkpoint) is broken."""


def check_q_grad(q_fn: QFn, observations: jax.Array, actions: jax.Array, normalize: bool) -> None:
  g = np.asarray(q_grad(q_fn, observations, actions, normalize))
  if not np.all(np.isfinite(g)):
    bad = int(np.argwhere(~np.isfinite(g))[0][0])
    raise NonFiniteQGradError(
        f"non-finite grad_a Q at batch row {bad} (value {g[bad]}) before policy extraction: the critic's Q "
        f"gradients are NaN/inf (check the critic training or checkpoint"
        f"{'; with normalize_q_grad a zero gradient also gives NaN' if normalize else ''})")


def check_behavior_eps(eps_fn: EpsFn, observations: jax.Array, actions: jax.Array) -> None:
  """Raise NonFiniteBehaviorError when the behaviour model's eps is NaN/inf on a probe batch (at t = 0.5)."""
  t = jnp.full((observations.shape[0],), 0.5)
  eps = np.asarray(eps_fn(actions, SCHEDULE.model_time(t), observations))
  if not np.all(np.isfinite(eps)):
    bad = int(np.argwhere(~np.isfinite(eps))[0][0])
    raise NonFiniteBehaviorError(
        f"non-finite behaviour eps at batch row {bad} (value {eps[bad]}) before policy extraction: the behaviour "
        "model is broken (check its training, behavior.lr, or its checkpoint); the critic is not at fault")


def run_policy_stage(step_fn, state: PolicyStageState, observations: jax.Array, keys: jax.Array, config, *,
                     steps_per_call: int, workdir=None, progress=False, checkpoint_every=None, callback=None,
                     callback_every: int = 0, data_per_seed=False, **guard):
  """The policy stage under a Trainer (callback(step, stage state): see `common.training.Trainer`; `guard`: its
  seed_ids, suspects and max_runtime_s). A non-finite chunk raises `common.errors.DivergenceError`."""
  trainer = Trainer(step_fn, num_steps=int(config.num_steps), steps_per_call=steps_per_call, name="policy",
                    workdir=workdir, checkpoint_every=checkpoint_every, progress=progress, callback=callback,
                    callback_every=callback_every, data_per_seed=data_per_seed, **guard)
  state = trainer.run(state, observations, keys)
  return state, trainer.history


def extract_policy(behavior_eps_fn: EpsFn, q_fn: QFn, observations, config, key: jax.Array, *,
                   action_dim: int, steps_per_call: int = 1000, progress: bool = False) -> Policy:
  """Train a Dirac policy on the states `observations` [N, S] against any eps(a_t, t, s) and any differentiable
  q(s, a) -> [B]. config: the policy config (hidden, num_layers, lr, lr_schedule, num_steps, batch_size, beta,
  weighting, baseline, t_sampling, t_min, t_max, fixed_t, normalize_q_grad). Returns an unstacked `Policy`.
  """
  _check_config(config)
  observations = jnp.asarray(observations, jnp.float32)
  if observations.ndim != 2:
    raise ValueError(f"observations must be [N, S], got shape {observations.shape}")
  check_action_dims(behavior_eps_fn, observations.shape[1], action_dim)
  init_key, run_key = jax.random.split(key)
  state = init_seeds(lambda k: PolicyStageState(policy=init_policy(k, observations.shape[1], action_dim, config)),
                     init_key[None])
  first = jax.tree.map(lambda x: x[0], state.policy)
  probe = observations[: min(256, observations.shape[0])]
  probe_actions = first.apply_fn(first.params, probe)
  check_q_grad(q_fn, probe, probe_actions, config.normalize_q_grad)
  check_behavior_eps(behavior_eps_fn, probe, probe_actions)
  step = make_policy_step(lambda _, a_t, t, s: behavior_eps_fn(a_t, t, s), lambda _, s, a: q_fn(s, a), config)
  state, _ = run_policy_stage(step, state, observations, run_key[None], config, steps_per_call=steps_per_call,
                              progress=progress)
  params = jax.tree.map(lambda x: x[0], state.policy.params)
  return Policy(params=params, action_dim=action_dim, hidden=config.hidden, num_layers=config.num_layers)
