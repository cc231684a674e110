"""SWG configs: `get_config("paper")`, `get_config("smoke")`, `get_config("hopper-medium-v2:paper")`.

  python -m experiments.train --algo=swg --config=swg_jax/configs.py:antmaze-umaze-v0:paper --seeds=0,1,2,3,4

Presets: "paper" (the official numbers below), "demo" (small networks and a few thousand steps: the built-in Reacher
dataset in minutes on a CPU), "validate" (the demo's networks, 100k critic + 100k diffusion steps, 2 seeds, 10
evaluation episodes: `make validate`'s locomotion learning check, SWG and SWG-R together about 32-38 minutes per
dataset on 2 CPU cores, see README)
and "smoke" (tiny, a few steps: wiring checks only).

Paper values are those of the official JAX code (configs/D4RL/config.yaml): critic 500k steps at batch 256, diffusion
1M steps at batch 1024, lr 3e-4 cosine-decayed over the paper's 3M horizon, EMA 0.001, T = 15, dropout 0.1,
expectile tau = 0.9 for AntMaze and 0.7 otherwise (per-dataset `critic_hyperparam`); Minari ports and recipe
rebuilds of those datasets get the same values (`common.data.ids`). The official configs carry no
per-dataset guidance scale (the paper sweeps rho over GUIDANCE_SWEEP); the default is the exact rho = 1. SWG-R
(`resampling`) draws 16 candidates at temperature 1 and keeps the best by min-Q_target.
"""
from __future__ import annotations

import ml_collections
from common.data import infer_reward_kind
from common.data.ids import announce_defaults, d4rl_name_for, paper_dataset_for
from common.run import add_run_fields, split_config_arg

PRESETS = ("paper", "demo", "validate", "smoke")
# Fields a population may vary between its members inside one program (`common.population`): read as traced values
# by the steps or the weights pass, or only when sampling; never a shape, an optimiser constant or a Python branch.
SWEEPABLE = ("critic.discount", "critic.expectile", "critic.polyak", "diffusion.ema", "sampling.guidance_scale",
             "sampling.temperature", "weights.expectile", "weights.temperature")
GUIDANCE_SWEEP = (1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0)


def dataset_expectile(dataset: str) -> float:
  return 0.9 if "antmaze" in dataset.lower() else 0.7


def _paper() -> ml_collections.ConfigDict:
  c = add_run_fields(ml_collections.ConfigDict(), episode_rule="episodes")
  c.critic = ml_collections.ConfigDict(dict(
      hidden=(256, 256), value_layer_norm=True, lr=3e-4, expectile=0.7, discount=0.99, polyak=0.005,
      batch_size=256, num_steps=500_000, compute_dtype="float32"))
  c.weights = ml_collections.ConfigDict(dict(
      kind="expectile", expectile=c.critic.get_ref("expectile"), temperature=3.0, clip_min=1e-3, clip_max=80.0,
      hard_threshold=-0.01, chunk_size=16384))
  c.diffusion = ml_collections.ConfigDict(dict(
      num_timesteps=15, b_min=0.1, b_max=10.0,
      hidden=256, num_blocks=3, dropout_rate=0.1, time_embed_dim=64, time_features=(256, 256), weight_head_block=2,
      lr=3e-4, decay_steps=3_000_000, weight_decay=1e-4, ema=0.001, batch_size=1024, num_steps=1_000_000,
      # matmuls and norms in bf16 on accelerators (params and optimiser state float32): the same toy quality as
      # float32 (tests/test_mixed_precision.py); "float32" | "bfloat16" force one.
      compute_dtype="auto"))
  c.sampling = ml_collections.ConfigDict(dict(
      guidance_scale=1.0, sampler="ddpm", num_steps=10, order=2, temperature=0.0, num_candidates=1, select="q",
      w_min=1e-4, w_max=1.0, w_prediction="tweedie"))
  c.resampling = ml_collections.ConfigDict(dict(num_candidates=16, temperature=1.0, select="q"))
  return c


def _demo() -> ml_collections.ConfigDict:
  c = _paper()
  c.steps_per_call = 500
  c.checkpoint_every = 2000
  c.seeds = (0, 1)
  c.critic.update(num_steps=6000)
  c.diffusion.update(hidden=128, time_embed_dim=32, time_features=(128, 128), batch_size=256, num_steps=4000,
                     decay_steps=4000, ema=0.005)
  return c


def _validate() -> ml_collections.ConfigDict:
  """`make validate`: the demo's diffusion network, step counts sized for about 20 minutes per dataset and algorithm
  on 2 CPU cores with the evaluations on the way (SWG and SWG-R share one model; times measured in the README)."""
  c = _demo()
  c.checkpoint_every = 5000
  # 100k critic steps: with 30k the locomotion critics were too poor to guide (walker2d-medium-replay, see README).
  c.critic.update(num_steps=100_000)
  # 100k diffusion steps: with 30k SWG stayed below the data on HalfCheetah; the longer-trained model imitates
  # better (its guidance adds little there, README).
  c.diffusion.update(num_steps=100_000, decay_steps=100_000)
  c.eval.episodes = 10
  return c


def _smoke() -> ml_collections.ConfigDict:
  c = _paper()
  c.steps_per_call = 100
  c.checkpoint_every = 0
  c.progress = False
  c.critic.update(hidden=(64, 64), batch_size=64, num_steps=200)
  c.diffusion.update(hidden=64, num_blocks=3, time_embed_dim=16, time_features=(64, 64), batch_size=64, num_steps=200,
                     decay_steps=200)
  c.weights.chunk_size = 1024
  c.resampling.num_candidates = 4
  c.eval.episodes = 2
  return c


_BUILDERS = {"paper": _paper, "demo": _demo, "validate": _validate, "smoke": _smoke}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: "paper" | "demo" | "validate" | "smoke" | "<dataset>:<preset>" | "<dataset>" (paper preset)."""
  dataset, preset = split_config_arg(arg, PRESETS, "SWG")
  c = _BUILDERS[preset]()
  if dataset:
    c.dataset = dataset
    resolve_dataset_values(c, dataset)
  return c


def resolve_dataset_values(c: ml_collections.ConfigDict, dataset: str) -> None:
  """The papers' per-dataset values for any id of a dataset in their tables (a D4RL name, a Minari port, a recipe
  rebuild: `common.data.ids.d4rl_name_for`): the expectile and the reward preprocessing. Other datasets keep the
  default expectile, get the reward kind their name implies, and say so once."""
  d4rl = d4rl_name_for(dataset)
  c.reward_kind = infer_reward_kind(d4rl or dataset)
  paper = paper_dataset_for(dataset)
  if paper:
    c.critic.expectile = dataset_expectile(paper)


def note_dataset_defaults(c: ml_collections.ConfigDict) -> str | None:
  """For a dataset outside the paper's table: print once, and return, the line naming the values this run uses in
  place of the paper's per-dataset ones (after every --config override); None for a table dataset."""
  if not c.dataset or paper_dataset_for(c.dataset):
    return None
  return announce_defaults("SWG", c.dataset, {"expectile": c.critic.expectile, "reward_kind": c.reward_kind})
