"""SRPO configs: `get_config("preset")` or `get_config("dataset:preset")`.

  python -m experiments.train --algo=srpo --config=srpo_jax/configs.py:hopper-medium-v2:paper --seeds=0,1,2,3,4

Presets: "paper" (the official code's numbers: 1.5M critic, 2M behaviour and 1M policy steps), "demo" (small networks,
a few thousand steps: the built-in Reacher dataset in minutes on a CPU), "validate" (the demo's networks, 100k critic,
30k behaviour and 20k policy steps with the "- eps" baseline, 2 seeds, 10 evaluation episodes: `make validate`'s
locomotion learning check) and "smoke" (tiny nets, a few steps: wiring checks only). Any id of a dataset of the
paper's tables (D4RL name, Minari port, recipe rebuild: `common.data.ids.d4rl_name_for`) sets beta (the official
per-dataset table), the IQL expectile (0.9 AntMaze / 0.7 otherwise), the policy depth (4 AntMaze / 2 otherwise),
AntMaze's per-sample normalisation of grad_a Q and, like any dataset name, the reward preprocessing kind; other
datasets keep the defaults below (beta 0.05) and say so once.
"""
from __future__ import annotations

import ml_collections
from common.data import infer_reward_kind
from common.data.ids import announce_defaults, d4rl_name_for, paper_dataset_for
from common.run import add_run_fields, split_config_arg

# The official SRPO code's per-dataset beta (it multiplies the Q term of the policy loss).
BETAS = {
    "halfcheetah-medium-expert": 0.01, "hopper-medium-expert": 0.01, "walker2d-medium-expert": 0.1,
    "halfcheetah-medium": 0.2, "hopper-medium": 0.05, "walker2d-medium": 0.05,
    "halfcheetah-medium-replay": 0.2, "hopper-medium-replay": 0.2, "walker2d-medium-replay": 0.5,
    "antmaze-umaze": 0.02, "antmaze-umaze-diverse": 0.04, "antmaze-medium-play": 0.08,
    "antmaze-medium-diverse": 0.05, "antmaze-large-play": 0.06, "antmaze-large-diverse": 0.05,
}
PRESETS = ("paper", "demo", "validate", "smoke")
# Fields a population may vary between its members inside one program (`common.population`): read as traced values
# by the steps, never a shape, an optimiser constant or a Python branch.
SWEEPABLE = ("critic.discount", "critic.expectile", "critic.polyak", "policy.beta", "policy.t_max", "policy.t_min")


def dataset_overrides(dataset: str) -> dict | None:
  """beta, expectile, policy depth and grad-Q normalisation for any id of a dataset of the paper's table (a D4RL
  name of any version, a Minari port such as 'mujoco/hopper/medium-v0' or 'D4RL/antmaze/umaze-v1', a recipe rebuild
  'recipes/hopper/medium-replay-v0'; see `common.data.ids.d4rl_name_for`), or None for other datasets."""
  key = paper_dataset_for(dataset)
  if key is None or key not in BETAS:
    return None
  antmaze = key.startswith("antmaze")
  return {"beta": BETAS[key], "expectile": 0.9 if antmaze else 0.7, "policy_layers": 4 if antmaze else 2,
          "normalize_q_grad": antmaze}


def base_config() -> ml_collections.ConfigDict:
  c = add_run_fields(ml_collections.ConfigDict(), episode_rule="iql")

  c.critic = ml_collections.ConfigDict(dict(
      hidden=(256, 256), value_layer_norm=False, lr=3e-4, expectile=0.7, discount=0.99, polyak=0.005,
      batch_size=256, num_steps=1_500_000, compute_dtype="float32"))
  # compute_dtype: "float32" | "bfloat16" (matmuls and norms in bf16, parameters and optimiser state float32) | "auto"
  # (bf16 on accelerators, float32 on CPUs). The behaviour model is "auto": the same toy quality in bf16
  # (tests/test_mixed_precision.py); the critic stays float32 (no oracle shows its bf16 quality yet).
  c.behavior = ml_collections.ConfigDict(dict(
      hidden=256, num_blocks=3, dropout_rate=0.1, time_embed_dim=64, lr=3e-4, weight_decay=0.01, batch_size=2048,
      num_steps=2_000_000, compute_dtype="auto"))
  c.policy = ml_collections.ConfigDict(dict(
      hidden=256, num_layers=2, lr=3e-4, lr_schedule="cosine", num_steps=1_000_000, batch_size=256, beta=0.05,
      weighting="sigma2", baseline=False, t_sampling="uniform", t_min=0.02, t_max=0.98, fixed_t=0.5,
      normalize_q_grad=False))
  return c


def demo(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.steps_per_call = 500
  c.checkpoint_every = 2000
  c.seeds = (0, 1)
  c.critic.update(num_steps=6000)
  c.behavior.update(hidden=128, batch_size=256, num_steps=4000)
  c.policy.update(num_steps=2000)
  return c


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`make validate`: the demo's behaviour network, step counts sized for about 20 minutes per dataset on 2 CPU
  cores with the evaluations on the way (times measured in the README)."""
  c = demo(c)
  c.checkpoint_every = 5000
  # 100k critic steps: with 30k SRPO scored 2.1 on walker2d-medium-replay (data 8.7), with 100k 41.8 (README).
  c.critic.update(num_steps=100_000)
  c.behavior.update(num_steps=30_000)
  # The "- eps" baseline (same expected gradient, lower variance; the paper's ablation favours it): in 20k steps
  # instead of 1M, extraction without it stays far from the behaviour model's mode (hopper-medium, beta 0: 9.0 without,
  # 33.4 with; README).
  c.policy.update(num_steps=20_000, baseline=True)
  c.eval.episodes = 10
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.steps_per_call = 10
  c.progress = False
  c.checkpoint_every = 0
  c.critic.update(hidden=(32, 32), batch_size=64, num_steps=20)
  c.behavior.update(hidden=32, num_blocks=1, batch_size=64, num_steps=20)
  c.policy.update(hidden=32, batch_size=64, num_steps=20)
  c.eval.episodes = 2
  return c


def get_config(arg: str = "paper") -> ml_collections.ConfigDict:
  """arg: "paper", "smoke", "<dataset>" or "<dataset>:<preset>" (e.g. "antmaze-large-play-v2:paper")."""
  dataset, preset = split_config_arg(arg, PRESETS, "SRPO")
  c = base_config()
  c.dataset = dataset
  c.reward_kind = infer_reward_kind(d4rl_name_for(dataset) or dataset) if dataset else ""
  o = dataset_overrides(dataset) if dataset else None
  if o:
    c.critic.expectile = o["expectile"]
    c.policy.beta = o["beta"]
    c.policy.num_layers = o["policy_layers"]
    c.policy.normalize_q_grad = o["normalize_q_grad"]
  return _PRESET_FNS[preset](c)


def note_dataset_defaults(c: ml_collections.ConfigDict) -> str | None:
  """For a dataset outside the paper's table: print once, and return, the line naming the values this run uses in
  place of the paper's per-dataset ones (after every --config override); None for a table dataset."""
  if not c.dataset or dataset_overrides(c.dataset):
    return None
  return announce_defaults("SRPO", c.dataset, {
      "beta": c.policy.beta, "expectile": c.critic.expectile, "policy_layers": c.policy.num_layers,
      "normalize_q_grad": c.policy.normalize_q_grad, "reward_kind": c.reward_kind})


_PRESET_FNS = {"paper": lambda c: c, "demo": demo, "validate": validate, "smoke": smoke}
