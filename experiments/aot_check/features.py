"""What the cost model needs of a compiled training chunk, read from its optimised HLO: kernels, bytes and matrix FLOPs
per step. The same on a deviceless target (`make aot-check`) and on a real GPU (`make gpu-check`)."""
from __future__ import annotations

from experiments.aot_check import breakdown, hlo_stats


def step_features(compiled, steps: int) -> dict:
  """kernels_per_step, flops_per_step, bytes_per_step (XLA's counts, loops unrolled), gemm_flops_by_dtype and the
  per-group totals of one step (`breakdown`), for a program that runs `steps` steps per call around one loop."""
  text = compiled.as_text()
  cost = hlo_stats.xla_cost(compiled)
  kernels = breakdown.step_kernels(text)
  per_step = lambda key: None if cost.get(key) is None else cost[key] / steps
  return {"kernels_per_step": hlo_stats.launches_per_step(text, steps), "flops_per_step": per_step("flops"),
          "bytes_per_step": per_step("bytes_accessed"), "loops_counted_once": cost.get("loops_counted_once"),
          "gemm_flops_by_dtype": breakdown.gemm_flops_by_dtype(kernels), "groups": breakdown.group_totals(kernels)}
