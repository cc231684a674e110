"""`make gpu-check` at smoke size on the CPU: every part runs, the folder stays small, the summary comes last, a
failing part is reported while the others go on; and the profile summary on hand-made and real traces."""
import json
import os

import jax
import jax.numpy as jnp
import pytest

from experiments import gpu_check
from experiments.gpu_check import profiling as gpu_check_profile


@pytest.mark.slow  # about 30 compiles: ~2 min of CPU time
def test_smoke_run_writes_a_small_folder_and_prints_the_summary_last(tmp_path, capsys):
  out = tmp_path / "check"
  assert gpu_check.main(["--size=smoke", f"--out_dir={out}"]) == 0
  printed = capsys.readouterr().out.strip().splitlines()
  files = sorted(os.listdir(out))
  assert files == ["log.txt", "profile.md", "summary.json", "summary.md"] and len(files) <= 8
  summary = json.loads((out / "summary.json").read_text())
  assert [(p["part"], p["status"]) for p in summary["parts"]] == [(p, "ok") for p in gpu_check.PARTS]
  assert printed[-len(gpu_check.PARTS) - 2:-len(gpu_check.PARTS)] == ["| part | status | key numbers | seconds |",
                                                                      "|---|---|---|---|"]
  assert [line.split(" | ")[0] for line in printed[-len(gpu_check.PARTS):]] == [f"| {p}" for p in gpu_check.PARTS]
  results = summary["results"]
  assert {s["stage"] for s in results["training"]["scaling"]} == {
      "IQL critic step (b256)", "SWG diffusion step (b1024)", "SRPO behaviour step (b2048)", "SRPO policy step (b256)"}
  assert all(set(s["ratios"]) == {"2"} for s in results["training"]["scaling"])  # smoke: seeds 1 and 2
  assert set(results["swg"]["samplers"]) == {"guided DDPM", "guided DPM-Solver++", "unguided", "SWG-R"}
  assert len(results["srpo"]["evaluation"]["returns"]) == 2  # 2 seeds, one episode each
  for stage, prof in results["profile"].items():
    assert 0 < len(prof["top"]) <= 15, stage
    shares = [op["share"] for op in prof["top"]]
    assert all(s >= 0 for s in shares) and sum(shares) <= 1 + 1e-9, stage
  text = (out / "summary.md").read_text()
  assert "Seed scaling" in text and "| training | ok |" in text
  assert [r["method"] for r in results["latency"]] == list(gpu_check.SIZES["smoke"]["latency_methods"])
  assert "share of device-op time" in (out / "profile.md").read_text()


def test_a_failing_part_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
  def broken():
    raise RuntimeError("no device answered")

  monkeypatch.setattr(gpu_check, "environment", broken)
  out = tmp_path / "check"
  assert gpu_check.main(["--size=smoke", f"--out_dir={out}", "--parts=environment,dataset"]) == 1
  printed = capsys.readouterr().out
  assert printed.strip().splitlines()[-2].startswith("| environment | FAILED | RuntimeError: no device answered |")
  parts = {p["part"]: p for p in json.loads((out / "summary.json").read_text())["parts"]}
  assert parts["environment"]["status"] == "FAILED" and parts["dataset"]["status"] == "ok"
  assert "Traceback" in (out / "log.txt").read_text() and "no device answered" in (out / "log.txt").read_text()


def test_unknown_part_is_one_error_line(capsys):
  assert gpu_check.main(["--size=smoke", "--parts=environment,gpu"]) == 2
  assert capsys.readouterr().err.startswith("error: --parts: unknown part(s) ['gpu']")


def _x(pid, tid, ts, dur, name, **args):
  return {"ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": dur, "name": name, "args": args}


def test_nested_ops_count_by_self_time_and_device_processes_win():
  events = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
            {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
            _x(1, 7, 0, 500, "host.op", hlo_op="host.op"),
            _x(2, 1, 0, 100, "while.1"), _x(2, 1, 10, 30, "fusion.2"), _x(2, 1, 50, 20, "fusion.2"),
            _x(2, 1, 55, 5, "dot.3"), _x(2, 2, 0, 40, "dot.3"), _x(2, 1, 150, 10, "copy.4"),
            _x(2, 1, 200, 1, "end: dot.3")]
  s = gpu_check_profile.summarize(events, top=2)
  # while 100 - 30 - 20 = 50, fusion 30 + (20 - 5), dot 5 + 40, copy 10: 150 us of device time in a 160 us span
  assert abs(s["busy_ms"] - 0.15) < 1e-12 and abs(s["span_ms"] - 0.16) < 1e-12
  assert [(op["op"], op["calls"], round(op["ms"] * 1e3, 6)) for op in s["top"]] == [("while.1", 1, 50.0),
                                                                                    ("fusion.2", 2, 45.0)]
  assert abs(s["top"][0]["share"] - 50 / 150) < 1e-12
  gpu_lines = events + [{"ph": "M", "pid": 2, "tid": 1, "name": "thread_name", "args": {"name": "Stream #7"}},
                        {"ph": "M", "pid": 2, "tid": 9, "name": "thread_name", "args": {"name": "XLA Modules"}},
                        _x(2, 9, 0, 100, "jit_step")]  # a module line spanning the kernels: not counted again
  assert [op["op"] for op in gpu_check_profile.summarize(gpu_lines)["top"]] == ["while.1", "fusion.2", "copy.4",
                                                                                             "dot.3"]
  cpu_only = [e for e in events if e["pid"] == 1 or e.get("ph") == "M" and e["pid"] == 1]
  assert [op["op"] for op in gpu_check_profile.summarize(cpu_only)["top"]] == ["host.op"]


