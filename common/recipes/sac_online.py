"""SAC trained online on a Gymnasium env (one env, stepped on the host; K updates fused into one jitted lax.scan
after every K env steps), with its replay buffer kept in episode order, evaluations, snapshots of the policy when it
reaches a return, and one checkpoint file (SAC state, buffer, counters, numpy RNG) written atomically.

  run = OnlineSAC("Hopper-v5", workdir="runs/recipes/hopper-seed0", seed=0)
  reached = run.train(max_steps=1_000_000, target_return=1078.1, snapshot="medium")
  episodes = run.buffer_episodes(run.snapshots["medium"]["buffer_size"])   # the replay buffer up to that point

Checkpoints are taken at episode boundaries only (every `checkpoint_every` env steps, at a snapshot, at the end,
on Ctrl-C at the last boundary), so a resumed run starts a fresh episode with the reset seed it would have used.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm
from common.envs import rollouts
from common.recipes.sac import Batch, SACConfig, init_sac, make_update_chunk, sample_actions

CHECKPOINT = "sac_checkpoint.npz"
_BUFFER_KEYS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")


class CheckpointMismatch(ValueError):
  """The workdir holds a run made with other settings."""


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
  sac: SACConfig = SACConfig()
  start_steps: int = 5000  # uniform random actions before the policy acts and learning starts
  updates_per_chunk: int = 250  # K: env steps between fused update chunks, and updates per chunk (1 update/step)
  eval_every: int = 5000  # env steps between evaluations (taken at the next episode end)
  eval_episodes: int = 5
  checkpoint_every: int = 20000


def _write_atomic_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
  """np.savez into a temp file beside `path`, then rename: a reader sees the old file or the new one, never half."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results follow the umask
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


