"""The cost model's estimates from the compiled training programs: steps/s per stage and seed count, seed scaling,
the paper pipelines and the whole locomotion table on one GPU."""
from __future__ import annotations

from experiments.aot_check import breakdown
from experiments.aot_check.cost_model import CostModel, bound

STAGE_NAMES = {"critic": "IQL critic (b256)", "swg": "SWG diffusion (b1024)", "srpo_behavior": "SRPO behaviour (b2048)",
               "srpo_policy": "SRPO policy (b256)", "sac": "SAC (b256)"}
SCALING_GOAL, SCALING_SEEDS = 1.5, 8  # 8 seeds in at most 1.5x one seed's wall time per step
PIPELINE_SEEDS, SRPO_PIPELINE_GOAL_H, TABLE_GOAL_H = 5, 1.0, 4.0
LOCOMOTION_DATASETS = 9  # {halfcheetah, hopper, walker2d} x {medium, medium-replay, medium-expert}
LEVELS_PER_ENVIRONMENT = 3  # the datasets of one environment: one population of them x PIPELINE_SEEDS seeds
POPULATION_MEMBERS = LEVELS_PER_ENVIRONMENT * PIPELINE_SEEDS


def paper_pipelines() -> dict[str, list[tuple[str, int]]]:
  """Per-seed training steps of each paper pipeline by stage (both critics priced as the SWG critic, whose V has a
  LayerNorm on its input that SRPO's lacks: a slight overestimate for SRPO)."""
  import swg_jax
  from srpo_jax import configs

  srpo, swg = configs.get_config("paper"), swg_jax.get_config("paper")
  return {"SRPO": [("critic", srpo.critic.num_steps), ("srpo_behavior", srpo.behavior.num_steps),
                   ("srpo_policy", srpo.policy.num_steps)],
          "SWG": [("critic", swg.critic.num_steps), ("swg", swg.diffusion.num_steps)]}


def training_rows(rows: list[dict], target: str) -> dict[tuple[str, int], dict]:
  """{(stage, seeds): row} of the target's single-device training programs that compiled with a breakdown."""
  return {(r["stage"], r["seeds"]): r for r in rows
          if r["target"] == target and r["group"] == "train" and r["status"] == "ok" and "gemm_flops_by_dtype" in r
          and "[" not in r["program"]}


def stage_estimates(model: CostModel, rows: dict) -> list[dict]:
  """Per stage: estimated steps/s at every compiled seed count, the wall-time ratio of 8 seeds to 1, what bounds it."""
  out = []
  for stage in STAGE_NAMES:
    counts = sorted(n for s, n in rows if s == stage)
    if not counts:
      continue
    rates = {n: model.steps_per_second(rows[(stage, n)]) for n in counts}
    ratio = rates[1] / rates[SCALING_SEEDS] if 1 in rates and SCALING_SEEDS in rates else None
    out.append({"stage": stage, "steps_per_sec": rates, "ratio": ratio,
                "bound": {n: bound(model, rows[(stage, n)]) for n in counts},
                "terms": {n: model.terms(rows[(stage, n)]) for n in counts}})
  return out


def seconds_per_step(model: CostModel, rows: dict, stage: str, seeds: int) -> float | None:
  """Wall seconds of one step of `seeds` seeds: from the smallest compiled count >= seeds (an upper bound)."""
  counts = sorted(n for s, n in rows if s == stage and n >= seeds)
  return model.step_seconds(rows[(stage, counts[0])]) if counts else None


def pipeline_hours(model: CostModel, rows: dict, seeds: int = PIPELINE_SEEDS) -> dict[str, float | None]:
  out = {}
  for name, stages in paper_pipelines().items():
    parts = [seconds_per_step(model, rows, stage, seeds) for stage, _ in stages]
    out[name] = (None if None in parts else
                 sum(steps * t for (_, steps), t in zip(stages, parts)) / 3600)
  return out


def table_hours(pipelines: dict[str, float | None], datasets: int = LOCOMOTION_DATASETS) -> float | None:
  """The locomotion table: every dataset's SWG and SRPO runs of PIPELINE_SEEDS seeds, one after another."""
  if None in pipelines.values():
    return None
  return datasets * sum(pipelines.values())


def population_rates(model: CostModel, rows: dict) -> list[dict]:
  """Per stage: estimated member-steps/s (members x steps/s of the program) at every compiled member count, and
  what that is against one member alone. A population's program is the seeds' vmapped program plus each member's
  row offset and swept scalars, so the seed-count programs price it."""
  out = []
  for stage in STAGE_NAMES:
    counts = sorted(n for s, n in rows if s == stage)
    if stage == "sac" or 1 not in counts:
      continue
    per_member = {n: n * model.steps_per_second(rows[(stage, n)]) for n in counts}
    out.append({"stage": stage, "member_steps_per_sec": per_member,
                "speedup": {n: per_member[n] / per_member[1] for n in counts}})
  return out


def population_table_hours(model: CostModel, rows: dict, members: int = POPULATION_MEMBERS,
                           datasets: int = LOCOMOTION_DATASETS) -> float | None:
  """The locomotion table as one population per algorithm and environment (its datasets x PIPELINE_SEEDS seeds,
  `members` in all), the populations one after another."""
  return table_hours(pipeline_hours(model, rows, members), datasets // (members // PIPELINE_SEEDS))


def where_time_goes(model: CostModel, rows: dict, stages=("swg", "srpo_behavior"), seeds=(1, 8)) -> list[dict]:
  out = []
  for stage in stages:
    for n in seeds:
      row = rows.get((stage, n))
      if row and row.get("groups"):
        out.append({"stage": stage, "seeds": n, "step_seconds": model.step_seconds(row),
                    "groups": breakdown.attribute(row["groups"], model, row)})
  return out
