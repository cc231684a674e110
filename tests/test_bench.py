"""The bench's targets table and its "same toy quality" rule, on hand-made results with known answers."""
from experiments import bench


def _results(critic=170.0, swg_ms=None, scores=None):
  swg_ms = swg_ms or {"SWG guided DDPM-15": 6.0, "SWG guided DPM-Solver++ 10 steps": 4.0,
                      "SWG guided DPM-Solver++ 5 steps": 0.8, "SWG-R DDPM-15, 16 candidates": 0.5}
  rows = [{"stage": "IQL critic step (b256)", "seeds": 1, "mode": "fused", "steps_per_sec": critic},
          {"stage": "IQL critic step (b256)", "seeds": 4, "mode": "fused", "steps_per_sec": 999.0},
          {"stage": "SWG diffusion step (b1024)", "seeds": 1, "mode": "fused", "steps_per_sec": 8.0},
          {"stage": "SWG diffusion step (b1024)", "seeds": 1, "mode": "one step per call", "steps_per_sec": 99.0}]
  latency = [{"method": m, "states": 1, "ms": ms} for m, ms in swg_ms.items()]
  latency.append({"method": bench.SRPO_ACT, "states": 1, "ms": 0.04})
  latency.append({"method": "SWG guided DPM-Solver++ 5 steps", "states": 64, "ms": 0.01})
  scores = scores or {"ground truth again (floor)": (0.001, 0.05), "unguided (rho = 0), DDPM-15": (0.3, 0.5),
                      "SWG guided DDPM-15": (0.010, 0.20), "SWG guided DPM-Solver++ 10 steps": (0.011, 0.21),
                      "SWG guided DPM-Solver++ 5 steps": (0.020, 0.20), "SWG-R DDPM-15, 16 candidates": (0.2, 0.0)}
  toy = {"scores": {k: {"energy_distance": ed, "off_support": off, "mean_energy": 0.5}
                    for k, (ed, off) in scores.items()},
         "dataset": "8gaussians", "beta": 5.0, "samples": 2000, "train_steps": 10, "train_s": 1.0,
         "truth_mean_energy": 0.86}
  return {"rows": rows, "latency": latency, "toy": toy}


def test_same_toy_quality_keeps_samplers_within_two_floors_and_two_points():
  # DPM-5's energy distance 0.020 > 0.010 + 2 * 0.001; DPM-10's 0.011 and off-support 0.21 are inside the slack.
  assert bench.same_toy_quality(_results()["toy"]) == ["SWG guided DDPM-15", "SWG guided DPM-Solver++ 10 steps"]


def test_targets_read_one_seed_fused_rows_and_the_fastest_sampler_of_equal_quality():
  by_name = {t["target"]: t for t in bench.evaluate_targets(_results())}
  critic = by_name["IQL critic step (b256), steps/s"]
  assert critic["measured"] == 170.0 and critic["status"].startswith("met")
  swg = by_name["SWG diffusion step (b1024), steps/s"]
  assert swg["measured"] == 8.0 and swg["status"] == "missed by 20%"
  action = by_name["SWG guided action at DDPM-15's toy quality, 1 state, ms"]
  # DPM-5 (0.8 ms) and SWG-R (0.5 ms) are faster but not eligible: DPM-5 scores worse, SWG-R is not the target.
  assert action["measured"] == 4.0 and action["via"] == "SWG guided DPM-Solver++ 10 steps"
  assert action["status"] == "missed by 4.0x (3 ms over)"
  assert by_name["SRPO action, 1 state, ms"]["status"].startswith("met")
  assert by_name["SRPO policy step (b256), steps/s"]["status"] == "not measured"


def test_cpu_targets_markdown_and_rows_read_together():
  results = _results()
  results.update(machine={"device": "cpu", "platform": "cpu", "cpu_count": 2, "cpu": "x86_64", "jax": "0"},
                 matmul_gflops=100.0, rows=[])
  results["targets"] = bench.evaluate_targets(results)
  text = bench.to_markdown(results)
  assert "| SWG guided DPM-Solver++ 5 steps | 0.800 | 0.010 | 0.0200 | 0.200 | 0.500 |" in text
  assert "targets on this 2-core CPU" in text
  del results["targets"]
  assert "Targets" not in bench.to_markdown(results)


