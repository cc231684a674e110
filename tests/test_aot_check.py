"""`make aot-check`: the counts it reads from compiled programs, the cost model's fit and its estimates, and (where
JAX's CUDA plugin and libtpu are installed, as `make aot-check` installs them) that it fails where XLA's GPU compiler
does, names the program and target, and counts what XLA's own dumps count."""
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.aot_check import breakdown, cost_model, estimates, hlo_stats, report, targets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A module with an outer loop of 10 (trip count recorded by XLA's GPU backend) around 3 kernels and an inner loop of
# 4 (trip count only in its condition, as on TPUs) around 2 kernels and a compare, plus bookkeeping that is no kernel.
HANDWRITTEN = """HloModule handwritten, entry_computation_layout={(f32[4]{0})->f32[4]{0}}

%fused_negate (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %n = f32[4]{0} negate(%p)
}

%inner_body (t: (s32[], f32[4])) -> (s32[], f32[4]) {
  %t = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x = f32[4]{0} get-tuple-element(%t), index=1
  %f1 = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_negate
  %f2 = f32[4]{0} fusion(%f1), kind=kLoop, calls=%fused_negate
  %b = f32[4]{0} bitcast(%f2)
  ROOT %r = (s32[], f32[4]{0}) tuple(%i, %b)
}

%inner_cond (t: (s32[], f32[4])) -> pred[] {
  %t = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %c = s32[] constant(4)
  ROOT %lt = pred[] compare(%i, %c), direction=LT
}

%outer_body (t: (s32[], f32[4])) -> (s32[], f32[4]) {
  %t = (s32[], f32[4]{0}) parameter(0)
  %x = f32[4]{0} get-tuple-element(%t), index=1
  %f1 = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_negate
  %f2 = f32[4]{0} fusion(%f1), kind=kLoop, calls=%fused_negate
  %cp = f32[4]{0} copy(%f2)
  %i = s32[] get-tuple-element(%t), index=0
  %init = (s32[], f32[4]{0}) tuple(%i, %cp)
  %w = (s32[], f32[4]{0}) while(%init), condition=%inner_cond, body=%inner_body
  ROOT %r = (s32[], f32[4]{0}) tuple(%i, %cp)
}

%outer_cond (t: (s32[], f32[4])) -> pred[] {
  %t = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  ROOT %lt = pred[] fusion(%i), kind=kLoop, calls=%fused_negate
}

ENTRY %main (a: f32[4]) -> f32[4] {
  %a = f32[4]{0} parameter(0)
  %f = f32[4]{0} fusion(%a), kind=kLoop, calls=%fused_negate
  %c = f32[4]{0} copy(%f)
  %zero = s32[] constant(0)
  %init = (s32[], f32[4]{0}) tuple(%zero, %c)
  %w = (s32[], f32[4]{0}) while(%init), condition=%outer_cond, body=%outer_body, backend_config={"known_trip_count":{"n":"10"}}
  ROOT %out = f32[4]{0} get-tuple-element(%w), index=1
}
"""


def test_launches_of_a_handwritten_module_count_every_iteration():
  computations, entry = hlo_stats.parse_computations(HANDWRITTEN)
  # entry: fusion + copy; each outer iteration: 3 kernels, 4 inner iterations of (2 + the compare), its condition.
  assert hlo_stats.count_launches(computations, entry) == 2 + 10 * (3 + 4 * (2 + 1) + 1)
  assert hlo_stats.count_launches(computations, entry, unroll=False) == 2 + 3 + (2 + 1) + 1
  assert hlo_stats.loop_launches(HANDWRITTEN) == hlo_stats.LoopLaunches(outside=2, per_iteration=16, trips=10)
  assert hlo_stats.launches_per_step(HANDWRITTEN, 10) == pytest.approx(16.2)


def test_unrolled_cost_counts_a_loop_body_as_often_as_it_runs():
  """Closed form: a scan of 7 products of 64 x 64 matrices inside a scan of 3 is 21 * 2 * 64^3 FLOPs. XLA's own
  count sees each body once."""
  def f(x, w):
    inner = lambda c, _: (jnp.tanh(c @ w), None)
    outer = lambda c, _: (jax.lax.scan(inner, c, None, length=7)[0], None)
    return jax.lax.scan(outer, x, None, length=3)[0]

  x = jnp.ones((64, 64), jnp.float32)
  compiled = jax.jit(f).lower(x, x).compile()
  exact = 21 * 2 * 64**3
  got = hlo_stats.xla_cost(compiled)
  assert got["loops_counted_once"] is False
  assert exact <= got["flops"] <= 1.05 * exact
  # the bytes grow with the trip counts too: at least the 21 products' operands and results
  assert got["bytes_accessed"] >= 21 * 3 * 64 * 64 * 4
  once = compiled.cost_analysis()
  once = once[0] if isinstance(once, (list, tuple)) else once
  assert once["flops"] < exact / 10, "XLA's own count no longer counts a loop body once: the unrolling is moot"


def test_cost_falls_back_to_the_backends_count_and_says_so(monkeypatch):
  monkeypatch.setattr(hlo_stats, "module_cost", lambda text: (_ for _ in ()).throw(RuntimeError("API moved")))
  compiled = jax.jit(lambda x: x @ x).lower(jnp.ones((32, 32))).compile()
  got = hlo_stats.xla_cost(compiled)
  assert got["loops_counted_once"] is True and got["flops"] == pytest.approx(2 * 32**3, rel=0.05)


@pytest.mark.parametrize("text,size", [("f32[8,256]{1,0}", 8 * 256 * 4), ("bf16[2,3]{1,0}", 12), ("f32[]", 4),
                                       ("(bf16[2,3]{1,0}, pred[4]{0}, s32[])", 12 + 4 + 4)])
def test_type_bytes(text, size):
  assert breakdown.type_bytes(text) == size


def synthetic_rows():
  """8 rows: two bound by compute, three by memory, three by launches, at known FLOPs, bytes and launches."""
  spec = [(2e11, 1e8, 50), (4e11, 2e8, 60), (1e9, 3e9, 80), (2e9, 6e9, 90), (5e8, 1e9, 40), (1e6, 1e6, 100),
          (1e6, 2e6, 300), (1e7, 1e7, 600)]
  return [{"stage": f"s{i}", "seeds": 1, "gemm_flops_by_dtype": {"f32": f}, "bytes_per_step": b,
           "kernels_per_step": k} for i, (f, b, k) in enumerate(spec)]


def test_the_fit_recovers_known_constants():
  rows = synthetic_rows()
  truth = cost_model.CostModel(targets.CHIPS["h200"], 0.3, 0.6, 2e-6)
  measured = {(r["stage"], 1): truth.steps_per_second(r) for r in rows}
  fitted = cost_model.fit(rows, measured)
  assert fitted.model.matrix_efficiency == pytest.approx(0.3, rel=0.06)
  assert fitted.model.memory_efficiency == pytest.approx(0.6, rel=0.06)
  assert fitted.model.launch_seconds == pytest.approx(2e-6, abs=3e-8)
  assert fitted.rms_log_error < 0.03
  assert {r["bound"] for r in fitted.rows} == {"compute", "memory", "launches"}
  lo, hi = fitted.matrix_efficiency_range
  assert lo <= 0.3 * 1.06 and hi >= 0.3 / 1.06 and hi < 0.4, "compute-bound rows pin the matrix efficiency down"


def test_the_fit_says_when_no_row_pins_the_matrix_rate():
  rows = [r for r in synthetic_rows() if r["stage"] not in ("s0", "s1")]  # no compute-bound row left
  truth = cost_model.CostModel(targets.CHIPS["h200"], 0.3, 0.6, 2e-6)
  fitted = cost_model.fit(rows, {(r["stage"], 1): truth.steps_per_second(r) for r in rows})
  lo, hi = fitted.matrix_efficiency_range
  assert hi >= 0.99 and lo <= 0.3, "every larger matrix efficiency fits as well"
  assert fitted.model.matrix_efficiency == pytest.approx(lo)


def test_pipeline_and_table_hours_are_the_sum_of_steps_times_step_time():
  class Flat:  # every step of every stage takes 1 ms
    step_seconds = staticmethod(lambda row: 1e-3)

  rows = {(stage, n): {} for stage in ("critic", "swg", "srpo_behavior", "srpo_policy") for n in (1, 5, 8)}
  hours = estimates.pipeline_hours(Flat(), rows)
  steps = {name: sum(n for _, n in stages) for name, stages in estimates.paper_pipelines().items()}
  assert hours == pytest.approx({name: n * 1e-3 / 3600 for name, n in steps.items()})
  assert estimates.table_hours(hours) == pytest.approx(9 * (hours["SRPO"] + hours["SWG"]))
  del rows[("srpo_behavior", 5)], rows[("srpo_behavior", 8)]
  assert estimates.pipeline_hours(Flat(), rows)["SRPO"] is None  # a stage not compiled: no estimate


def test_a_population_is_priced_by_the_program_of_its_member_count():
  class Linear:  # a step of n members takes (1 + n / 10) ms: members share a fixed cost
    step_seconds = staticmethod(lambda row: 1e-3 * (1 + row["n"] / 10))
    steps_per_second = staticmethod(lambda row: 1 / Linear.step_seconds(row))

  stages = ("critic", "swg", "srpo_behavior", "srpo_policy")
  rows = {(stage, n): {"n": n} for stage in stages for n in (1, 5, 15, 32)}
  rates = {r["stage"]: r for r in estimates.population_rates(Linear(), rows)}
  assert set(rates) == set(stages)
  assert rates["swg"]["member_steps_per_sec"][15] == pytest.approx(15 / 2.5e-3)
  assert rates["swg"]["speedup"][15] == pytest.approx(15 * 1.1 / 2.5)
  # 3 populations per algorithm of 15 members, each pipeline's steps at the 15-member step time
  steps = {name: sum(n for _, n in st) for name, st in estimates.paper_pipelines().items()}
  expected = 3 * sum(steps.values()) * 2.5e-3 / 3600
  assert estimates.population_table_hours(Linear(), rows) == pytest.approx(expected)
  del rows[("swg", 15)]  # priced by the next larger program: an upper bound
  assert estimates.population_table_hours(Linear(), rows) > expected


def test_attribution_adds_up_to_the_models_step_time():
  model = cost_model.CostModel(targets.CHIPS["h200"], 0.2, 0.5, 1e-6)
  groups = {"matmul": {"kernels": 10, "bytes": 4e8, "flops": 5e10}, "LayerNorm": {"kernels": 5, "bytes": 1e8,
                                                                                 "flops": 0.0}}
  row = {"gemm_flops_by_dtype": {"bf16": 5e10}, "bytes_per_step": 5e8, "kernels_per_step": 15}
  shares = breakdown.attribute(groups, model, row)
  assert sum(g["seconds"] for g in shares) == pytest.approx(model.step_seconds(row))
  assert shares[0]["group"] == "matmul"


def test_the_report_names_every_failure_with_its_target():
  rows = [{"program": "sample swg", "group": "sample", "stage": "", "seeds": 1, "devices": 1, "steps": 1,
           "target": "h200", "status": "compile error", "error": "FAILED_PRECONDITION: ...", "compile_s": 0.2},
          {"program": "evaluate srpo", "group": "evaluate", "stage": "", "seeds": 1, "devices": 1, "steps": 1,
           "target": "tpu-v5e", "status": "ok", "kernels_per_step": 3.0, "flops_per_step": 1e7,
           "bytes_per_step": 2e6, "memory": {"peak_bytes": 2**20}, "compile_s": 0.1}]
  text = report.to_markdown({"date": "today", "jax": jax.__version__, "machine": "cpu", "rows": rows,
                             "chips": {"h200": "H200", "tpu-v5e": "v5e"}, "seconds": 60.0, "model": None})
  assert "## Failures" in text and "- h200: sample swg (seeds 1): compile error: FAILED_PRECONDITION" in text
  assert report.failures(rows) == ["h200: sample swg (seeds 1): compile error: FAILED_PRECONDITION: ..."]


def run_check(*args, env=None, timeout=900):
  return subprocess.run([sys.executable, "-m", "experiments.aot_check", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_an_unknown_target_is_one_error_line_before_any_work(tmp_path):
  done = run_check("--targets=h200,a100", f"--out_dir={tmp_path}/out")
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      f"error: --targets=h200,a100: unknown target(s) ['a100']; choose from {sorted(targets.CHIPS)}"]
  assert not os.path.exists(tmp_path / "out")


# ------------------------------------------------------------------------------------------------------------------
# With the compilers for the targets (the `aot` extra): what `make aot-check` runs first.

def installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # its parent package is missing
    return False


HAVE_CUDA, HAVE_TPU = installed("jax_plugins.xla_cuda12"), installed("libtpu")
needs_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="JAX's CUDA plugin is not installed (pip install .[aot])")
needs_tpu = pytest.mark.skipif(not HAVE_TPU, reason="libtpu is not installed (pip install .[aot])")


def compile_target(tmp_path, target, source, *extra, env=None):
  out = tmp_path / f"{target}.json"
  done = subprocess.run([sys.executable, "-m", "experiments.aot_check.compile_target", f"--target={target}",
                         f"--out={out}", f"--program_source=tests.aot_programs:{source}", *extra], cwd=ROOT,
                        capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
  assert done.returncode == 0, done.stderr[-2000:]
  return json.load(open(out))["rows"]


@needs_cuda
def test_a_scan_body_with_a_traced_interp_fails_the_h200_compile_and_the_check_names_it(tmp_path):
  """The GPU compiler's failure that CPU tests cannot see: the same program compiles for the CPU."""
  from tests import aot_programs

  jax.jit(aot_programs.interp_sampler).lower(jnp.zeros((64, 4)), jax.random.PRNGKey(0)).compile()
  done = run_check("--targets=h200", f"--out_dir={tmp_path}", "--program_source=tests.aot_programs:interp_in_scan")
  assert done.returncode == 1, done.stdout + done.stderr[-2000:]
  failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
  assert len(failed) == 1
  assert failed[0].startswith("FAILED h200: sample with jnp.interp inside its scan (seeds 1): compile error:")
  assert "depends on infeed or parameters" in failed[0]
  assert "- h200: sample with jnp.interp inside its scan (seeds 1): compile error" in open(tmp_path / "summary.md").read()


@needs_tpu
def test_the_same_program_compiles_for_a_tpu(tmp_path):
  rows = compile_target(tmp_path, "tpu-v5e", "interp_in_scan")
  assert rows[0]["status"] == "ok" and rows[0]["kernels_per_step"] > 0


@needs_cuda
def test_a_program_larger_than_the_devices_memory_fails(tmp_path):
  rows = compile_target(tmp_path, "h200", "too_big")
  assert rows[0]["status"] == "out of memory"
  assert rows[0]["memory"]["peak_bytes"] >= 2 * 200 * 2**30 - 2**20
  assert "the target has 141.0 GiB" in rows[0]["error"]


@needs_cuda
def test_launches_equal_xlas_own_thunk_listing(tmp_path):
  """The dumped thunk sequence lists every kernel once (a loop body once): the same count as ours without unrolling."""
  dump, hlo = tmp_path / "dump", tmp_path / "hlo"
  hlo.mkdir()
  rows = compile_target(tmp_path, "h200", "small_chunk", f"--hlo_dir={hlo}", env={"XLA_FLAGS": f"--xla_dump_to={dump}"})
  assert rows[0]["status"] == "ok"
  text = open(next(hlo.iterdir())).read()
  computations, entry = hlo_stats.parse_computations(text)
  sequences = [p for p in os.listdir(dump) if p.endswith(".thunk_sequence.txt")]
  thunks = [hlo_stats.thunk_kernels(open(dump / p).read()) for p in sequences]
  assert hlo_stats.count_launches(computations, entry, unroll=False) in thunks
  loop = hlo_stats.loop_launches(text)
  assert loop.trips == 10 and rows[0]["kernels_per_step"] == pytest.approx(loop.per_iteration + loop.outside / 10)


@needs_cuda
@pytest.mark.parametrize("seeds", [1, 8])
def test_flops_per_step_match_the_shape_count_of_the_traced_step(tmp_path, seeds):
  """XLA's count of the compiled GPU program against the matmul shapes of one seed's traced step (bench_flops),
  times the seeds: vmapped seeds must not be undercounted."""
  from common.training import seed_keys
  from experiments.bench import flops as bench_flops
  from experiments.bench import training as bench_training

  stage = bench_training.critic_stage()
  keys = seed_keys(range(seeds))
  state = jax.jit(jax.vmap(stage.init_fn))(keys)
  shape_count = seeds * bench_flops.step_flops_per_seed(stage.step_fn, state, stage.data, keys)
  rows = compile_target(tmp_path, "h200", "critic_programs", env={"AOT_TEST_SEEDS": str(seeds)})
  assert rows[0]["flops_per_step"] == pytest.approx(shape_count, rel=0.05)
  assert sum(rows[0]["gemm_flops_by_dtype"].values()) == pytest.approx(shape_count, rel=0.02)


def test_every_chip_has_a_topology_description():
  for name, chip in targets.CHIPS.items():
    assert chip.memory_bytes > 0 and chip.bf16_flops >= chip.f32_flops > 0, name
    if chip.is_gpu:
      assert f"core_count: {chip.core_count}" in targets.gpu_target_config(chip)
