"""The bench's targets (the 2-core CPU's; seed scaling and the SRPO pipeline hour on an accelerator), the paper
pipelines' training time estimated from the measured rates, and the markdown report."""
from __future__ import annotations

from experiments.bench.latency import SRPO_ACT, SWG_REFERENCE, SWG_SAMPLERS
from experiments.bench.training import CRITIC, SRPO_BEHAVIOUR, SRPO_POLICY, SWG_DIFFUSION

# The project's targets on the 2-core development CPU, next to the official code's numbers on that kind of CPU.
# Training stages: steps/s of one seed, fused (higher is better); actions: ms for one state (lower is better).
CPU_TARGETS = (
    dict(name=f"{CRITIC}, steps/s", stage=CRITIC, target=160.0, official=145.0),
    dict(name=f"{SWG_DIFFUSION}, steps/s", stage=SWG_DIFFUSION, target=10.0, official=8.7),
    dict(name=f"{SRPO_BEHAVIOUR}, steps/s", stage=SRPO_BEHAVIOUR, target=5.3, official=4.6),
    dict(name=f"{SRPO_POLICY}, steps/s", stage=SRPO_POLICY, target=80.0, official=63.0),
    dict(name="SWG guided action at DDPM-15's toy quality, 1 state, ms", swg_action=True, target=1.0, official=5.0),
    dict(name="SRPO action, 1 state, ms", method=SRPO_ACT, target=0.05, official=0.09),
)
# "The same toy quality": energy distance within two noise floors, off-support share within 0.02 (about three
# binomial standard deviations at 2000 samples) of the reference sampler's.
ED_FLOORS, OFF_SUPPORT_SLACK = 2.0, 0.02


def _latency_ms(results: dict, method: str, states: int = 1):
  return next((r["ms"] for r in results.get("latency", []) if r["method"] == method and r["states"] == states), None)


def same_toy_quality(toy: dict) -> list[str]:
  """The guided SWG samplers (SWG-R excluded: it aims at reward, not the target) scoring as well as the reference."""
  scores = toy["scores"]
  ref, floor = scores[SWG_REFERENCE], scores["ground truth again (floor)"]
  return [name for name in SWG_SAMPLERS if "guided" in name and
          scores[name]["energy_distance"] <= ref["energy_distance"] + ED_FLOORS * floor["energy_distance"] and
          scores[name]["off_support"] <= ref["off_support"] + OFF_SUPPORT_SLACK]


def _status(measured, goal: float, higher_is_better: bool, unit: str = "") -> str:
  if measured is None:
    return "not measured"
  if higher_is_better:
    return (f"met ({measured / goal:.2f}x the target)" if measured >= goal else
            f"missed by {100 * (1 - measured / goal):.0f}%")
  return (f"met ({goal / measured:.1f}x under)" if measured <= goal else
          f"missed by {measured / goal:.1f}x ({measured - goal:.3g}{unit} over)")


def _fused_rate(rows, stage: str, seeds: int):
  return next((r["steps_per_sec"] for r in rows
               if r["stage"] == stage and r["seeds"] == seeds and r["mode"] == "fused"), None)


def evaluate_targets(results: dict) -> list[dict]:
  """The 2-core CPU targets."""
  rows = []
  for t in CPU_TARGETS:
    higher_is_better, via = "stage" in t, ""
    if higher_is_better:
      measured = _fused_rate(results["rows"], t["stage"], 1)
    elif t.get("swg_action"):
      candidates = same_toy_quality(results["toy"]) if results.get("toy") else [SWG_REFERENCE]
      timed = [(_latency_ms(results, name), name) for name in candidates if _latency_ms(results, name) is not None]
      measured, via = min(timed) if timed else (None, "")
      if not results.get("toy"):
        via += " (toy quality not measured)"
    else:
      measured = _latency_ms(results, t["method"])
    rows.append({"target": t["name"], "measured": measured, "goal": t["target"], "official": t["official"],
                 "status": _status(measured, t["target"], higher_is_better, " ms"), "via": via})
  return rows