def _scaling_rows():
  """Fused steps/s by stage and seed count (the policy stage has no count >= 5, so it is scaled from 4; the
  critic has two, of which 8 is the nearer)."""
  rates = {"IQL critic step (b256)": {1: 1000.0, 4: 800.0, 8: 600.0, 16: 300.0},
           "SRPO behaviour step (b2048)": {1: 200.0, 8: 150.0},
           "SRPO policy step (b256)": {1: 2000.0, 4: 1800.0},
           "SWG diffusion step (b1024)": {1: 100.0, 8: 50.0}}
  rows = [{"stage": s, "seeds": n, "mode": "fused", "steps_per_sec": r} for s, by_n in rates.items()
          for n, r in by_n.items()]
  rows.append({"stage": "IQL critic step (b256)", "seeds": 8, "mode": "one step per call", "steps_per_sec": 1.0})
  return rows


def test_pipeline_estimates_use_the_paper_step_counts_and_a_seed_count_of_at_least_five():
  by_name = {p["pipeline"]: p for p in bench.pipeline_estimates({"rows": _scaling_rows()}, seeds=5)}
  srpo = by_name["SRPO"]
  # 5 seeds: the 8-seed rate where measured (an upper bound on the time), else the 4-seed time per step x 5/4.
  expected_s = 1_500_000 / 600.0 + 2_000_000 / 150.0 + 1_000_000 / 1800.0 * 5 / 4
  assert abs(srpo["hours"] - expected_s / 3600) < 1e-9
  assert [(s["stage"], s["steps"], s["from_seeds"]) for s in srpo["stages"]] == [
      ("IQL critic step (b256)", 1_500_000, 8), ("SRPO behaviour step (b2048)", 2_000_000, 8),
      ("SRPO policy step (b256)", 1_000_000, 4)]
  swg = by_name["SWG"]
  assert abs(swg["hours"] - (500_000 / 600.0 + 1_000_000 / 50.0) / 3600) < 1e-9


def test_pipeline_estimate_is_none_when_a_stage_was_not_measured():
  rows = [r for r in _scaling_rows() if r["stage"] != "SWG diffusion step (b1024)"]
  by_name = {p["pipeline"]: p for p in bench.pipeline_estimates({"rows": rows}, seeds=5)}
  assert by_name["SWG"]["hours"] is None and by_name["SRPO"]["hours"] is not None


def test_accelerator_targets_seed_scaling_and_srpo_pipeline_hour():
  results = {"rows": _scaling_rows()}
  results["pipelines"] = bench.pipeline_estimates(results, seeds=5)
  by_name = {t["target"]: t for t in bench.evaluate_accelerator_targets(results)}
  critic = by_name["IQL critic step (b256): wall time of 8 seeds / 1 seed"]
  assert abs(critic["measured"] - 1000 / 600) < 1e-12 and critic["status"].startswith("missed")
  behaviour = by_name["SRPO behaviour step (b2048): wall time of 8 seeds / 1 seed"]
  assert abs(behaviour["measured"] - 200 / 150) < 1e-12 and behaviour["status"].startswith("met")
  assert by_name["SRPO policy step (b256): wall time of 8 seeds / 1 seed"]["status"] == "not measured"
  pipeline = by_name["SRPO pipeline at the paper's steps, 5 seeds, hours"]
  assert abs(pipeline["measured"] - results["pipelines"][0]["hours"]) < 1e-12
  assert pipeline["status"].startswith("missed")  # 4.6 h


def test_accelerator_markdown_has_its_targets_and_the_pipeline_estimates():
  results = {"rows": _scaling_rows(), "matmul_gflops": 1e5,
             "machine": {"device": "NVIDIA H100", "platform": "gpu", "cpu_count": 16, "cpu": "x86_64", "jax": "0"}}
  for r in results["rows"]:
    r.update(achieved_gflops=1.0, compile_s=1.0, flops_per_step=8e9 * r["seeds"], xla_flops_per_step=1.7 * 8e9)
  results["pipelines"] = bench.pipeline_estimates(results, seeds=5)
  results["targets"] = bench.evaluate_accelerator_targets(results)
  text = bench.to_markdown(results)
  assert "| SRPO behaviour step (b2048) | 8 | fused | 150.0 | 1200.0 | 1.0 | 0% | 0.21 | 1.0 |" in text
  assert "| SRPO behaviour step (b2048) | — | 1.33x | — | met (1.1x under) |" in text
  assert "targets on an accelerator" in text and "targets on this 2-core CPU" not in text
  assert "| SRPO behaviour step (b2048): wall time of 8 seeds / 1 seed | 1.33 | 1.5 |" in text
  assert "SRPO: 4.6 h" in text


def test_time_chunk_repeats_short_calls_until_a_repeat_lasts_the_minimum():
  import jax.numpy as jnp

  step = lambda state, data, key: (state + 1.0, {"x": state})
  keys = bench.seed_keys(range(2))
  m = bench.time_chunk(step, jnp.zeros(2), None, keys, steps_per_call=1, calls=1, repeats=2, min_seconds=0.05)
  assert m["calls"] > 1 and m["steps_per_sec"] > 0  # one call of a trivial step takes far less than 50 ms


