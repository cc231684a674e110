"""What a compiled program costs per step, read from XLA's optimised HLO: kernel launches (GPU) or fusions (TPU),
FLOPs, bytes accessed and device memory.

Launches are counted from `compiled.as_text()`: every instruction of the entry computation that becomes a kernel (a
fusion, a copy, a custom call, a collective, ...) counts once, a `while` counts its body and condition once per
iteration (the trip count XLA knows, else once), a `conditional` its dearest branch and a `call` its callee.
Instructions that cost no kernel (parameters, tuples, bitcasts, constants) count nothing. For a fused chunk of K
training steps (one `while` of K iterations) the launches per step are one iteration's plus the chunk's once-per-call
work divided by K.

FLOPs and bytes come from XLA's own HloCostAnalysis of the optimised module, with every loop counted as often as it
runs (XLA itself counts a loop body once). Bytes accessed are what the kernels read and write, an upper bound on the
memory traffic: what a kernel finds in the cache is counted too.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

# Instructions that are bookkeeping for the compiler, not work on the device.
NO_KERNEL = frozenset({"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "after-all",
                       "add-dependency", "opt-barrier", "domain", "partition-id", "replica-id"})
CONTROL = frozenset({"while", "conditional", "call"})

_COMPUTATION = re.compile(r"^(ENTRY )?%([^\s(]+) ")
_NAME = re.compile(r"^\s*(?:ROOT )?%[^\s=]+ = ")


@dataclasses.dataclass
class Instruction:
  opcode: str
  text: str  # the whole line, for the attributes of control instructions


def _skip_type(s: str) -> str:
  """The rest of an instruction after its result type (a tuple type may nest parentheses and hold comments)."""
  if not s.startswith("("):
    return s.split(" ", 1)[1] if " " in s else ""
  depth = 0
  for i, ch in enumerate(s):
    depth += ch == "("
    depth -= ch == ")"
    if depth == 0:
      return s[i + 1:].lstrip()
  return ""


def parse_computations(hlo_text: str) -> tuple[dict[str, list[Instruction]], str]:
  """{computation name: its instructions} and the entry computation's name."""
  computations: dict[str, list[Instruction]] = {}
  entry, current = "", None
  for line in hlo_text.splitlines():
    head = _COMPUTATION.match(line)
    if head:
      current = computations.setdefault(head.group(2), [])
      if head.group(1):
        entry = head.group(2)
      continue
    if line.startswith("}"):
      current = None
      continue
    if current is None:
      continue
    name = _NAME.match(line)
    if not name:
      continue
    rest = _skip_type(line[name.end():])
    opcode = rest.split("(", 1)[0].strip()
    current.append(Instruction(opcode, line))
  if not entry:
    raise ValueError("no ENTRY computation in the HLO text")
  return computations, entry


def _attr(text: str, name: str) -> str | None:
  m = re.search(rf"\b{name}=%([^\s,)}}]+)", text)
  return m.group(1) if m else None


def trip_count(text: str, computations: dict[str, list[Instruction]] | None = None) -> int | None:
  """A while loop's trip count: the one XLA's GPU backend records, else (TPU) read from a condition of lax.scan's
  form, `counter < N` with the counter starting at 0 and stepping by 1. None when neither is there."""
  m = re.search(r'"known_trip_count":\{"n":"(\d+)"', text)
  if m:
    return int(m.group(1))
  cond = _attr(text, "condition")
  if computations is None or cond not in computations:
    return None
  body = computations[cond]
  limits = [re.search(r"constant\((\d+)\)", i.text) for i in body if i.opcode == "constant"]
  compares = [i for i in body if i.opcode == "compare" and "direction=LT" in i.text]
  if len(compares) == 1 and len([x for x in limits if x]) == 1:
    return int(next(x for x in limits if x).group(1))
  return None


def _branches(text: str) -> list[str]:
  m = re.search(r"branch_computations=\{([^}]*)\}", text)
  if m:
    return [b.strip().lstrip("%") for b in m.group(1).split(",") if b.strip()]
  return [b for b in (_attr(text, "true_computation"), _attr(text, "false_computation")) if b]


@dataclasses.dataclass
class LoopLaunches:
  """Kernels of the outermost loop: per iteration (body + condition) and trip count; outside: the rest."""

  outside: int
  per_iteration: int
  trips: int


def count_launches(computations: dict[str, list[Instruction]], name: str, unroll: bool = True) -> int:
  """Kernels launched by one execution of computation `name`: a loop counts its known trip count times, or once
  (as XLA's thunk listing shows it) with unroll=False."""
  total = 0
  for inst in computations[name]:
    if inst.opcode in NO_KERNEL:
      continue
    if inst.opcode == "while":
      body, cond = _attr(inst.text, "body"), _attr(inst.text, "condition")
      per = count_launches(computations, body, unroll) + count_launches(computations, cond, unroll)
      total += ((trip_count(inst.text, computations) or 1) if unroll else 1) * per
    elif inst.opcode == "conditional":
      total += max((count_launches(computations, b, unroll) for b in _branches(inst.text)), default=0)
    elif inst.opcode == "call":
      total += count_launches(computations, _attr(inst.text, "to_apply"), unroll)
    else:
      total += 1
  return total


