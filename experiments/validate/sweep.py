"""A sweep's report: population runs of `experiments.train --sweep` (one per dataset) side by side, as a table and a
figure of final score and drift against the swept value.

  python -m experiments.validate.sweep --runs=results/validate/runs/sweeps/srpo_hopper_medium,... \
    --field=policy.beta --out=results/validate --name=beta_sweep

For each run folder: every setting's evaluation and drift (settings/<name>/summary.json), the dataset's average and
the data-making policy's score (cached beside the run as reference_<dataset>.json), and the critic's last mean Q on the data
(metrics_critic.jsonl; the population's first critic when several). Writes <name>.md and <name>.png into --out.

With --rule (SRPO, field policy.beta), each run's trained critic and behaviour model are read back from its
checkpoints and give the beta a rule would have chosen before the policy trained (`srpo_jax.drift.beta_for_distance`:
the beta that holds the policy --rule_distance behaviour spreads from the data's mean), beside the best beta found.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

from common.checkpoint import write_text_atomic
from common.metrics_file import read_records
from common.run.plots import save_figure_atomic

DRIFT = ("behaviour_distance", "at_bounds", "q_pull", "reg_pull")


def collect(run: str, field: str) -> list[dict]:
  """One row per setting of a population run folder, ordered by the swept value."""
  config = json.load(open(os.path.join(run, "config.json")))
  rows = []
  for path in sorted(glob.glob(os.path.join(run, "settings", "**", "summary.json"), recursive=True)):
    summary = json.load(open(path))
    values = dict(zip(config["population"]["settings"], map(json.loads, config["population"]["values"])))
    name = os.path.relpath(os.path.dirname(path), os.path.join(run, "settings"))
    value = values.get(name, {}).get(field)
    ev = next(iter(summary["eval"].values()))
    rows.append({"dataset": summary["dataset"], "value": value, "score": ev.get("score"),
                 "return": ev.get("return"), "drift": summary.get("drift", {}), "run": run})
  critic = os.path.join(run, "metrics_critic.jsonl")
  q_mean = None
  if os.path.exists(critic):
    last = list(read_records(critic, note=False))[-1]["metrics"].get("q_mean")
    q_mean = float(np.mean(last)) if last is not None else None
  for r in rows:
    reference = _reference(run, r["dataset"])
    r.update(q_mean=q_mean, data_score=reference.get("dataset_score"), policy_score=reference.get("policy_score"))
  return sorted(rows, key=lambda r: (r["dataset"], r["value"]))


def _reference(run: str, dataset: str) -> dict:
  from common.data import load_dataset
  from experiments.validate import dataset_reference

  path = os.path.join(run, f"reference_{dataset.replace('/', '_')}.json")
  if os.path.exists(path):
    return json.load(open(path))
  _, info = load_dataset(dataset)
  return dataset_reference(dataset, info, path)


def rule_for_run(run: str, distance: float = 1.0) -> dict[str, dict]:
  """{dataset: {sigma, grad_q (mean over seeds), beta (the rule's), paper_beta, predicted distance at the paper's
  beta}} from the run's finished critic and behaviour model (restored from its checkpoints; nothing trains)."""
  import jax
  import jax.numpy as jnp
  import ml_collections

  import srpo_jax
  from common import population
  from common import run as run_lib
  from common.networks import TwinQ, compute_dtype
  from srpo_jax import behavior, drift

  saved = json.load(open(os.path.join(run, "config.json")))
  pop = saved.pop("population")
  saved.pop("algo", None)
  config = ml_collections.ConfigDict(saved)
  configs = []
  for name in pop["datasets"]:
    c = ml_collections.ConfigDict(saved)
    c.dataset = name
    configs.append(c)
  datasets, _ = run_lib.load_population_data(configs, download=False)
  sweeps: dict[str, list] = {}
  for values in map(json.loads, pop["values"]):
    for path, value in values.items():
      sweeps.setdefault(path, [])
      if value not in sweeps[path]:
        sweeps[path].append(value)
  members = population.grid(config.seeds, pop["datasets"], sweeps)
  result = srpo_jax.train(config, datasets, workdir=run, members=members)
  action_dim = next(iter(datasets.values())).action_dim
  net = behavior.behavior_net(action_dim, config.behavior)
  twin = TwinQ(hidden=tuple(config.critic.hidden), dtype=compute_dtype(config.critic.get("compute_dtype", "float32")))
  states = srpo_jax.drift_states(datasets)
  out = {}
  for name in pop["datasets"]:
    scales = []
    for seed in config.seeds:
      i = next(j for j, m in enumerate(members) if m.dataset == name and m.seed == seed)
      bp = jax.tree.map(lambda x: x[i], result.behavior.params)
      qp = jax.tree.map(lambda x: x[i], result.critic.q_target_params)
      scales.append(drift.behaviour_scale(lambda a, t, s: net.apply(bp, a, t, s, train=False),
                                          lambda s, a: jnp.mean(twin.apply(qp, s, a), axis=0), jnp.asarray(states[name]),
                                          action_dim, jax.random.PRNGKey(seed)))
    sigma = float(np.mean([float(x["sigma"]) for x in scales]))
    grad_q = float(np.mean([float(x["grad_q"]) for x in scales]))
    paper_beta = srpo_jax.configs.get_config(f"{name}:paper").policy.beta
    out[name] = {"sigma": sigma, "grad_q": grad_q, "distance": distance,
                 "beta": drift.beta_for_distance(sigma, grad_q, config.policy, distance), "paper_beta": paper_beta,
                 "paper_distance": drift.predicted_distance(paper_beta, sigma, grad_q, config.policy)}
  return out


def rule_markdown(rows: list[dict], rules: dict[str, dict]) -> str:
  """Per dataset: the rule's inputs and beta, the grid's best beta, and the score at the grid value nearest the rule's
  (in log scale)."""
  lines = ["| dataset | behaviour spread σ (per coordinate) | RMS ∇ₐQ at behaviour samples | paper β: predicted distance "
           "(spreads) | rule's β (distance {d:g}) | grid β nearest the rule: score | best β on the grid: score |"
           .format(d=next(iter(rules.values()))["distance"]), "|" + "---|" * 7]
  for dataset, r in rules.items():
    part = [x for x in rows if x["dataset"] == dataset and x["score"]]
    best = max(part, key=lambda x: x["score"]["mean"])
    positive = [x for x in part if x["value"] > 0]
    near = min(positive, key=lambda x: abs(np.log(x["value"] / r["beta"])))
    lines.append(f"| {dataset} | {r['sigma']:.3f} | {r['grad_q']:.1f} | {r['paper_beta']:g}: {r['paper_distance']:.1f} | "
                 f"{r['beta']:.3g} | {near['value']:g}: {_ms(near['score'])} | {best['value']:g}: {_ms(best['score'])} |")
  return "\n".join(lines) + "\n"


def _ms(stat, digits=1) -> str:
  return "—" if not stat else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown(rows: list[dict], field: str) -> str:
  lines = [f"| dataset | {field} | score | per seed | behaviour distance | at bounds | beta·RMS(∇Q) | regulariser pull |"
           " critic's mean Q | data average | data-making policy |", "|" + "---|" * 11]
  for r in rows:
    per_seed = ", ".join(f"{x:.1f}" for x in (r["score"] or {}).get("per_seed", []))
    d = r["drift"]
    num = lambda x, fmt: "—" if x is None else format(x, fmt)
    lines.append(f"| {r['dataset']} | {r['value']:g} | {_ms(r['score'])} | {per_seed} | "
                 f"{_ms(d.get('behaviour_distance'), 2)} | {_ms(d.get('at_bounds'), 2)} | {_ms(d.get('q_pull'), 3)} | "
                 f"{_ms(d.get('reg_pull'), 3)} | {num(r['q_mean'], '.0f')} | {num(r['data_score'], '.1f')} | "
                 f"{num(r['policy_score'], '.1f')} |")
  return "\n".join(lines) + "\n"


def _beta_axis(ax, x) -> None:
  """Log scale above the smallest positive value, linear below it down to 0 (no negative side)."""
  linthresh = min(v for v in x if v > 0) if (x > 0).any() else 1.0
  ax.set_xscale("symlog", linthresh=linthresh)
  ax.set_xlim(left=-0.3 * linthresh if (x <= 0).any() else None)


def plot(rows: list[dict], field: str, out_png: str, rules: dict | None = None) -> str:
  """Per dataset (a column): the final score against the swept value with the data's average and the data-making
  policy as lines; below it the drift (distance to the behaviour samples, share at the bounds)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  datasets = list(dict.fromkeys(r["dataset"] for r in rows))
  fig, axes = plt.subplots(2, len(datasets), figsize=(4.6 * len(datasets), 7.0), squeeze=False)
  for j, dataset in enumerate(datasets):
    part = [r for r in rows if r["dataset"] == dataset]
    x = np.asarray([r["value"] for r in part], float)
    ax = axes[0, j]
    mean = np.asarray([r["score"]["mean"] for r in part])
    std = np.asarray([r["score"]["std"] for r in part])
    ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, color="tab:blue", label="SRPO, mean ± std of seeds")
    for r in part:
      ax.scatter([r["value"]] * len(r["score"]["per_seed"]), r["score"]["per_seed"], s=10, color="tab:blue", alpha=0.4)
    if part[0]["data_score"] is not None:
      ax.axhline(part[0]["data_score"], color="0.4", ls="--", label="dataset average")
    if part[0]["policy_score"] is not None:
      ax.axhline(part[0]["policy_score"], color="tab:green", ls=":", label="policy that made the data")
    if rules and dataset in rules:
      ax.axvline(rules[dataset]["beta"], color="tab:orange", ls="-.", label=f"rule's {field}")
    _beta_axis(ax, x)
    ax.set_title(dataset, fontsize=11)
    ax.set_ylabel("normalised score")
    ax.legend(fontsize=7)
    ax = axes[1, j]
    ax.plot(x, [r["drift"]["behaviour_distance"]["mean"] for r in part], marker="o", color="tab:red",
            label="distance to behaviour samples (in their spread)")
    _beta_axis(ax, x)
    ax.set_xlabel(field)
    ax.set_ylabel("distance / spread", color="tab:red")
    twin = ax.twinx()
    twin.plot(x, [r["drift"]["at_bounds"]["mean"] for r in part], marker="s", color="tab:purple",
              label="share of action coordinates at the bounds")
    twin.set_ylim(0, 1)
    twin.set_ylabel("share at the bounds", color="tab:purple")
    lines = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=7, loc="upper left")
  fig.suptitle(f"SRPO against {field}: final score (top) and how far the policy left the data (bottom)")
  fig.tight_layout()
  return save_figure_atomic(fig, out_png)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.validate.sweep", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", required=True, help="comma-separated population run folders")
  parser.add_argument("--field", default="policy.beta")
  parser.add_argument("--out", default="results/validate")
  parser.add_argument("--name", default="beta_sweep")
  parser.add_argument("--rule", action="store_true", help="SRPO: the beta rule from each run's critic and behaviour")
  parser.add_argument("--rule_distance", type=float, default=1.0, help="spreads from the data's mean the rule aims at")
  args = parser.parse_args(argv)
  runs = [r for r in args.runs.split(",") if r]
  missing = [r for r in runs if not os.path.exists(os.path.join(r, "config.json"))]
  if missing:
    print(f"error: --runs: no population run in {', '.join(missing)}", file=sys.stderr)
    return 2
  rows = [row for run in runs for row in collect(run, args.field)]
  rules = {}
  if args.rule:
    for run in runs:
      rules.update(rule_for_run(run, args.rule_distance))
  text = markdown(rows, args.field) + (("\n" + rule_markdown(rows, rules)) if rules else "")
  os.makedirs(args.out, exist_ok=True)
  write_text_atomic(os.path.join(args.out, f"{args.name}.md"), text)
  plot(rows, args.field, os.path.join(args.out, f"{args.name}.png"), rules)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