def test_matmul_rate_is_two_n_cubed_over_the_median_call_time(monkeypatch):
  # A fake clock advancing 1 ms per reading: the calibrating call "lasts" 1 ms, so min_seconds = 2.5 ms asks for 3
  # calls per repeat, and each repeat's 3 calls span one 1 ms tick: 1/3 ms a call, 2 n^3 / (1/3 ms) flop/s.
  ticks = iter(range(10**6))
  monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks) * 1e-3)
  n = 64
  rate = bench.matmul_gflops(n=n, repeats=3, min_seconds=0.0025)
  assert abs(rate - 2 * n**3 / (1e-3 / 3) / 1e9) < 1e-6


def test_seed_scaling_is_one_seed_rate_over_n_seed_rate_with_the_goal_at_eight():
  by_stage = {s["stage"]: s for s in bench.seed_scaling(_scaling_rows())}
  critic = by_stage["IQL critic step (b256)"]
  assert critic["ratios"] == {4: 1000 / 800, 8: 1000 / 600, 16: 1000 / 300}  # the one-step-per-call row is ignored
  assert critic["status"].startswith("missed")
  assert by_stage["SRPO behaviour step (b2048)"]["status"].startswith("met")
  assert by_stage["SRPO policy step (b256)"]["status"] == "not measured"  # no 8-seed row
  lines = bench.seed_scaling_markdown(_scaling_rows())
  assert "| IQL critic step (b256) | 1.25x | 1.67x | 3.33x | missed by 1.1x (0.167 over) |" in lines
  assert "| SRPO policy step (b256) | 1.11x | — | — | not measured |" in lines
  assert bench.seed_scaling_markdown([r for r in _scaling_rows() if r["seeds"] == 1]) == []


def test_population_gain_is_member_rate_over_one_seed_rate_and_its_cost_against_plain_seeds():
  stage = "IQL critic step (b256)"
  rows = [{"stage": stage, "seeds": 1, "mode": "fused", "steps_per_sec": 100.0},
          {"stage": stage, "seeds": 8, "mode": "fused", "steps_per_sec": 40.0},
          {"stage": stage, "seeds": 8, "mode": "population", "steps_per_sec": 38.0},
          {"stage": "SRPO policy step (b256)", "seeds": 4, "mode": "population", "steps_per_sec": 10.0}]
  critic, policy = bench.population_gains(rows)
  assert critic == {"stage": stage, "members": 8, "member_steps_per_sec": 304.0, "gain": 3.04,
                    "against_seeds": 0.95}
  assert policy["gain"] is None and policy["against_seeds"] is None  # no fused rows to compare with
  lines = bench.population_markdown(rows)
  assert f"| {stage} | 8 | 304.0 | 3.04x | 0.95 |" in lines
  assert bench.population_markdown(rows[:2]) == []


def test_population_members_sample_only_their_own_part_of_the_data():
  import jax
  import numpy as np

  from common.offline_data import row_indices
  from experiments.bench import training

  data = training.random_data(n=300)
  rows, flags = training.population_data(data, members=5)
  assert np.asarray(rows.offset).tolist() == [0, 100, 200, 0, 100] and np.asarray(rows.count).tolist() == [100] * 5
  assert flags.offset and flags.count and not flags.data
  for m in range(5):
    member = rows.replace(offset=rows.offset[m], count=rows.count[m])
    idx = np.asarray(row_indices(member, jax.random.PRNGKey(m), 2000))
    assert idx.min() >= 100 * (m % 3) and idx.max() < 100 * (m % 3 + 1)
    assert len(np.unique(idx)) > 90  # the whole part, not a corner of it


def test_population_rows_run_for_the_stages_that_read_member_rows():
  from experiments.bench import training

  critic = training.critic_stage(preset="smoke")
  rows = bench.measure_stage(critic, 2, steps_per_call=2, repeats=1, min_seconds=0.01,
                             modes=("fused", "population"), xla_count=False)
  assert [r["mode"] for r in rows] == ["fused", "population"]
  assert rows[1]["flops_per_step"] == rows[0]["flops_per_step"] and rows[1]["steps_per_sec"] > 0
  swg = training.swg_diffusion_stage(preset="smoke")
  assert [r["mode"] for r in bench.measure_stage(swg, 1, 1, 1, 0.01, modes=("fused", "population"),
                                                 xla_count=False)] == ["fused"]
