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


def test_targets_markdown_only_for_a_cpu_and_rows_read_together():
  results = _results()
  results.update(machine={"device": "cpu", "platform": "cpu", "cpu_count": 2, "cpu": "x86_64", "jax": "0"},
                 matmul_gflops=100.0, rows=[])
  results["targets"] = bench.evaluate_targets(results)
  text = bench.to_markdown(results)
  assert "| SWG guided DPM-Solver++ 5 steps | 0.800 | 0.010 | 0.0200 | 0.200 | 0.500 |" in text
  assert "Targets on this 2-core CPU" in text
  results["machine"].update(platform="gpu", device="H100")
  del results["targets"]
  assert "not evaluated on H100" in bench.to_markdown(results)