class OnlineSAC:
  """One SAC run on `env_id` with its state in `workdir` (resumed from the checkpoint there if any)."""

  def __init__(self, env_id: str, workdir: str | os.PathLike, seed: int = 0, config: OnlineConfig = OnlineConfig(),
               progress: bool = True):
    self.env_id, self.seed, self.config, self.progress = env_id, int(seed), config, progress
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.env = rollouts.make_env(env_id, self.workdir)
    self.obs_dim = int(np.prod(self.env.observation_space.shape))
    self.action_dim = int(np.prod(self.env.action_space.shape))
    self.key = jax.random.PRNGKey(self.seed)
    self.state = init_sac(jax.random.fold_in(self.key, 0), self.obs_dim, self.action_dim, config.sac)
    self.update_chunk = make_update_chunk(config.sac)
    self.rng = np.random.default_rng(self.seed)
    self.buffer = self._empty_buffer(0)
    self.size = 0
    self.env_steps = self.episodes = self.updates = 0
    self.last_eval = self.last_checkpoint = 0
    self.evals: list[tuple[int, float]] = []
    self.last_return = float("nan")
    self.snapshots: dict[str, dict[str, Any]] = {}
    self.snapshot_actors: dict[str, bytes] = {}
    if (self.workdir / CHECKPOINT).is_file():
      self._restore()

  # ------------------------------------------------------------------------------------------------------------
  # Checkpoint

  def _identity(self) -> dict:
    """What a checkpoint must agree on to be resumed by this run."""
    learning = dataclasses.asdict(self.config)
    for k in ("eval_every", "eval_episodes", "checkpoint_every"):  # may change between sessions
      learning.pop(k)
    return json.loads(json.dumps({"env_id": self.env_id, "seed": self.seed, "config": learning}))

  def save(self) -> None:
    meta = {"identity": self._identity(), "env_steps": self.env_steps, "episodes": self.episodes,
            "updates": self.updates, "last_eval": self.last_eval, "evals": self.evals,
            "last_return": self.last_return, "snapshots": self.snapshots, "rng": self.rng.bit_generator.state}
    arrays = {f"buffer_{k}": v[: self.size] for k, v in self.buffer.items()}
    arrays["sac_state"] = np.frombuffer(flax.serialization.to_bytes(self.state), np.uint8)
    for name, blob in self.snapshot_actors.items():
      arrays[f"snapshot_{name}"] = np.frombuffer(blob, np.uint8)
    arrays["meta"] = np.asarray(json.dumps(meta))
    _write_atomic_npz(self.workdir / CHECKPOINT, arrays)
    self.last_checkpoint = self.env_steps

  def _restore(self) -> None:
    path = self.workdir / CHECKPOINT
    with np.load(path) as f:
      meta = json.loads(str(f["meta"]))
      if meta["identity"] != self._identity():
        theirs, ours = _flat(meta["identity"]), _flat(self._identity())
        diff = "; ".join(f"{k}: {theirs.get(k)} there, {ours.get(k)} here"
                         for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))
        raise CheckpointMismatch(f"{path} holds a SAC run with other settings ({diff}); use another --workdir or "
                                 "the same settings")
      self.state = flax.serialization.from_bytes(self.state, f["sac_state"].tobytes())
      self.buffer = {k: np.array(f[f"buffer_{k}"]) for k in _BUFFER_KEYS}
      self.snapshot_actors = {k[len("snapshot_"):]: f[k].tobytes() for k in f.files if k.startswith("snapshot_")}
    self.size = int(self.buffer["rewards"].shape[0])
    self.env_steps, self.episodes, self.updates = meta["env_steps"], meta["episodes"], meta["updates"]
    self.last_eval, self.last_checkpoint = meta["last_eval"], meta["env_steps"]
    self.evals = [tuple(e) for e in meta["evals"]]
    self.last_return, self.snapshots = meta["last_return"], meta["snapshots"]
    self.rng.bit_generator.state = meta["rng"]

  # ------------------------------------------------------------------------------------------------------------
  # Buffer

  def _empty_buffer(self, capacity: int) -> dict[str, np.ndarray]:
    shapes = {"observations": (self.obs_dim,), "next_observations": (self.obs_dim,), "actions": (self.action_dim,)}
    return {k: np.zeros((capacity, *shapes.get(k, ())), np.float32) for k in _BUFFER_KEYS}

  def _append(self, obs, action, reward, next_obs, terminated, truncated) -> None:
    if self.size == self.buffer["rewards"].shape[0]:  # grow by doubling
      grown = self._empty_buffer(max(1024, 2 * self.size))
      for k in _BUFFER_KEYS:
        grown[k][: self.size] = self.buffer[k][: self.size]
      self.buffer = grown
    i = self.size
    for k, v in zip(_BUFFER_KEYS, (obs, action, reward, next_obs, terminated, truncated)):
      self.buffer[k][i] = v
    self.size += 1

  def _batches(self, k: int) -> Batch:
    idx = self.rng.integers(0, self.size, size=(k, self.config.sac.batch_size))
    b = self.buffer
    return Batch(observations=b["observations"][idx], actions=b["actions"][idx], rewards=b["rewards"][idx],
                 next_observations=b["next_observations"][idx], masks=1.0 - b["terminations"][idx])

  def buffer_episodes(self, size: int | None = None) -> list[dict]:
    """The first `size` buffer rows (default all) as episodes (see `common.envs.rollouts`), in the order collected."""
    size = self.size if size is None else int(size)
    b = {k: v[:size] for k, v in self.buffer.items()}
    ends = np.flatnonzero((b["terminations"] > 0) | (b["truncations"] > 0))
    episodes, start = [], 0
    for end in ends:
      rows = slice(start, end + 1)
      episodes.append({
          "observations": np.concatenate([b["observations"][rows], b["next_observations"][end][None]]),
          "actions": b["actions"][rows], "rewards": b["rewards"][rows].astype(np.float64),
          "terminations": b["terminations"][rows] > 0, "truncations": b["truncations"][rows] > 0,
          "seed": None})
      start = end + 1
    return episodes

  # ------------------------------------------------------------------------------------------------------------
  # Acting and training

  def policy(self, actor_bytes: bytes | None = None, salt: int = 0):
    """`policy(obs [n, S], call) -> actions [n, A]` sampling from the current actor (or a snapshot's)."""
    actor = self.state.actor
    if actor_bytes is not None:
      actor = actor.replace(params=flax.serialization.from_bytes(actor.params, actor_bytes))
    key = jax.random.fold_in(jax.random.fold_in(self.key, 1 + salt), self.env_steps)
    return lambda obs, call: np.asarray(sample_actions(actor, jnp.asarray(obs), jax.random.fold_in(key, call)))

  def evaluate(self) -> float:
    """Mean return of `eval_episodes` episodes of the stochastic policy (reset seeds apart from training's)."""
    seed = 10**9 + self.seed * 10**6 + len(self.evals) * self.config.eval_episodes
    episodes = rollouts.collect_episodes(self.env_id, self.policy(salt=1), seed=seed,
                                         num_episodes=self.config.eval_episodes, workdir=str(self.workdir))
    value = float(np.mean(rollouts.episode_returns(episodes)))
    self.evals.append((self.env_steps, value))
    self.last_eval = self.env_steps
    return value

  def train(self, max_steps: int, target_return: float | None = None, snapshot: str | None = None) -> bool:
    """Trains until an evaluation reaches `target_return` (True; the actor is saved as snapshot `snapshot`) or
    `max_steps` env steps are done (False when a target was given and not reached; True otherwise, the actor
    saved as `snapshot`). Stops at an episode end; checkpoints on the way and at the end."""
    if snapshot and snapshot in self.snapshots:
      return True
    cfg = self.config
    bar = tqdm(total=max_steps, initial=min(self.env_steps, max_steps), disable=not self.progress,
               desc=f"SAC {self.env_id}", unit="step", dynamic_ncols=True)
    boundary = self.size  # buffer rows up to the last episode end
    obs, _ = self.env.reset(seed=self._reset_seed())
    ep_return = 0.0
    try:
      while True:
        if self.env_steps < cfg.start_steps:
          action = self.rng.uniform(-1.0, 1.0, size=self.action_dim).astype(np.float32)
        else:
          key = jax.random.fold_in(jax.random.fold_in(self.key, 2), self.env_steps)
          action = np.asarray(sample_actions(self.state.actor, jnp.asarray(obs[None], jnp.float32), key))[0]
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self._append(obs, action, reward, next_obs, float(terminated), float(truncated))
        self.env_steps += 1
        ep_return += float(reward)
        obs = next_obs
        bar.update(1)
        if self.env_steps >= cfg.start_steps and self.env_steps % cfg.updates_per_chunk == 0:
          key = jax.random.fold_in(jax.random.fold_in(self.key, 3), self.updates)
          self.state, _ = self.update_chunk(self.state, self._batches(cfg.updates_per_chunk), key)
          self.updates += cfg.updates_per_chunk
        if not (terminated or truncated):
          continue
        # An episode ended: evaluate, snapshot, checkpoint or stop here only.
        self.episodes += 1
        self.last_return, ep_return = ep_return, 0.0
        boundary = self.size
        obs, _ = self.env.reset(seed=self._reset_seed())
        if self.env_steps >= cfg.start_steps and self.env_steps - self.last_eval >= cfg.eval_every:
          value = self.evaluate()
          bar.set_postfix_str(f"return {self.last_return:.0f}, eval {value:.0f}"
                              + (f" / target {target_return:.0f}" if target_return is not None else ""))
          if target_return is not None and value >= target_return:
            self._snapshot(snapshot, value)
            self.save()
            return True
        else:
          bar.set_postfix_str(f"return {self.last_return:.0f}"
                              + (f", eval {self.evals[-1][1]:.0f}" if self.evals else ""), refresh=False)
        if self.env_steps >= max_steps:
          if target_return is None:
            self._snapshot(snapshot, self.evals[-1][1] if self.evals else float("nan"))
          self.save()
          return target_return is None
        if self.env_steps - self.last_checkpoint >= cfg.checkpoint_every:
          self.save()
    except KeyboardInterrupt:
      self._truncate(boundary)
      self.save()
      bar.close()
      print(f"interrupted: SAC state and {self.size} buffer rows saved in {self.workdir / CHECKPOINT}", flush=True)
      raise
    finally:
      bar.close()

  def _reset_seed(self) -> int:
    return self.seed * 10**6 + self.episodes

  def _truncate(self, rows: int) -> None:
    """Drops the rows of an unfinished episode (Ctrl-C): the buffer and the step count end at an episode end."""
    self.env_steps -= self.size - rows
    self.size = rows

  def _snapshot(self, name: str | None, eval_return: float) -> None:
    if name:
      self.snapshots[name] = {"env_steps": self.env_steps, "buffer_size": self.size, "eval_return": eval_return}
      self.snapshot_actors[name] = flax.serialization.to_bytes(self.state.actor.params)


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
