"""Where a training step's GPU time goes: every kernel of one loop iteration, its bytes (operands and result, from the
shapes in the optimised HLO), its matrix FLOPs (gemm fusions) and its launch, grouped by what the kernel computes
(from the source names XLA keeps in each instruction's metadata) and priced by the cost model.

A kernel that fuses work of several kinds is charged to the kind most of its instructions have (a gemm fusion to
"matmul" even when it also applies an activation). An estimate: XLA's cost analysis counts bytes the same
way (operands and results), and what hits in the cache is counted as traffic too.
"""
from __future__ import annotations

import collections
import math
import re

from experiments.aot_check import hlo_stats

# (group, pattern over the op_names inside a kernel), in priority order.
GROUPS = (
    ("random bits (dropout, noise, batch indices)", re.compile(r"threefry|_randint|_normal|_uniform|_bernoulli|"
                                                               r"random_bits|Dropout")),
    ("LayerNorm", re.compile(r"LayerNorm")),
    ("time features", re.compile(r"FourierTime")),
    ("activations", re.compile(r"silu|mish|swish|softplus|tanh|relu|gelu")),
    ("batch gather", re.compile(r"_take|gather")),
    ("network other", re.compile(r"ConditionalEpsNet|TwinQ|ValueNet|MLP|DiracPolicy|VmapMLP")),
)
OPTIMIZER = "optimizer, EMA and other element-wise"  # no network scope: optax's and the step's own arithmetic
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
                "f64": 8, "s64": 8, "u64": 8}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")


def type_bytes(type_text: str) -> int:
  """Bytes of an HLO type: an array `f32[8,256]{1,0}` or a tuple of them."""
  total = 0
  for dtype, dims in _ARRAY.findall(type_text):
    size = math.prod(int(d) for d in dims.split(",") if d) if dims else 1
    total += size * _DTYPE_BYTES.get(dtype, 4)
  return total


def _result_type(line: str) -> str:
  rest = line.split(" = ", 1)[1]
  if rest.startswith("("):
    depth = 0
    for i, ch in enumerate(rest):
      depth += (ch == "(") - (ch == ")")
      if depth == 0:
        return rest[:i + 1]
  return rest.split(" ", 1)[0]


def _operands(line: str, opcode: str) -> list[str]:
  """Names of an instruction's operands (inside `opcode(...)`)."""
  start = line.find(f" {opcode}(")
  if start < 0:
    return []
  depth, i = 0, start + len(opcode) + 1
  for j in range(i, len(line)):
    depth += (line[j] == "(") - (line[j] == ")")
    if depth == 0:
      return re.findall(r"%([^\s,)]+)", line[i:j])
  return []


def _op_names(computations, name: str, seen=None) -> list[str]:
  seen = set() if seen is None else seen
  if name in seen or name not in computations:
    return []
  seen.add(name)
  names = []
  for inst in computations[name]:
    names += re.findall(r'op_name="([^"]*)"', inst.text)
    called = re.search(r"\bcalls=%([^\s,)]+)", inst.text)
    if called:
      names += _op_names(computations, called.group(1), seen)
  return names


def name_group(op_name: str) -> str:
  """The group of one instruction, from its source name: the first of GROUPS it matches, else OPTIMIZER."""
  for group, pattern in GROUPS:
    if pattern.search(op_name):
      return group
  return OPTIMIZER


def kernel_group(computations, inst) -> str:
  """A gemm kernel is "matmul"; any other kernel belongs to the group most of its instructions belong to."""
  if "gemm" in inst.text.split(" = ", 1)[0] or "__cublas" in inst.text:
    return "matmul"
  names = re.findall(r'op_name="([^"]*)"', inst.text)
  called = re.search(r"\bcalls=%([^\s,)]+)", inst.text)
  if called:
    names += _op_names(computations, called.group(1))
  votes = collections.Counter(name_group(n) for n in names)
  return votes.most_common(1)[0][0] if votes else OPTIMIZER


