"""Every id of a paper dataset (Minari ports, D4RL file paths, recipe rebuilds) resolves to the D4RL name's values in
both algorithms' configs; anything else keeps the defaults and says so once."""
import pytest

import srpo_jax.configs as srpo_configs
import swg_jax.configs as swg_configs
from common.data import ids as dataset_ids
from common.data.ids import d4rl_name_for
from tests.test_configs import SRPO_BETA

# Typed by hand: the ids users hold today and the D4RL name each stands for.
EXPECTED = {
    "hopper-medium-replay-v2": "hopper-medium-replay-v2",
    "walker2d-medium-v0": "walker2d-medium-v0",
    "antmaze-large-play-v0": "antmaze-large-play-v0",
    "mujoco/halfcheetah/medium-v0": "halfcheetah-medium-v2",
    "mujoco/hopper/medium-v0": "hopper-medium-v2",
    "mujoco/walker2d/medium-v0": "walker2d-medium-v2",
    "mujoco/hopper/expert-v0": "hopper-expert-v2",
    "mujoco/hopper/medium-v1": "hopper-medium-v2",
    "D4RL/antmaze/umaze-v1": "antmaze-umaze-v2",
    "D4RL/antmaze/umaze-diverse-v1": "antmaze-umaze-diverse-v2",
    "D4RL/antmaze/medium-play-v1": "antmaze-medium-play-v2",
    "D4RL/antmaze/medium-diverse-v1": "antmaze-medium-diverse-v2",
    "D4RL/antmaze/large-play-v1": "antmaze-large-play-v2",
    "D4RL/antmaze/large-diverse-v1": "antmaze-large-diverse-v2",
    "D4RL/kitchen/complete-v2": "kitchen-complete-v0",
    "/data/d4rl/hopper_medium_replay-v2.hdf5": "hopper-medium-replay-v2",
    "/data/d4rl/Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse.hdf5": "antmaze-umaze-v0",
    "recipes/hopper/medium-v0": "hopper-medium-v2",
    "recipes/halfcheetah/medium-replay-v0": "halfcheetah-medium-replay-v2",
    "recipes/walker2d/medium-expert-v0": "walker2d-medium-expert-v2",
    "recipes/walker2d/random-v0": "walker2d-random-v2",
    # No D4RL match: Minari's "simple" level, no medium-replay in mujoco/, other namespaces and envs.
    "mujoco/hopper/simple-v0": None,
    "mujoco/hopper/medium-replay-v0": None,
    "mujoco/ant/medium-v0": None,
    "test/hopper/medium-v0": None,
    "builtin/reacher/noisy-v0": None,
    "D4RL/antmaze/open-v1": None,
    "hopper-medium": None,
    "": None,
}


@pytest.mark.parametrize("dataset_id", list(EXPECTED))
def test_d4rl_name_for(dataset_id):
  assert d4rl_name_for(dataset_id) == EXPECTED[dataset_id]


# Every Minari or recipe id of a paper dataset, next to the D4RL name whose values it must get.
ALIASES = [(i, d) for i, d in EXPECTED.items() if d and i != d and dataset_ids.strip_version(d) in SRPO_BETA]


def test_aliases_cover_every_locomotion_env_and_maze():
  covered = {dataset_ids.strip_version(d) for _, d in ALIASES}
  assert {f"{e}-medium" for e in ("halfcheetah", "hopper", "walker2d")} <= covered
  assert {f"antmaze-{m}" for m in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play",
                                   "large-diverse")} <= covered


@pytest.mark.parametrize("alias,d4rl", ALIASES)
def test_aliases_get_the_papers_values(alias, d4rl):
  antmaze = d4rl.startswith("antmaze")
  srpo = srpo_configs.get_config(f"{alias}:smoke")
  assert srpo.dataset == alias
  assert srpo.policy.beta == SRPO_BETA[dataset_ids.strip_version(d4rl)]
  assert (srpo.critic.expectile, srpo.policy.num_layers, srpo.policy.normalize_q_grad) == (
      (0.9, 4, True) if antmaze else (0.7, 2, False))
  assert srpo.reward_kind == ("antmaze" if antmaze else "locomotion")
  swg = swg_configs.get_config(f"{alias}:smoke")
  assert swg.critic.expectile == swg.weights.expectile == (0.9 if antmaze else 0.7)
  assert swg.reward_kind == ("antmaze" if antmaze else "locomotion")
  # Nothing per-dataset differs from the D4RL name's config.
  for module in (srpo_configs, swg_configs):
    a, b = module.get_config(f"{alias}:smoke").to_dict(), module.get_config(f"{d4rl}:smoke").to_dict()
    a.pop("dataset"), b.pop("dataset")
    assert a == b


@pytest.mark.parametrize("dataset", ["mujoco/hopper/simple-v0", "builtin/reacher/noisy-v0", "hopper-expert-v2"])
def test_datasets_outside_the_tables_keep_defaults_and_say_so_once(dataset, capsys):
  dataset_ids._ANNOUNCED.clear()
  srpo = srpo_configs.get_config(f"{dataset}:smoke")
  swg = swg_configs.get_config(f"{dataset}:smoke")
  assert capsys.readouterr().out == ""  # said when a run starts, with the values it ends up with
  srpo_line = srpo_configs.note_dataset_defaults(srpo)
  srpo_configs.note_dataset_defaults(srpo)  # again: no second line
  swg_line = swg_configs.note_dataset_defaults(swg)
  assert capsys.readouterr().out.strip().splitlines() == [srpo_line, swg_line]
  assert dataset in srpo_line and "SRPO uses: " in srpo_line
  assert (srpo.policy.beta, srpo.critic.expectile, srpo.policy.num_layers) == (0.05, 0.7, 2)
  assert "beta=0.05" in srpo_line and "expectile=0.7" in srpo_line and "policy_layers=2" in srpo_line
  assert f"reward_kind={srpo.reward_kind}" in srpo_line
  assert "SWG uses: " in swg_line and "expectile=0.7" in swg_line and swg.critic.expectile == 0.7
  assert f"reward_kind={swg.reward_kind}" in swg_line


def test_the_note_states_the_values_the_run_uses_after_overrides(capsys):
  dataset_ids._ANNOUNCED.clear()
  config = srpo_configs.get_config("builtin/reacher/noisy-v0:smoke")
  config.policy.beta = 0.2  # --config.policy.beta=0.2
  line = srpo_configs.note_dataset_defaults(config)
  assert "beta=0.2," in line and "beta=0.05" not in line


def test_paper_datasets_are_silent(capsys):
  dataset_ids._ANNOUNCED.clear()
  assert srpo_configs.note_dataset_defaults(srpo_configs.get_config("mujoco/hopper/medium-v0:smoke")) is None
  assert swg_configs.note_dataset_defaults(swg_configs.get_config("recipes/walker2d/medium-replay-v0:smoke")) is None
  assert srpo_configs.note_dataset_defaults(srpo_configs.get_config("smoke")) is None  # no dataset: nothing to say
  assert capsys.readouterr().out == ""