# The accelerator targets: 8 vmapped seeds in at most 1.5x one seed's wall time per step, for every stage; the SRPO
# pipeline at the paper's step counts for 5 seeds of one dataset in under an hour (set for one H100).
SEED_SCALING_GOAL, SCALING_SEEDS = 1.5, 8
PIPELINE_SEEDS, SRPO_PIPELINE_HOURS = 5, 1.0


def paper_pipelines() -> dict:
  """Per-seed training steps of each paper pipeline by bench stage, from the paper configs. Both use the bench's
  critic step (SWG's, with a LayerNorm on V's input that SRPO's lacks: a slight overestimate for SRPO)."""
  import swg_jax
  from srpo_jax import configs

  srpo, swg = configs.get_config("paper"), swg_jax.get_config("paper")
  return {"SRPO": ((CRITIC, srpo.critic.num_steps), (SRPO_BEHAVIOUR, srpo.behavior.num_steps),
                   (SRPO_POLICY, srpo.policy.num_steps)),
          "SWG": ((CRITIC, swg.critic.num_steps), (SWG_DIFFUSION, swg.diffusion.num_steps))}


def seconds_per_step(rows, stage: str, seeds: int):
  """(wall seconds of one fused step of `seeds` vmapped seeds, seed count it comes from), or (None, None).

  From the smallest measured count >= seeds (an upper bound: a step of fewer seeds is no slower), else the largest
  count's time scaled by seeds / count (as if vmapping gained nothing)."""
  rates = {r["seeds"]: r["steps_per_sec"] for r in rows if r["stage"] == stage and r["mode"] == "fused"}
  if not rates:
    return None, None
  at_least = [n for n in rates if n >= seeds]
  n = min(at_least) if at_least else max(rates)
  return (1.0 if at_least else seeds / n) / rates[n], n


def pipeline_estimates(results: dict, seeds: int = PIPELINE_SEEDS) -> list[dict]:
  """Training time of each paper pipeline for `seeds` seeds at once, from the measured fused rates (training steps
  only: no evaluation, checkpoints or the weights pass). hours is None when a stage was not measured."""
  estimates = []
  for name, stages in paper_pipelines().items():
    parts = []
    for stage, steps in stages:
      per_step, from_seeds = seconds_per_step(results["rows"], stage, seeds)
      parts.append({"stage": stage, "steps": steps, "from_seeds": from_seeds,
                    "hours": None if per_step is None else steps * per_step / 3600})
    known = [p["hours"] for p in parts if p["hours"] is not None]
    estimates.append({"pipeline": name, "seeds": seeds, "stages": parts,
                      "hours": sum(known) if len(known) == len(parts) else None})
  return estimates


def evaluate_accelerator_targets(results: dict) -> list[dict]:
  rows = []
  for stage in (CRITIC, SWG_DIFFUSION, SRPO_BEHAVIOUR, SRPO_POLICY):
    one, many = _fused_rate(results["rows"], stage, 1), _fused_rate(results["rows"], stage, SCALING_SEEDS)
    ratio = one / many if one and many else None
    rows.append({"target": f"{stage}: wall time of {SCALING_SEEDS} seeds / 1 seed", "measured": ratio,
                 "goal": SEED_SCALING_GOAL, "status": _status(ratio, SEED_SCALING_GOAL, False), "via": ""})
  srpo = next(p for p in results["pipelines"] if p["pipeline"] == "SRPO")
  rows.append({"target": f"SRPO pipeline at the paper's steps, {srpo['seeds']} seeds, hours", "measured": srpo["hours"],
               "goal": SRPO_PIPELINE_HOURS, "status": _status(srpo["hours"], SRPO_PIPELINE_HOURS, False, " h"),
               "via": ""})
  return rows


def seed_scaling(rows: list[dict]) -> list[dict]:
  """Per stage with a fused 1-seed row: the wall time per fused step of N seeds / 1 seed for each measured N > 1
  (1.0 is perfect scaling, N is none), and the accelerator goal's status at SCALING_SEEDS seeds."""
  out = []
  for stage in dict.fromkeys(r["stage"] for r in rows if r["mode"] == "fused"):
    one = _fused_rate(rows, stage, 1)
    if not one:
      continue
    ratios = {r["seeds"]: one / r["steps_per_sec"] for r in rows
              if r["stage"] == stage and r["mode"] == "fused" and r["seeds"] > 1}
    out.append({"stage": stage, "ratios": ratios,
                "status": _status(ratios.get(SCALING_SEEDS), SEED_SCALING_GOAL, False)})
  return out


