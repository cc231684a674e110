"""Populations (common/population.py): a member of one program equals the same run alone, members share exactly the
stages they agree on, and each samples only its own dataset's rows."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import srpo_jax
from common import population
from common.offline_data import OfflineData, Rows, sample_batch
from srpo_jax import configs


def dataset(n: int, seed: int, shift: float = 0.0) -> OfflineData:
  rng = np.random.default_rng(seed)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape) + shift, jnp.float32)
  return OfflineData(observations=f(n, 3), actions=jnp.tanh(f(n, 2)), rewards=f(n), next_observations=f(n, 3),
                     masks=jnp.ones(n))


def test_grid_names_and_values():
  members = population.grid([0, 1], ["a/x-v0", "b"], {"policy.beta": [0.05, 0.2]})
  assert len(members) == 8 and [m.seed for m in members[:2]] == [0, 1]
  assert members[3].name == "a_x-v0/policy.beta=0.2/seed1" and members[3].value("policy.beta") == 0.2


def test_config_view_reads_overrides_and_passes_everything_else_through():
  c = configs.get_config("smoke")
  view = population.ConfigView(c, {"policy.beta": jnp.float32(0.7), "critic.expectile": 0.9})
  assert float(view.policy.beta) == pytest.approx(0.7) and view.critic.expectile == 0.9
  assert view.policy.batch_size == c.policy.batch_size and view.policy.get("weighting") == c.policy.weighting
  assert view.get("nope", 3) == 3 and "policy" in view
  with pytest.raises(AttributeError):
    view.policy.no_such_field
  with pytest.raises(TypeError):
    view.seeds = (1,)


def test_members_share_exactly_the_stages_they_agree_on():
  members = population.grid([0, 1], ["a", "b"], {"policy.beta": [0.05, 0.2], "critic.expectile": [0.7, 0.9]})
  critic = population.plan_stage(members, ["critic.expectile"])
  beh = population.plan_stage(members, [])
  policy = population.plan_stage(members, ["policy.beta"], upstream=(critic, beh))
  assert (len(critic), len(beh), len(policy)) == (8, 4, 16)  # seeds x datasets (x expectiles for the critic)
  for i, m in enumerate(members):
    assert critic.units[critic.index[i]] == population.Member(m.seed, m.dataset, (("critic.expectile",
                                                                                   m.value("critic.expectile")),))
    assert beh.units[beh.index[i]] == population.Member(m.seed, m.dataset)
  chex.assert_trees_all_equal(critic.gather(jnp.arange(8)), jnp.asarray(critic.index))


def test_a_members_rows_are_its_own_and_drawn_as_alone():
  a, b = dataset(50, 0), dataset(80, 1, shift=5.0)
  shared = population.concatenate({"a": a, "b": b})
  key = jax.random.PRNGKey(3)
  alone = sample_batch(b, key, 64)
  rows = Rows(data=shared.data, offset=jnp.int32(shared.offsets["b"]), count=jnp.int32(shared.counts["b"]))
  chex.assert_trees_all_equal(jax.jit(sample_batch, static_argnums=2)(rows, key, 64), alone)
  rows_a = rows.replace(offset=jnp.int32(0), count=jnp.int32(50))
  assert float(jnp.max(sample_batch(rows_a, key, 500).observations)) < 4.0  # never one of b's rows (shifted by 5)


def small_config(**policy):
  cfg = configs.get_config("hopper-medium-v2:smoke")
  cfg.policy.update(num_steps=30, **policy)
  cfg.critic.num_steps = 30
  cfg.behavior.num_steps = 30
  cfg.steps_per_call = 10
  cfg.progress = False
  return cfg


@pytest.fixture(scope="module")
def datasets():
  return {"a": dataset(120, 0), "b": dataset(70, 1, shift=0.3)}


@pytest.fixture(scope="module")
def sweep(datasets):
  """One program: 2 seeds x 2 betas x 2 datasets of different sizes."""
  members = population.grid([0, 1], ["a", "b"], {"policy.beta": [0.05, 0.5]})
  cfg = small_config()
  return members, srpo_jax.train(cfg, datasets, members=members)


def solo(datasets, member):
  cfg = small_config(beta=member.value("policy.beta"))
  cfg.seeds = (member.seed,)
  cfg.dataset = member.dataset
  return srpo_jax.train(cfg, datasets[member.dataset])


@pytest.mark.parametrize("pick", [0, 7])
def test_a_member_equals_the_same_run_alone(datasets, sweep, pick):
  members, result = sweep
  member = members[pick]
  alone = solo(datasets, member)
  got = jax.tree.map(lambda x: x[pick], result.policy.params)
  want = jax.tree.map(lambda x: x[0], alone.policy.params)
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-6)
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[pick], result.critic.q_target_params),
                              jax.tree.map(lambda x: x[0], alone.critic.q_target_params), rtol=2e-5, atol=1e-6)


def test_the_comparison_sees_a_swap_of_data_or_of_beta(datasets, sweep):
  """Mutations: member 7 (seed 1, beta 0.5, dataset b) against a run alone with another beta, or another dataset."""
  members, result = sweep
  member = members[7]
  got = jax.tree.map(lambda x: x[7], result.policy.params)
  for other in (population.Member(member.seed, member.dataset, (("policy.beta", 0.05),)),
                population.Member(member.seed, "a", member.values)):
    want = jax.tree.map(lambda x: x[0], solo(datasets, other).policy.params)
    with pytest.raises(AssertionError):
      chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# SWG: the critic's expectile swept (and with it the weights'), two datasets.


def swg_config():
  import swg_jax

  cfg = swg_jax.get_config("hopper-medium-v2:smoke")
  cfg.critic.num_steps = 20
  cfg.diffusion.num_steps = 20
  cfg.steps_per_call = 10
  cfg.progress = False
  return cfg


def test_an_swg_member_equals_the_same_run_alone(datasets):
  import swg_jax

  members = population.grid([0, 1], ["a", "b"], {"critic.expectile": [0.7, 0.9], "weights.expectile": [0.7]})
  members = [population.Member(m.seed, m.dataset, (("critic.expectile", m.value("critic.expectile")),
                                                  ("weights.expectile", m.value("critic.expectile"))))
             for m in members]
  result = swg_jax.train(swg_config(), datasets, members=members)
  for pick in (0, 7):
    m = members[pick]
    cfg = swg_config()
    cfg.seeds, cfg.dataset = (m.seed,), m.dataset
    cfg.critic.expectile = m.value("critic.expectile")  # the weights' expectile follows it
    alone = swg_jax.train(cfg, datasets[m.dataset])
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[pick], result.model.params),
                                jax.tree.map(lambda x: x[0], alone.model.params), rtol=2e-5, atol=1e-6)
    rows = slice(0, 120) if m.dataset == "a" else slice(120, 190)
    np.testing.assert_array_equal(result.weights[pick][rows], alone.weights[0])


# ------------------------------------------------------------------------------------------------------------------
# The command line: bad sweeps end in one error line before any work.


def run_train(tmp_path, *flags):
  import os
  import subprocess
  import sys

  from common.data import D4RL_DATASETS
  from tests.datasets import d4rl_arrays, write_hdf5

  d4rl = tmp_path / "d4rl"
  d4rl.mkdir(exist_ok=True)
  for name in ("hopper-medium-v2", "hopper-medium-replay-v2", "halfcheetah-medium-v2"):
    spec = D4RL_DATASETS[name]
    write_hdf5(str(d4rl / spec.filename), d4rl_arrays((30, 40, 25, 20), ("terminal",) * 4, obs_dim=spec.obs_dim,
                                                      action_dim=spec.action_dim))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run([sys.executable, "-m", "experiments.train", "--algo=srpo",
                         "--config=srpo_jax/configs.py:smoke", f"--workdir={tmp_path / 'run'}", *flags], cwd=root,
                        capture_output=True, text=True, timeout=300, env={**os.environ, "D4RL_DATASET_DIR": str(d4rl)})


@pytest.mark.parametrize("flags,message", [
    (["--dataset=hopper-medium-v2", "--sweep=policy.betta=0.1,0.2"], "SRPO has no field 'policy.betta'"),
    (["--dataset=hopper-medium-v2", "--sweep=policy.lr=1e-4,3e-4"], "policy.lr cannot vary inside one program"),
    (["--dataset=hopper-medium-v2", "--sweep=policy.beta="], "no values for policy.beta"),
    (["--dataset=hopper-medium-v2", "--sweep=policy.beta=0.1,0.1"], "a value is given twice"),
    (["--dataset=hopper-medium-v2,halfcheetah-medium-v2"], "need one observation and action dim"),
])
def test_a_bad_population_is_one_error_line_and_nothing_is_written(tmp_path, flags, message):
  out = run_train(tmp_path, *flags)
  assert out.returncode == 1, out.stderr[-2000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0] and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert not (tmp_path / "run").exists()


def test_the_sweep_report_puts_every_setting_in_a_row_and_draws_the_figure(tmp_path):
  """A population run from the command line (two betas, one dataset), then its report."""
  import json

  from experiments.validate import sweep

  out = run_train(tmp_path, "--dataset=hopper-medium-v2", "--sweep=policy.beta=0.05,0.5", "--seeds=0,1",
                  "--config.eval.episodes=1", "--config.eval.max_episode_steps=5")
  assert out.returncode == 0, out.stderr[-3000:]
  run = tmp_path / "run"
  assert "| hopper-medium-v2 | 0.05 | srpo | 2 |" in (run / "report.md").read_text()
  summary = json.loads((run / "settings" / "hopper-medium-v2" / "policy.beta=0.5" / "summary.json").read_text())
  assert set(summary["drift"]) == {"behaviour_distance", "at_bounds", "q_pull", "reg_pull"}
  assert (run / "settings" / "hopper-medium-v2" / "policy.beta=0.5" / "plots" / "drift.png").exists()
  import os
  os.environ["D4RL_DATASET_DIR"] = str(tmp_path / "d4rl")
  metrics = {p.name: p.read_text() for p in run.glob("metrics_*.jsonl")}
  try:
    assert sweep.main([f"--runs={run}", f"--out={tmp_path / 'report'}"]) == 0
    rules = sweep.rule_for_run(str(run), distance=2.0)
  finally:
    del os.environ["D4RL_DATASET_DIR"]
  text = (tmp_path / "report" / "beta_sweep.md").read_text()
  assert [line.split(" | ")[1] for line in text.splitlines()[2:]] == ["0.05", "0.5"]
  assert (tmp_path / "report" / "beta_sweep.png").stat().st_size > 10_000
  # The rule reads the finished critic and behaviour model back: nothing trains again.
  assert {p.name: p.read_text() for p in run.glob("metrics_*.jsonl")} == metrics
  (rule,) = rules.values()
  assert rule["sigma"] > 0 and rule["grad_q"] > 0 and rule["paper_beta"] == 0.05  # hopper-medium's
  assert rule["paper_distance"] == pytest.approx(2.0 * rule["paper_beta"] / rule["beta"])
  rows = sweep.collect(str(run), "policy.beta")
  table = sweep.rule_markdown(rows, rules).splitlines()
  assert table[2].startswith("| hopper-medium-v2 | ") and f"{rule['beta']:.3g}" in table[2]
