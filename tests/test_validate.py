"""`make validate` (experiments/validate/__init__.py) at smoke size on a tiny recipe-shaped Hopper dataset: evaluations at the
expected steps of the last stages, figure, table and numbers written, a resume after an interruption that redoes no
finished evaluation, and one clear error for bad input before any work."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from common.recipes import datasets as recipes
from common.envs import rollouts
from common import run as run_lib
from experiments import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "recipes/hopper/medium-replay-v0"
DATA_POLICY_RETURN = 150.0  # what the metadata says the data-making policy returned


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
  """A tiny Minari dataset under the recipe id, made of uniform-random Hopper-v5 episodes, with a recipe's
  metadata; MINARI_DATASETS_PATH points at it for the module."""
  root = tmp_path_factory.mktemp("minari")
  old = os.environ.get("MINARI_DATASETS_PATH")
  os.environ["MINARI_DATASETS_PATH"] = str(root)
  episodes = rollouts.collect_episodes("Hopper-v5", recipes._uniform_policy(3, 0), seed=0, num_steps=400,
                                       num_envs=4, workdir=str(root))
  lo, hi = recipes.reference_scores("Hopper-v5")
  meta = {"recipe": "medium-replay", "recipe_seed": 0, "ref_min_score": lo, "ref_max_score": hi,
          "target_return": hi / 3, "medium_env_steps": 400, "medium_eval_return": DATA_POLICY_RETURN}
  recipes.write_minari(DATASET, episodes, "Hopper-v5", meta, overwrite=False, description="test data")
  yield root, episodes
  if old is None:
    os.environ.pop("MINARI_DATASETS_PATH", None)
  else:
    os.environ["MINARI_DATASETS_PATH"] = old


def run_validate(out, **kwargs):
  return validate.validate([DATASET], ["srpo", "swg"], preset="smoke", seeds=[0, 1], episodes=2, evals=3,
                           out=str(out), progress=False, log=lambda *a: None, **kwargs)


def test_whole_flow_resumes_without_redoing_evaluations(minari_root, tmp_path, monkeypatch):
  root, episodes = minari_root
  out = tmp_path / "out"
  real = run_lib.evaluate_policy
  calls, interrupted = [], []

  def counting(policy_fn, config, info, workdir, name):
    calls.append(name)
    if name == "srpo_step0000014" and not interrupted:
      interrupted.append(name)
      raise KeyboardInterrupt  # Ctrl-C in the middle of the second SRPO evaluation
    return real(policy_fn, config, info, workdir, name)

  monkeypatch.setattr(run_lib, "evaluate_policy", counting)
  with pytest.raises(KeyboardInterrupt):
    run_validate(out)
  assert calls == ["srpo_step0000007", "srpo_step0000014"]
  srpo_dir = out / "runs" / DATASET.replace("/", "_") / "srpo"
  finished = {n: (srpo_dir / f"eval_{n}.json").read_text() for n in calls[:1]}
  assert not (srpo_dir / "eval_srpo_step0000014.json").exists()

  calls.clear()
  results = run_validate(out)
  # Smoke sizes, 3 evaluations: SRPO's policy stage has 20 steps (every ceil(20 / 3) = 7, and the end), SWG's
  # diffusion stage 200 (every 67, and the end).
  swg_steps = [67, 134, 200]
  assert calls == ["srpo_step0000014", "srpo_step0000020"] + [
      f"{p}_step{s:07d}" for s in swg_steps for p in ("swg", "swgr")]
  for name, text in finished.items():  # not redone, not rewritten
    assert (srpo_dir / f"eval_{name}.json").read_text() == text

  (result,) = results
  assert [p["step"] for p in result["curves"]["srpo"]] == [7, 14, 20]
  assert [p["step"] for p in result["curves"]["swg"]] == swg_steps == [p["step"] for p in result["curves"]["swgr"]]
  for policy, curve in result["curves"].items():
    algo = "srpo" if policy == "srpo" else "swg"
    for point in curve:
      ev = json.loads((out / "runs" / DATASET.replace("/", "_") / algo /
                       f"eval_{policy}_step{point['step']:07d}.json").read_text())
      per_seed = np.mean(np.asarray(ev["returns"]), axis=1)  # 2 seeds x 2 episodes
      assert per_seed.shape == (2,) and point["return"]["mean"] == pytest.approx(per_seed.mean())

  # The reference lines, against the episodes the dataset was made of.
  lo, hi = recipes.reference_scores("Hopper-v5")
  ref = result["reference"]
  assert ref["dataset_return"] == pytest.approx(np.mean([np.sum(ep["rewards"]) for ep in episodes]), rel=1e-5)
  assert ref["policy_return"] == DATA_POLICY_RETURN
  assert ref["policy_score"] == pytest.approx(100 * (DATA_POLICY_RETURN - lo) / (hi - lo))

  png = out / f"{DATASET.replace('/', '_')}.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  report = (out / "report.md").read_text()
  for policy in ("SRPO", "SWG", "SWG-R"):
    assert f"| {DATASET} | {policy} |" in report
  assert f"{ref['dataset_score']:.1f}" in report and f"{ref['policy_score']:.1f}" in report
  saved = json.loads((out / "validate.json").read_text())
  assert saved["results"][0]["curves"]["srpo"][-1]["step"] == 20
  assert set(saved["results"][0]["runs"]) == {"srpo", "swg"}
  assert all(os.path.exists(srpo_dir / f) for f in ("summary.json", "config.json"))

  # A third run finds everything done: no training, no evaluation.
  calls.clear()
  run_validate(out)
  assert calls == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(datasets=["recipes/hopper/expert-v0"]),
     "not built yet .* --recipe=expert --env=Hopper-v5"),
    (dict(datasets=["recipes/ant/medium-v0"]), "unknown dataset id 'recipes/ant/medium-v0'"),
    (dict(datasets=["no-such-data"]), "unknown dataset id 'no-such-data'"),
    (dict(algos=["iql"]), "--algos: unknown algorithm 'iql'"),
    (dict(seeds=[0, 0]), "--seeds: seed 0 is given 2 times"),
    (dict(evals=0), "--evals must be >= 1"),
    (dict(preset="huge"), "--preset='huge' is not a preset"),
])
def test_bad_input_is_refused_before_any_work(minari_root, tmp_path, kwargs, message):
  args = dict(datasets=[DATASET], algos=["srpo"], preset="smoke", seeds=None, evals=2)
  args.update(kwargs)
  out = tmp_path / "out"
  with pytest.raises(validate.ValidateError, match=message):
    validate.validate(args.pop("datasets"), args.pop("algos"), out=str(out), progress=False, **args)
  assert not (out / "runs").exists()


def test_missing_dataset_gives_one_error_line(minari_root, tmp_path):
  env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp_path / "empty"))
  proc = subprocess.run([sys.executable, "-m", "experiments.validate", "--datasets=recipes/walker2d/medium-v0",
                         f"--out={tmp_path / 'out'}"], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode != 0
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: dataset 'recipes/walker2d/medium-v0' is not built yet")
  assert "--recipe=medium --env=Walker2d-v5" in lines[0] and "make datasets" in lines[0]
  assert not (tmp_path / "out" / "runs").exists()


def test_report_keeps_every_dataset_and_algorithm_run_into_the_same_folder(minari_root, tmp_path):
  """`make validate` run one dataset or algorithm at a time (as a long check is, over days) still reports all of
  them: each invocation adds its results to what the folder's validate.json holds, made with the same settings."""
  root, episodes = minari_root
  other, third = "recipes/hopper/medium-v0", "recipes/hopper/random-v0"
  lo, hi = recipes.reference_scores("Hopper-v5")
  for dataset_id, level in ((other, "medium"), (third, "random")):
    if not (root / dataset_id).exists():
      meta = {"recipe": level, "recipe_seed": 0, "ref_min_score": lo, "ref_max_score": hi}
      recipes.write_minari(dataset_id, episodes[:3], "Hopper-v5", meta, overwrite=False, description="test data")
  out = tmp_path / "out"
  common = dict(preset="smoke", seeds=[0, 1], episodes=1, evals=1, out=str(out), progress=False,
                log=lambda *a: None)
  validate.validate([DATASET], ["srpo"], **common)
  validate.validate([other], ["srpo"], **common)
  results = validate.validate([DATASET], ["swg"], **common)
  assert [r["dataset"] for r in results] == [DATASET]  # what this invocation ran

  saved = json.loads((out / "validate.json").read_text())
  by_dataset = {r["dataset"]: r for r in saved["results"]}
  assert set(by_dataset) == {DATASET, other}
  assert set(by_dataset[DATASET]["runs"]) == {"srpo", "swg"}
  assert set(by_dataset[DATASET]["curves"]) == {"srpo", "swg", "swgr"}
  assert set(by_dataset[other]["runs"]) == {"srpo"}
  report = (out / "report.md").read_text()
  for dataset, policy in ((DATASET, "SRPO"), (DATASET, "SWG"), (DATASET, "SWG-R"), (other, "SRPO")):
    assert f"| {dataset} | {policy} |" in report

  # Results made with other settings are not mixed into the table: the report says they were left out.
  logged = []
  validate.validate([third], ["srpo"], **dict(common, episodes=2, log=logged.append))
  report = (out / "report.md").read_text()
  assert f"| {DATASET} |" not in report and f"| {other} |" not in report and f"| {third} | SRPO |" in report
  assert any("leaves out" in line and DATASET in line and other in line for line in logged)