def seed_scaling_markdown(rows: list[dict]) -> list[str]:
  """The seed-scaling table (no lines when no stage has more than one seed count)."""
  scaling = [s for s in seed_scaling(rows) if s["ratios"]]
  if not scaling:
    return []
  counts = sorted({n for s in scaling for n in s["ratios"]})
  lines = [f"Seed scaling: wall time per fused step of N vmapped seeds / 1 seed (1 is perfect, N is no gain); the "
           f"goal on accelerators is <= {SEED_SCALING_GOAL:g}x at {SCALING_SEEDS} seeds:", "",
           "| stage | " + " | ".join(f"{n} seeds / 1" for n in counts) +
           f" | goal <= {SEED_SCALING_GOAL:g}x at {SCALING_SEEDS} seeds |", "|---|" + "---|" * (len(counts) + 1)]
  for s in scaling:
    cells = ["—" if n not in s["ratios"] else f"{s['ratios'][n]:.2f}x" for n in counts]
    lines.append(f"| {s['stage']} | " + " | ".join(cells) + f" | {s['status']} |")
  return lines


def population_gains(rows: list[dict]) -> list[dict]:
  """Per stage and member count N of a population row: member-steps/s of the population, the gain over N runs of
  one seed one after another (the fused 1-seed rate), and the population against N plain seeds (the cost of each
  member reading its own dataset's rows)."""
  out = []
  for r in rows:
    if r["mode"] != "population":
      continue
    one, seeds = _fused_rate(rows, r["stage"], 1), _fused_rate(rows, r["stage"], r["seeds"])
    members = r["steps_per_sec"] * r["seeds"]
    out.append({"stage": r["stage"], "members": r["seeds"], "member_steps_per_sec": members,
                "gain": members / one if one else None,
                "against_seeds": r["steps_per_sec"] / seeds if seeds else None})
  return out


def population_markdown(rows: list[dict]) -> list[str]:
  gains = population_gains(rows)
  if not gains:
    return []
  lines = ["Populations: N members spread over 3 datasets (each sampling its own rows) in one fused program: "
           "member-steps/s, the gain over N one-seed runs one after another, and the rate against N plain seeds:", "",
           "| stage | members | member-steps/s | gain over N runs | population / seeds |", "|---|---|---|---|---|"]
  fmt = lambda x, f: "—" if x is None else format(x, f)
  for g in gains:
    lines.append(f"| {g['stage']} | {g['members']} | {g['member_steps_per_sec']:.1f} | {fmt(g['gain'], '.2f')}x | "
                 f"{fmt(g['against_seeds'], '.2f')} |")
  return lines


def _duration(hours: float) -> str:
  return f"{hours:.1f} h" if hours >= 1 else f"{60 * hours:.0f} min"


def _measured(target: dict) -> str:
  measured = "—" if target["measured"] is None else f"{target['measured']:.3g}"
  return measured + (f" ({target['via']})" if target["via"] else "")