def test_profile_of_a_real_cpu_trace_names_xla_ops():
  f = jax.jit(lambda x: jax.lax.scan(lambda c, _: (jnp.tanh(c @ c) + jnp.sin(c), None), x, None, length=3)[0])
  x = jnp.ones((128, 128))
  f(x).block_until_ready()
  s = gpu_check_profile.profile_call(lambda: f(x))
  assert s["top"] and s["busy_ms"] > 0 and s["wall_ms"] > 0
  assert sum(op["share"] for op in s["top"]) <= 1 + 1e-9
  assert any(op["calls"] >= 3 for op in s["top"])  # the scan body's ops run once per iteration
  assert "| 1 | `" in gpu_check_profile.to_markdown("f", s, 3)


def test_a_variant_with_a_field_no_stage_has_fails_before_measuring(monkeypatch):
  from experiments.bench import training as bench_training

  measured = []
  monkeypatch.setattr(bench_training, "matmul_gflops", lambda **kw: 1.0)
  monkeypatch.setattr(bench_training, "measure_stage", lambda *a, **kw: measured.append(a) or [])
  with pytest.raises(KeyError, match="no stage config has the field"):
    gpu_check.training_rows(gpu_check.SIZES["smoke"], [("f32", {}), ("typo", {"compute_dtyp": "bfloat16"})])
  assert len(measured) == 4 * 2  # the baseline's 4 stages x 2 seed counts, none of the misspelt variant


def test_a_variant_sets_its_field_on_the_stage_configs_that_have_it(monkeypatch):
  from experiments.bench import training as bench_training

  monkeypatch.setattr(bench_training, "matmul_gflops", lambda **kw: 1.0)
  seen = []
  monkeypatch.setattr(bench_training, "measure_stage", lambda stage, n, *a, **kw: seen.append((stage.name, n)) or [])
  gpu_check.training_rows(gpu_check.SIZES["smoke"], [("f32", {}), ("b32", {"batch_size": 32})])
  assert ("SRPO behaviour step (b2048) [b32]", 2) in seen and ("IQL critic step (b256)", 1) in seen
  from common.training import init_seeds, seed_keys
  from experiments.bench.flops import step_flops_per_seed
  from srpo_jax import configs

  def flops(overrides):
    stage = bench_training.STAGES["srpo_behavior"][0](overrides, preset="smoke")
    keys = seed_keys([0])
    return stage.overridden, step_flops_per_seed(stage.step_fn, init_seeds(stage.init_fn, keys), stage.data, keys)

  (used, at_32), (_, default) = flops({"batch_size": 32}), flops(None)
  assert used == {"batch_size"} and at_32 * configs.get_config("smoke").behavior.batch_size == default * 32


def test_measured_rows_get_the_cost_models_estimate_of_the_same_compiled_program(tmp_path):
  """On a GPU with a fit in results/aot_check/summary.json, every fused training row carries the model's steps/s for
  the program it timed (here a CPU-compiled chunk stands in for the GPU's; the arithmetic is the model's)."""
  from common.training import init_seeds, seed_keys
  from experiments.bench import training as bench_training
  from experiments.aot_check import cost_model, features

  summary = tmp_path / "summary.json"
  summary.write_text(json.dumps({"model": {"model": {"matrix_efficiency": 0.2, "memory_efficiency": 0.5,
                                                     "launch_seconds": 1e-6}}}))
  assert gpu_check.model_prediction("Tesla V100", str(summary)) is None  # no fit for that kind of chip
  assert gpu_check.model_prediction("NVIDIA H200", str(tmp_path / "none.json")) is None
  inspect = gpu_check.model_prediction("NVIDIA H200", str(summary))
  stage = bench_training.critic_stage(preset="smoke")
  keys = seed_keys([0])
  state = jax.jit(lambda k: init_seeds(stage.init_fn, k))(keys)
  row = bench_training.measure_stage(stage, 1, 4, repeats=1, min_seconds=0.0, modes=("fused",), xla_count=False,
                                     inspect=inspect)[0]
  chunk = jax.jit(bench_training.make_chunk_fn(stage.step_fn, 4), donate_argnums=0).lower(state, stage.data, keys,
                                                                                        jnp.uint32(0))
  model = cost_model.CostModel(cost_model.CHIPS["h200"], 0.2, 0.5, 1e-6)
  assert row["model_steps_per_sec"] == pytest.approx(model.steps_per_second(features.step_features(chunk.compile(),
                                                                                                     4)))
  lines = gpu_check.model_markdown([row])
  assert lines[-1].startswith(f"| {stage.name} | 1 | ") and lines[-1].endswith(" % |")