def loop_launches(hlo_text: str) -> LoopLaunches:
  """Launches of a program built around one loop (a fused training chunk): one iteration's, the loop's trip count,
  and the rest of the entry computation. A program without a loop has per_iteration 0 and trips 1."""
  computations, entry = parse_computations(hlo_text)
  loops = [inst for inst in computations[entry] if inst.opcode == "while"]
  total = count_launches(computations, entry)
  if not loops:
    return LoopLaunches(outside=total, per_iteration=0, trips=1)
  main = max(loops, key=lambda inst: trip_count(inst.text, computations) or 1)
  trips = trip_count(main.text, computations) or 1
  per = count_launches(computations, _attr(main.text, "body")) + count_launches(computations,
                                                                                _attr(main.text, "condition"))
  return LoopLaunches(outside=total - trips * per, per_iteration=per, trips=trips)


def launches_per_step(hlo_text: str, steps_per_call: int) -> float:
  """Kernels per step of a program that runs `steps_per_call` steps per call (whatever its loop structure)."""
  computations, entry = parse_computations(hlo_text)
  return count_launches(computations, entry) / steps_per_call


COST_KEYS = {"flops": "flops", "bytes accessed": "bytes_accessed", "transcendentals": "transcendentals"}


def xla_cost(compiled) -> dict[str, Any]:
  """FLOPs, bytes accessed and transcendentals of one call, by XLA's HloCostAnalysis with every loop counted its
  known trip count times (`unrolled_cost`). XLA counts a loop body once; where the internal API the unrolled count
  needs is missing, this falls back to the backend's own count (CPU, TPU) and says so with loops_counted_once=True.
  {} when neither works (a deviceless GPU target has no cost analysis of its own)."""
  try:
    return {**unrolled_cost(compiled.as_text()), "loops_counted_once": False}
  except Exception:  # internal API moved: fall back to the public, loop-once figures
    pass
  try:
    cost = compiled.cost_analysis()
  except Exception:  # "GetCostAnalysis is not supported" on a deviceless GPU target
    cost = None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost:
    return {}
  return {**{ours: float(cost.get(theirs, 0.0)) for theirs, ours in COST_KEYS.items()}, "loops_counted_once": True}


def module_cost(hlo_text: str) -> dict[str, float]:
  """XLA's HloCostAnalysis of an HLO module given as text, run through jaxlib's internal bindings on the CPU client
  (internal APIs move between releases: callers catch the failure)."""
  import jax
  from jax._src.lib import _jax, xla_client

  module = xla_client.hlo.hlo_module_from_text(hlo_text)
  cost = _jax.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
  return {ours: float(cost.get(theirs, 0.0)) for theirs, ours in COST_KEYS.items()}


def with_entry(hlo_text: str, name: str) -> str:
  """The module text with computation `name` as its entry (the module header's layouts and aliases dropped)."""
  out = []
  for line in hlo_text.splitlines():
    if line.startswith("HloModule "):
      line = line.split(",", 1)[0]
    elif line.startswith("ENTRY %"):
      line = line[len("ENTRY "):]
    if line.startswith(f"%{name} "):
      line = "ENTRY " + line
    out.append(line)
  return "\n".join(out)


def unrolled_cost(hlo_text: str) -> dict[str, float]:
  """The cost of one call with every while loop counted trip-count times: for a computation C,
  unrolled(C) = once(C) + sum over C's loops of trips * (unrolled(body) + once(cond)) - once(body) - once(cond),
  where once(X) is XLA's count of the module with X as its entry (which counts X's loops' bodies once)."""
  computations, entry = parse_computations(hlo_text)
  once_cache: dict[str, dict[str, float]] = {}

  def once(name):
    if name not in once_cache:
      once_cache[name] = module_cost(hlo_text if name == entry else with_entry(hlo_text, name))
    return once_cache[name]

  def unrolled(name):
    total = dict(once(name))
    for inst in computations[name]:
      if inst.opcode != "while":
        continue
      body, cond = _attr(inst.text, "body"), _attr(inst.text, "condition")
      trips = trip_count(inst.text, computations) or 1
      inner, counted, test = unrolled(body), once(body), once(cond)
      for key in total:
        total[key] += trips * (inner[key] + test[key]) - counted[key] - test[key]
    return total

  return unrolled(entry)


def memory(compiled) -> dict[str, int] | None:
  """Device bytes a call needs: arguments, outputs (less those aliased to donated arguments) and temporaries."""
  try:
    m = compiled.memory_analysis()
  except Exception:
    return None
  if m is None:
    return None
  peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
  return {"argument_bytes": int(m.argument_size_in_bytes), "output_bytes": int(m.output_size_in_bytes),
          "alias_bytes": int(m.alias_size_in_bytes), "temp_bytes": int(m.temp_size_in_bytes), "peak_bytes": int(peak)}


def thunk_kernels(thunk_sequence_text: str) -> int:
  """Kernels in XLA's dumped GPU thunk sequence (`--xla_dump_to`, `*.thunk_sequence.txt`): the thunks that are not
  control flow, each listed once however often it runs. An independent count to check `count_launches` against."""
  control = {"kWhile", "kConditional", "kSequential", "kCommandBuffer"}
  kinds = re.findall(r"^\s*\d+: (k\w+)", thunk_sequence_text, flags=re.M)
  return sum(kind not in control for kind in kinds)

