"""A cost model of a training step on a GPU, from what the deviceless compile counts, fitted to the one real GPU run.

  time per step = max(matrix FLOPs / (e_matrix * the chip's matrix rate), bytes / (e_memory * its bandwidth))
                  + launches * launch cost

Matrix FLOPs are the gemm kernels' (each at the rate of its operand dtype: bf16, or a float32 matmul at JAX's
default precision, TF32 on Hopper); bytes are XLA's count of what the kernels read and write; launches the kernels
of one step. The three constants e_matrix, e_memory and the launch cost are fitted (least squares on the log of the
time) to the fused rows measured on an H200 (H200_MEASURED) with the programs of that run compiled again
(float32 nets, 200 steps per call). Chips of the same architecture share the constants; other kinds (TPUs) have no
measurement to fit and get no estimate.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from experiments.aot_check.targets import CHIPS, Chip

# The one real GPU measurement: an H200, jax 0.11.2, float32 networks, 200 fused steps per call, hopper dimensions,
# paper networks and batch sizes. Steps/s of the fused chunk at 1 and 8 vmapped seeds.
H200_MEASURED = {("critic", 1): 10282, ("critic", 8): 5938, ("swg", 1): 1882, ("swg", 8): 731,
                 ("srpo_behavior", 1): 1790, ("srpo_behavior", 8): 445,
                 ("srpo_policy", 1): 8225, ("srpo_policy", 8): 4372}
# The same run, one step per call at 1 seed (each call also pays the host's dispatch of the program).
H200_ONE_STEP_PER_CALL = {"critic": 1433, "swg": 959, "srpo_behavior": 837, "srpo_policy": 909}
MEASURED_DEVICE, MEASURED_JAX = "NVIDIA H200", "0.11.2"


@dataclasses.dataclass(frozen=True)
class CostModel:
  chip: Chip
  matrix_efficiency: float
  memory_efficiency: float
  launch_seconds: float

  def terms(self, row: dict) -> dict[str, float]:
    """Seconds of one step by term: compute, memory (of which only the larger counts) and launches."""
    compute = sum(flops / (self.matrix_efficiency * self.chip.matrix_flops(_rate_dtype(dtype)))
                  for dtype, flops in row["gemm_flops_by_dtype"].items())
    return {"compute": compute, "memory": row["bytes_per_step"] / (self.memory_efficiency * self.chip.memory_bandwidth),
            "launches": row["kernels_per_step"] * self.launch_seconds}

  def step_seconds(self, row: dict) -> float:
    t = self.terms(row)
    return max(t["compute"], t["memory"]) + t["launches"]

  def steps_per_second(self, row: dict) -> float:
    return 1.0 / self.step_seconds(row)

  def for_chip(self, chip: Chip) -> "CostModel":
    return dataclasses.replace(self, chip=chip)


def _rate_dtype(hlo_dtype: str) -> str:
  return "bfloat16" if hlo_dtype in ("bf16", "f16") else "float32"


def bound(model: CostModel, row: dict) -> str:
  """What sets a step's time: the larger of compute and memory, or launches when they outweigh it."""
  t = model.terms(row)
  main = "memory" if t["memory"] >= t["compute"] else "compute"
  return "launches" if t["launches"] > t[main] else main


@dataclasses.dataclass(frozen=True)
class Fit:
  model: CostModel
  rows: list  # per measured row: stage, seeds, measured, predicted, error, bound and the three terms (seconds)
  matrix_efficiency_range: tuple[float, float]  # every e_matrix that fits within 1 % of the best error

  @property
  def rms_log_error(self) -> float:
    return rms_log_error(self.rows)


MATRIX_GRID, MEMORY_GRID = np.geomspace(0.01, 1.0, 91), np.geomspace(0.02, 2.0, 91)
LAUNCH_GRID = np.linspace(0.0, 10e-6, 401)


def fit(rows: list[dict], measured: dict = H200_MEASURED, chip: Chip = CHIPS["h200"]) -> Fit:
  """The constants that minimise the squared log error over the measured rows (a grid search: the model is a max, not
  linear). rows: compiled calibration programs with stage, seeds, gemm_flops_by_dtype, bytes_per_step and
  kernels_per_step. Where no row is bound by compute, every large enough e_matrix fits as well: the model takes the
  smallest (the slowest compute that fits) and `matrix_efficiency_range` says how far the fit leaves it open."""
  pairs = [(row, measured[(row["stage"], row["seeds"])]) for row in rows if (row["stage"], row["seeds"]) in measured]
  if len(pairs) < 4:
    raise ValueError(f"{len(pairs)} calibration rows match a measurement; the fit needs at least 4")
  unit = CostModel(chip, 1.0, 1.0, 0.0)
  compute1 = np.array([unit.terms(r)["compute"] for r, _ in pairs])
  memory1 = np.array([unit.terms(r)["memory"] for r, _ in pairs])
  launches = np.array([r["kernels_per_step"] for r, _ in pairs], dtype=float)
  target = np.log(1.0 / np.array([sps for _, sps in pairs], dtype=float))
  best_per_matrix = []  # (error, e_memory, launch cost) at each e_matrix
  for e_matrix in MATRIX_GRID:
    best = (math.inf, 0.0, 0.0)
    for e_memory in MEMORY_GRID:
      base = np.maximum(compute1 / e_matrix, memory1 / e_memory)[:, None]
      err = np.sum((np.log(base + launches[:, None] * LAUNCH_GRID[None, :]) - target[:, None]) ** 2, axis=0)
      i = int(np.argmin(err))
      if err[i] < best[0]:
        best = (float(err[i]), float(e_memory), float(LAUNCH_GRID[i]))
    best_per_matrix.append(best)
  errors = np.array([b[0] for b in best_per_matrix])
  i = int(np.argmin(errors))  # the first (smallest) e_matrix at the least error
  within = MATRIX_GRID[errors <= errors[i] * 1.01 + 1e-12]
  model = CostModel(chip, float(MATRIX_GRID[i]), best_per_matrix[i][1], best_per_matrix[i][2])
  report = []
  for row, sps in pairs:
    predicted = model.steps_per_second(row)
    report.append({"stage": row["stage"], "seeds": row["seeds"], "measured": sps, "predicted": predicted,
                   "error": predicted / sps - 1.0, "bound": bound(model, row), **model.terms(row)})
  return Fit(model, report, (float(within.min()), float(within.max())))


def rms_log_error(report: list[dict]) -> float:
  return float(np.sqrt(np.mean([math.log(1.0 + r["error"]) ** 2 for r in report])))


DEFAULT_SUMMARY = "results/aot_check/summary.json"


def load(path: str = DEFAULT_SUMMARY, device_kind: str = "") -> CostModel | None:
  """The model fitted by the last `make aot-check` (its summary.json), for the chip whose name `device_kind` (jax's
  device_kind, e.g. "NVIDIA H100 80GB HBM3") names; None without a fit or for a chip of another kind."""
  import json
  import os

  chip = chip_for_device(device_kind)
  if chip is None or not os.path.exists(path):
    return None
  with open(path) as f:
    fitted = (json.load(f).get("model") or {}).get("model")
  if not fitted:
    return None
  return CostModel(chip, fitted["matrix_efficiency"], fitted["memory_efficiency"], fitted["launch_seconds"])


def chip_for_device(device_kind: str) -> Chip | None:
  for key in ("h200", "h100"):
    if key in device_kind.lower():
      return CHIPS[key]
  return None
