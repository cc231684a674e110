"""FLOPs of a training step counted from the shapes of its matrix products, not from XLA's cost analysis.

XLA's cost analysis on GPU undercounts vmapped steps (8 seeds of the SRPO behaviour step counted as 1.7x one seed),
so the bench's GFLOP/s column uses this count. What is counted: every `dot_general` in the traced step of ONE seed,
2 * (output elements) * (contracted size) each, i.e. the forward pass, the backward pass exactly as JAX builds it
(weight gradients for every layer, input gradients only where something upstream needs them, so a trained MLP costs
a little under 3x its forward pass, a frozen network a forward and an input gradient) and any sampling inside the
step; scanned bodies count once per iteration. Not counted: elementwise work (activations, LayerNorm, the optimiser
update, random bits), which is a few per cent at the bench's widths. N seeds cost N times one seed by definition.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax


def _sub_jaxprs(value) -> list:
  """The jaxprs held by one equation parameter (a Jaxpr, a ClosedJaxpr, or a tuple of them, e.g. cond branches)."""
  if hasattr(value, "eqns"):
    return [value]
  if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
    return [value.jaxpr]
  if isinstance(value, (tuple, list)):
    return [j for v in value for j in _sub_jaxprs(v)]
  return []


def dot_general_flops(eqn) -> int:
  """2 * output elements * contracted size of one dot_general equation."""
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs_shape = eqn.invars[0].aval.shape
  out_size = math.prod(eqn.outvars[0].aval.shape)
  return 2 * out_size * math.prod(lhs_shape[d] for d in lhs_contract)


def jaxpr_matmul_flops(jaxpr) -> int:
  """Matmul FLOPs of a jaxpr, recursing into nested jaxprs: a scan body times its length, a cond's most expensive
  branch, a while body once (its trip count is not known from shapes)."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      total += dot_general_flops(eqn)
      continue
    if eqn.primitive.name == "cond":
      total += max((jaxpr_matmul_flops(b) for b in _sub_jaxprs(eqn.params["branches"])), default=0)
      continue
    times = int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else 1
    for value in eqn.params.values():
      for sub in _sub_jaxprs(value):
        total += times * jaxpr_matmul_flops(sub)
  return total


def matmul_flops(fn: Callable, *args: Any) -> int:
  """Matmul FLOPs of one call of fn(*args), from the shapes of its traced matrix products."""
  return jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def step_flops_per_seed(step_fn: Callable, state: Any, data: Any, keys: jax.Array) -> int:
  """Matmul FLOPs of one step of ONE seed, given seed-stacked `state` and `keys` [N, 2] (seed 0's are traced)."""
  one = jax.tree.map(lambda x: x[0], state)
  return matmul_flops(step_fn, one, data, keys[0])
