"""SRPO configs: `get_config("preset")` or `get_config("dataset:preset")`.

  python -m experiments.train --algo=srpo --config=srpo_jax/configs.py:hopper-medium-v2:paper

Presets: "paper" (the official code's numbers: 1.5M critic, 2M behaviour and 1M policy steps) and "smoke" (tiny nets,
a few steps: wiring checks only). A dataset name sets beta (the official per-dataset table), the IQL expectile (0.9
AntMaze / 0.7 otherwise), the policy depth (4 AntMaze / 2 otherwise), AntMaze's per-sample normalisation of grad_a Q
and the reward preprocessing kind.
"""
from __future__ import annotations

import ml_collections

# The official SRPO code's per-dataset beta (it multiplies the Q term of the policy loss).
BETAS = {
    "halfcheetah-medium-expert": 0.01, "hopper-medium-expert": 0.01, "walker2d-medium-expert": 0.1,
    "halfcheetah-medium": 0.2, "hopper-medium": 0.05, "walker2d-medium": 0.05,
    "halfcheetah-medium-replay": 0.2, "hopper-medium-replay": 0.2, "walker2d-medium-replay": 0.5,
    "antmaze-umaze": 0.02, "antmaze-umaze-diverse": 0.04, "antmaze-medium-play": 0.08,
    "antmaze-medium-diverse": 0.05, "antmaze-large-play": 0.06, "antmaze-large-diverse": 0.05,
}
PRESETS = ("paper", "smoke")


def _strip_version(name: str) -> str:
  base = name.split("/")[-1]
  parts = base.split("-")
  if parts and len(parts[-1]) >= 2 and parts[-1][0] == "v" and parts[-1][1:].isdigit():
    parts = parts[:-1]
  return "-".join(parts)


def dataset_overrides(dataset: str) -> dict:
  """beta, expectile, policy depth, grad-Q normalisation and reward kind for a D4RL-style dataset name."""
  key = _strip_version(dataset)
  if key not in BETAS:
    raise ValueError(f"unknown dataset {dataset!r} for SRPO's beta table (known: {sorted(BETAS)}); "
                     f"pass a preset only and set policy.beta yourself")
  antmaze = key.startswith("antmaze")
  return {"beta": BETAS[key], "expectile": 0.9 if antmaze else 0.7, "policy_layers": 4 if antmaze else 2,
          "normalize_q_grad": antmaze, "reward_kind": "antmaze" if antmaze else "locomotion"}


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.dataset = ""
  c.reward_kind = "locomotion"
  c.seeds = (0,)
  c.steps_per_call = 1000
  c.progress = True
  c.checkpoint_every = 100_000

  c.critic = ml_collections.ConfigDict(dict(
      hidden=(256, 256), value_layer_norm=False, lr=3e-4, expectile=0.7, discount=0.99, polyak=0.005,
      batch_size=256, num_steps=1_500_000))
  c.behavior = ml_collections.ConfigDict(dict(
      hidden=256, num_blocks=3, dropout_rate=0.1, time_embed_dim=64, lr=3e-4, weight_decay=0.01, batch_size=2048,
      num_steps=2_000_000))
  c.policy = ml_collections.ConfigDict(dict(
      hidden=256, num_layers=2, lr=3e-4, lr_schedule="cosine", num_steps=1_000_000, batch_size=256, beta=0.05,
      weighting="sigma2", baseline=False, t_sampling="uniform", t_min=0.02, t_max=0.98, fixed_t=0.5,
      normalize_q_grad=False))
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.steps_per_call = 10
  c.progress = False
  c.checkpoint_every = None
  c.critic.update(hidden=(32, 32), batch_size=64, num_steps=20)
  c.behavior.update(hidden=32, num_blocks=1, batch_size=64, num_steps=20)
  c.policy.update(hidden=32, batch_size=64, num_steps=20)
  return c


def get_config(arg: str = "paper") -> ml_collections.ConfigDict:
  """arg: "paper", "smoke", "<dataset>" or "<dataset>:<preset>" (e.g. "antmaze-large-play-v2:paper")."""
  dataset, preset = (arg.rsplit(":", 1) if ":" in arg else (("", arg) if arg in PRESETS else (arg, "paper")))
  if preset not in PRESETS:
    raise ValueError(f"unknown SRPO preset {preset!r} in {arg!r}; expected one of {PRESETS}")
  c = base_config()
  if dataset:
    o = dataset_overrides(dataset)
    c.dataset = dataset
    c.reward_kind = o["reward_kind"]
    c.critic.expectile = o["expectile"]
    c.policy.beta = o["beta"]
    c.policy.num_layers = o["policy_layers"]
    c.policy.normalize_q_grad = o["normalize_q_grad"]
  if preset == "smoke":
    c = smoke(c)
  return c