def gemm_flops(computations, inst) -> tuple[float, str]:
  """(2 * output elements * contracted size, operand dtype) of the dots inside a gemm fusion."""
  called = re.search(r"\bcalls=%([^\s,)]+)", inst.text)
  comp = computations.get(called.group(1), []) if called else [inst]
  shapes = {re.match(r"\s*(?:ROOT )?%([^\s=]+)", i.text).group(1): _result_type(i.text) for i in comp}
  flops, dtype = 0.0, "f32"
  for i in comp:
    if i.opcode != "dot":
      continue
    out = _ARRAY.search(_result_type(i.text))
    lhs = _ARRAY.search(shapes.get(_operands(i.text, "dot")[0], ""))
    contract = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", i.text)
    if not (out and lhs and contract):
      continue
    out_size = math.prod(int(d) for d in out.group(2).split(",") if d)
    lhs_dims = [int(d) for d in lhs.group(2).split(",") if d]
    flops += 2 * out_size * math.prod(lhs_dims[int(d)] for d in contract.group(1).split(",") if d)
    dtype = lhs.group(1)
  return flops, dtype


def step_kernels(hlo_text: str) -> list[dict]:
  """The kernels of one iteration of the program's main loop (body and condition): group, bytes, matmul FLOPs."""
  computations, entry = hlo_stats.parse_computations(hlo_text)
  loops = [inst for inst in computations[entry] if inst.opcode == "while"]
  if not loops:
    raise ValueError("the program has no loop: not a fused training chunk")
  main = max(loops, key=lambda inst: hlo_stats.trip_count(inst.text, computations) or 1)
  kernels = []
  for part in ("body", "condition"):
    comp = computations[re.search(rf"\b{part}=%([^\s,)]+)", main.text).group(1)]
    shapes = {re.match(r"\s*(?:ROOT )?%([^\s=]+)", i.text).group(1): _result_type(i.text) for i in comp}
    for inst in comp:
      if inst.opcode in hlo_stats.NO_KERNEL or inst.opcode in hlo_stats.CONTROL:
        continue
      operand_bytes = sum(type_bytes(shapes.get(n, "")) for n in _operands(inst.text, inst.opcode))
      group = kernel_group(computations, inst)
      flops, dtype = gemm_flops(computations, inst) if group == "matmul" else (0.0, "")
      kernels.append({"group": group, "bytes": operand_bytes + type_bytes(_result_type(inst.text)), "flops": flops,
                      "dtype": dtype})
  return kernels


def group_totals(kernels: list[dict]) -> dict[str, dict]:
  """Per group: kernels, bytes and matrix FLOPs of one step."""
  totals: dict[str, dict] = collections.defaultdict(lambda: {"kernels": 0, "bytes": 0.0, "flops": 0.0})
  for k in kernels:
    t = totals[k["group"]]
    t["kernels"] += 1
    t["bytes"] += k["bytes"]
    t["flops"] += k["flops"]
  return dict(totals)


def gemm_flops_by_dtype(kernels: list[dict]) -> dict[str, float]:
  out: dict[str, float] = collections.defaultdict(float)
  for k in kernels:
    if k["flops"]:
      out[k["dtype"]] += k["flops"]
  return dict(out)


def attribute(groups: dict[str, dict], model, row: dict) -> list[dict]:
  """The model's step time split over the groups: the larger of the compute and memory terms in proportion to each
  group's matrix FLOPs or bytes, plus its own launches. Largest first; the shares add up to the model's time."""
  terms = model.terms(row)
  main = "memory" if terms["memory"] >= terms["compute"] else "compute"
  key = "bytes" if main == "memory" else "flops"
  total = sum(g[key] for g in groups.values()) or 1.0
  rows = [{"group": name, **g, "seconds": terms[main] * g[key] / total + g["kernels"] * model.launch_seconds}
          for name, g in groups.items()]
  return sorted(rows, key=lambda r: -r["seconds"])
