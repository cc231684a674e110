"""Every dataset of both papers' tables maps to configs holding the papers' values (typed here from
../shared/algorithms.md, independently of the config modules), and the presets keep their promises."""
import pytest

import srpo_jax.configs as srpo_configs
import swg_jax.configs as swg_configs
from experiments.reproduce_d4rl import ANTMAZE, LOCOMOTION

# SRPO's per-dataset beta (algorithms.md §3, "code defaults"): me = medium-expert, m = medium, mr = medium-replay.
SRPO_BETA = {
    "halfcheetah-medium-expert": 0.01, "hopper-medium-expert": 0.01, "walker2d-medium-expert": 0.1,
    "halfcheetah-medium": 0.2, "hopper-medium": 0.05, "walker2d-medium": 0.05,
    "halfcheetah-medium-replay": 0.2, "hopper-medium-replay": 0.2, "walker2d-medium-replay": 0.5,
    "antmaze-umaze": 0.02, "antmaze-umaze-diverse": 0.04, "antmaze-medium-play": 0.08,
    "antmaze-medium-diverse": 0.05, "antmaze-large-play": 0.06, "antmaze-large-diverse": 0.05,
}


def test_the_tables_cover_both_papers_datasets():
  assert len(LOCOMOTION) == 9 and len(ANTMAZE) == 6
  assert {d.rsplit("-", 1)[0] for d in LOCOMOTION + ANTMAZE} == set(SRPO_BETA)


@pytest.mark.parametrize("dataset", LOCOMOTION + ANTMAZE)
def test_paper_values_per_dataset(dataset):
  antmaze = dataset.startswith("antmaze")
  srpo = srpo_configs.get_config(f"{dataset}:paper")
  assert srpo.dataset == dataset
  assert srpo.policy.beta == SRPO_BETA[dataset.rsplit("-", 1)[0]]
  assert srpo.critic.expectile == (0.9 if antmaze else 0.7)
  assert srpo.policy.num_layers == (4 if antmaze else 2)
  assert srpo.policy.normalize_q_grad == antmaze
  assert srpo.reward_kind == ("antmaze" if antmaze else "locomotion")
  assert (srpo.critic.num_steps, srpo.behavior.num_steps, srpo.policy.num_steps) == (1_500_000, 2_000_000, 1_000_000)
  assert srpo.episode_rule == "iql" and srpo.eval.episodes == 20

  swg = swg_configs.get_config(f"{dataset}:paper")
  assert swg.dataset == dataset
  assert swg.critic.expectile == (0.9 if antmaze else 0.7)
  assert swg.weights.expectile == swg.critic.expectile  # the weights follow the critic's tau
  assert swg.reward_kind == ("antmaze" if antmaze else "locomotion")
  assert swg.sampling.guidance_scale == 1.0 and swg.sampling.guidance_scale in swg_configs.GUIDANCE_SWEEP
  assert (swg.sampling.sampler, swg.sampling.temperature) == ("ddpm", 0.0)  # official evaluation: deterministic
  assert (swg.critic.num_steps, swg.diffusion.num_steps, swg.diffusion.batch_size) == (500_000, 1_000_000, 1024)
  assert swg.diffusion.num_timesteps == 15 and swg.diffusion.ema == 0.001
  assert (swg.resampling.num_candidates, swg.resampling.select) == (16, "q")
  assert swg.episode_rule == "episodes" and swg.eval.episodes == 20


@pytest.mark.parametrize("module", [swg_configs, srpo_configs])
def test_presets_share_the_run_fields(module):
  for preset in module.PRESETS:
    c = module.get_config(preset)
    assert c.dataset == "" and c.seeds and c.steps_per_call > 0 and c.eval.episodes > 0
  assert module.get_config("smoke").critic.num_steps < 1000 < module.get_config("demo").critic.num_steps
  with pytest.raises(ValueError, match="unknown .* preset 'huge'"):
    module.get_config("hopper-medium-v2:huge")