def test_report_leaves_out_runs_made_with_another_config_under_the_same_preset_name(minari_root, tmp_path,
                                                                                      monkeypatch):
  """A preset whose values changed between invocations (as `validate` did: 30k -> 100k critic steps) keeps its name,
  seeds and episodes: the earlier runs must still not be merged into the new table as if they were comparable."""
  from srpo_jax import configs as srpo_configs

  out = tmp_path / "out"
  common = dict(preset="smoke", seeds=[0, 1], episodes=1, evals=1, out=str(out), progress=False)
  validate.validate([DATASET], ["srpo"], log=lambda *a: None, **common)
  saved = json.loads((out / "validate.json").read_text())
  assert saved["results"][0]["runs"]["srpo"]["config"]["critic"]["num_steps"] == 20  # what the run trained with

  smoke = srpo_configs._PRESET_FNS["smoke"]

  def longer_critic(c):
    c = smoke(c)
    c.critic.num_steps = 30
    return c

  monkeypatch.setitem(srpo_configs._PRESET_FNS, "smoke", longer_critic)
  logged = []
  validate.validate([DATASET], ["swg"], log=logged.append, **common)  # the srpo run of the old preset is not rerun
  saved = json.loads((out / "validate.json").read_text())
  (result,) = saved["results"]
  assert set(result["runs"]) == {"swg"} and set(result["curves"]) == {"swg", "swgr"}
  assert f"| {DATASET} | SRPO |" not in (out / "report.md").read_text()
  assert any("leaves out" in line and "srpo" in line and "critic.num_steps: 20 -> 30" in line for line in logged)


def test_report_says_below_the_data_instead_of_a_negative_share_of_the_gap():
  from experiments.validate import report as validate_report

  def result(final, top=37.0):
    point = lambda step, mean: {"step": step, "score": {"mean": mean, "std": 1.0}, "return": {"mean": 0.0, "std": 0.0}}
    return {"dataset": "d", "reference": {"dataset_score": 35.2, "policy_score": top},
            "curves": {"srpo": [point(10, 20.0), point(20, final)]},
            "runs": {"srpo": {"stage_seconds": {"critic": 60.0}, "eval_seconds": 6.0}}}

  (below,) = validate_report.table_rows(result(7.7))
  assert "| -27.5 | below the data |" in below and "%" not in below
  (above,) = validate_report.table_rows(result(36.1))
  assert "| +0.9 | 50 % |" in above
  (beyond,) = validate_report.table_rows(result(41.1))  # past the data-making policy: say so, not just "328 %"
  assert "| +5.9 | beyond it (328 %) |" in beyond
  (no_gap,) = validate_report.table_rows(result(36.1, top=35.0))  # the data-making policy below the data's average
  assert "| +0.9 | n/a |" in no_gap
