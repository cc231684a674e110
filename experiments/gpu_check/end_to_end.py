"""`make gpu-check`'s end-to-end parts: the built-in Reacher dataset, both algorithms trained for 2 seeds on it, every
sampler acting, one evaluation episode per seed. Each returns a dict of key numbers; any failure raises."""
from __future__ import annotations

import contextlib
import os
import tempfile
import time

import jax
import numpy as np

SAMPLE_STATES = 64  # observations of the dataset every sampler acts on


@contextlib.contextmanager
def reacher_dataset(episodes: int, reference_episodes: int):
  """Build the built-in Reacher dataset (experiments.make_dataset) into a temporary MINARI_DATASETS_PATH, yield its
  id, restore the variable and delete the folder afterwards."""
  from experiments import make_dataset

  old = os.environ.get("MINARI_DATASETS_PATH")
  with tempfile.TemporaryDirectory(prefix="gpu_check_minari_") as tmp:
    os.environ["MINARI_DATASETS_PATH"] = tmp
    try:
      make_dataset.make_reacher_dataset(make_dataset.DEFAULT_ID, episodes=episodes,
                                        reference_episodes=reference_episodes)
      yield make_dataset.DEFAULT_ID
    finally:
      if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
      else:
        os.environ["MINARI_DATASETS_PATH"] = old


def _config(module, dataset_id: str, preset: str, steps: int, stages: tuple[str, ...]):
  """The preset's config for the dataset, 2 seeds, `steps` steps per stage, one evaluation episode per seed."""
  config = module.get_config(f"{dataset_id}:{preset}")
  config.seeds = (0, 1)
  config.steps_per_call = min(int(config.steps_per_call), steps)
  config.progress = False
  for stage in stages:
    config[stage].num_steps = steps
    if "decay_steps" in config[stage]:
      config[stage].decay_steps = steps
  config.eval.episodes = 1
  return config


def _check_actions(name: str, actions, n: int, action_dim: int) -> dict:
  actions = np.asarray(actions)
  if actions.shape != (n, action_dim) or not np.all(np.isfinite(actions)):
    raise ValueError(f"{name}: actions of shape {actions.shape} (expected {(n, action_dim)}), "
                     f"finite: {bool(np.all(np.isfinite(actions)))}")
  return {"ms": None, "max_abs": float(np.max(np.abs(actions)))}


def _timed_actions(name: str, fn, n: int, action_dim: int) -> dict:
  """Call fn() twice (compile, then timed) and check the actions."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  actions = jax.block_until_ready(fn())
  row = _check_actions(name, actions, n, action_dim)
  row["ms"] = (time.perf_counter() - start) * 1e3
  return row


def _evaluation(result: dict) -> dict:
  if "skipped" in result:
    raise RuntimeError(f"evaluation skipped: {result['skipped']}")
  return {"return_mean": result["return"]["mean"], "returns": result["returns"], "eval_s": result["wall_s"]}


def swg_end_to_end(dataset_id: str, preset: str, steps: int) -> dict:
  """SWG: critic -> weights -> diffusion for 2 seeds, then guided DDPM, DPM-Solver++, unguided and SWG-R actions,
  and one evaluation episode per seed with the config's sampler."""
  import swg_jax
  from common import run as run_lib

  config = _config(swg_jax, dataset_id, preset, steps, ("critic", "diffusion"))
  data, info = run_lib.load_run_data(config, download=False)
  start = time.perf_counter()
  model = swg_jax.train(config, data).model
  out = {"train_s": time.perf_counter() - start, "transitions": int(data.size)}
  one = model.seed(0)
  obs = np.asarray(data.observations[:SAMPLE_STATES])
  key = jax.random.PRNGKey(0)
  samplers = {"guided DDPM": dict(sampler="ddpm"), "guided DPM-Solver++": dict(sampler="dpm", num_steps=5),
              "unguided": dict(guidance_scale=0), "SWG-R": dict(num_candidates=4, temperature=1.0, select="q")}
  out["samplers"] = {name: _timed_actions(name, lambda o=opts: swg_jax.sample(one, obs, key, **o)[0], len(obs),
                                          data.action_dim) for name, opts in samplers.items()}
  out["evaluation"] = _evaluation(run_lib.evaluate_policy(swg_jax.seed_policy(model), config, info, None, "swg"))
  return out


def srpo_end_to_end(dataset_id: str, preset: str, steps: int) -> dict:
  """SRPO: critic -> behaviour -> policy for 2 seeds, then the policy's actions and the behaviour sampler's
  (DPM-Solver++), and one evaluation episode per seed."""
  import srpo_jax
  from common import run as run_lib

  config = _config(srpo_jax, dataset_id, preset, steps, ("critic", "behavior", "policy"))
  data, info = run_lib.load_run_data(config, download=False)
  start = time.perf_counter()
  result = srpo_jax.train(config, data)
  out = {"train_s": time.perf_counter() - start, "transitions": int(data.size)}
  obs = data.observations[:SAMPLE_STATES]
  policy = result.policy.seed(0)
  behaviour = jax.tree.map(lambda x: x[0], result.behavior)
  eps_fn = srpo_jax.behavior_eps_fn(behaviour.params, apply_fn=behaviour.apply_fn)
  sample = jax.jit(lambda o, k: srpo_jax.sample_behavior(eps_fn, o, data.action_dim, k, num_steps=15))
  out["samplers"] = {
      "SRPO policy": _timed_actions("SRPO policy", lambda: srpo_jax.act(policy, obs), len(obs), data.action_dim),
      "behaviour DPM-Solver++ 15": _timed_actions("behaviour sampler", lambda: sample(obs, jax.random.PRNGKey(0)),
                                                  len(obs), data.action_dim)}
  out["evaluation"] = _evaluation(run_lib.evaluate_policy(lambda o, k: srpo_jax.seed_act(result.policy, o), config,
                                                          info, None, "srpo"))
  return out