def to_markdown(results: dict) -> str:
  m = results["machine"]
  lines = [f"Machine: {m['device']} ({m['platform']}, {m['cpu_count']} CPU cores, {m['cpu']}), jax {m['jax']}; "
           f"measured f32 matmul rate {results['matmul_gflops']:.1f} GFLOP/s.", "",
           "| stage | seeds | mode | steps/s | seed-steps/s | GFLOP/s | % of matmul rate | XLA's FLOPs / counted | "
           "compile (s) |", "|---|---|---|---|---|---|---|---|---|"]
  for r in results["rows"]:
    xla = r.get("xla_flops_per_step")
    xla_ratio = f"{xla / r['flops_per_step']:.2f}" if xla and r.get("flops_per_step") else "—"
    lines.append(f"| {r['stage']} | {r['seeds']} | {r['mode']} | {r['steps_per_sec']:.1f} | "
                 f"{r['steps_per_sec'] * r['seeds']:.1f} | {r['achieved_gflops']:.1f} | "
                 f"{100 * r['achieved_gflops'] / results['matmul_gflops']:.0f}% | "
                 f"{xla_ratio} | {r['compile_s']:.1f} |")
  lines += ["", "FLOPs per step are counted from the shapes of the step's matrix products (forward, backward and any "
            "sampling in the step, one seed's times the seed count; elementwise work not counted), since XLA's cost "
            "analysis undercounts vmapped steps on GPUs; its count is beside them as a cross-check."]
  scaling = seed_scaling_markdown(results["rows"])
  if scaling:
    lines += [""] + scaling
  populations = population_markdown(results["rows"])
  if populations:
    lines += [""] + populations
  if results.get("latency"):
    states = sorted({r["states"] for r in results["latency"]})
    methods = list(dict.fromkeys(r["method"] for r in results["latency"]))
    toy = results.get("toy")
    lines += ["", "Action selection: median wall time of one call (paper-size networks, hopper dimensions, temperature "
              "1), and for the SWG samplers the quality of the same sampler on a toy (below):", "",
              "| method | " + " | ".join(f"ms, {n} state{'s' if n > 1 else ''}" for n in states) +
              " | toy: energy distance | toy: off support | toy: mean E |", "|---|" + "---|" * (len(states) + 3)]
    for name in methods:
      times = [_latency_ms(results, name, n) for n in states]
      score = toy["scores"].get(name) if toy else None
      quality = (f"{score['energy_distance']:.4f} | {score['off_support']:.3f} | {score['mean_energy']:.3f}"
                 if score else "— | — | —")
      lines.append(f"| {name} | " + " | ".join("—" if t is None else f"{t:.3f}" for t in times) + f" | {quality} |")
    if toy:
      ref = [(name, toy["scores"][name]) for name in ("ground truth again (floor)", "unguided (rho = 0), DDPM-15")]
      lines += ["", f"Toy: SWG on {toy['dataset']} at beta = {toy['beta']:g} (data in [-1, 1], T = 15, small network, "
                f"{toy['train_steps']} training steps in {toy['train_s']:.0f} s), rho = 1, {toy['samples']} samples "
                "per score, against draws of the target mu exp(beta E): energy distance, share of samples off the "
                "target's support (registers blur) and mean energy E (reward; SWG-R keeps the candidate of highest "
                f"sampled w). Target's mean E {toy['truth_mean_energy']:.3f}; "
                + "; ".join(f"{name}: {sc['energy_distance']:.4f} / {sc['off_support']:.3f} / {sc['mean_energy']:.3f}"
                            for name, sc in ref) + "."]
  if results.get("pipelines"):
    described = []
    for p in results["pipelines"]:
      steps = " + ".join(f"{s['steps'] / 1e6:g}M {s['stage'].split(' step')[0]}" for s in p["stages"])
      rates = ", ".join(sorted({f"{s['from_seeds']}-seed rates" for s in p["stages"] if s["from_seeds"]}))
      described.append(f"{p['pipeline']}: " + ("not measured" if p["hours"] is None else
                                               f"{_duration(p['hours'])} ({steps} steps; {rates})"))
    seeds = results["pipelines"][0]["seeds"]
    lines += ["", f"Paper pipelines, {seeds} seeds at once on {m['device']}, estimated from the fused rates above "
              "(training steps only; evaluation and checkpoints excluded): " + "; ".join(described) + "."]
  if results.get("targets") and m["platform"] == "cpu":
    lines += ["", "The project's targets on this 2-core CPU, next to the official code's numbers on such a CPU:",
              "", "| target | measured | goal | official | status |", "|---|---|---|---|---|"]
    for t in results["targets"]:
      lines.append(f"| {t['target']} | {_measured(t)} | {t['goal']:g} | {t['official']:g} | {t['status']} |")
  elif results.get("targets"):
    lines += ["", f"The project's targets on an accelerator (the pipeline's is set for one H100), measured on "
              f"{m['device']}:", "", "| target | measured | goal | status |", "|---|---|---|---|"]
    for t in results["targets"]:
      lines.append(f"| {t['target']} | {_measured(t)} | {t['goal']:g} | {t['status']} |")
  return "\n".join(lines) + "\n"

