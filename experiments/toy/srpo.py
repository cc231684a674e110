"""SRPO on the 2-D toy bandits: the extracted action for Q(a) = -||a - a_target||^2 as 1/beta goes from 0 up.

  python -m experiments.toy.srpo --size=small --out=/tmp/toy_srpo
  python -m experiments.toy.srpo --size=full --out=results/toy_srpo     # all six datasets, paper-size nets
  python -m experiments.toy.srpo --size=smoke --out=/tmp/toy_srpo       # a few steps: checks the wiring

A progress bar (rate and ETA) counts the training steps of every behaviour model and policy.

Per dataset a diffusion behaviour model is trained on the points (no state). The targets a_target form a grid; one
Dirac policy per 1/beta is extracted with the target as its state (q(s, a) = -||a - s||^2, the behaviour ignores s),
so a single policy answers every target. With 1/beta = 0 the policy is greedy (a = a_target); as 1/beta grows the
action moves into the data support. Writes toy_srpo.png, metrics.json and metrics.md: per dataset and 1/beta the mean
distance of the action to its target and to the nearest data point, plus the behaviour model's energy distance to
the data (its sample quality).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

import srpo_jax
from common.checkpoint import write_text_atomic
from common.run.plots import save_figure_atomic
from common.data.toys import TOY_DATASETS, energy_distance, sample_toy
from srpo_jax import behavior as behavior_lib
from srpo_jax import configs

# 0..1 is the paper's range; with this Q scale the pull into the support becomes strong only past 1, so go on to 10.
INV_BETAS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
GREEDY_BETA = 1e6  # 1/beta = 0: the regulariser is negligible next to the Q term (Adam is scale-free)
SIZES = {
    "smoke": dict(datasets=("8gaussians",), data=2000, hidden=16, beh_steps=20, beh_batch=64, pol_steps=20, grid=2),
    "small": dict(datasets=("8gaussians", "moons"), data=20_000, hidden=64, beh_steps=3000, beh_batch=512,
                  pol_steps=2000, grid=5),
    "full": dict(datasets=TOY_DATASETS, data=100_000, hidden=256, beh_steps=30_000, beh_batch=2048,
                 pol_steps=20_000, grid=7),
}


def behavior_config(size: dict) -> ml_collections.ConfigDict:
  c = configs.get_config("paper").behavior
  c.update(hidden=size["hidden"], dropout_rate=0.0, batch_size=size["beh_batch"], num_steps=size["beh_steps"],
           lr=1e-3)
  return c


def policy_config(size: dict, inv_beta: float, weighting: str = "sigma2") -> ml_collections.ConfigDict:
  c = configs.get_config("paper").policy
  c.update(num_steps=size["pol_steps"], beta=1.0 / inv_beta if inv_beta > 0 else GREEDY_BETA, lr=1e-3,
           weighting=weighting)
  return c


def target_grid(n: int) -> np.ndarray:
  g = np.linspace(-0.8, 0.8, n, dtype=np.float32)
  return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)


def nearest_distance(x: np.ndarray, points: np.ndarray) -> np.ndarray:
  return np.sqrt(np.min(np.sum((x[:, None] - points[None]) ** 2, -1), axis=1))


def total_steps(size: dict) -> int:
  """Training steps of a whole run: per dataset one behaviour model and one policy per 1/beta."""
  return len(size["datasets"]) * (size["beh_steps"] + len(INV_BETAS) * size["pol_steps"])


def run_dataset(name: str, size: dict, seed: int, weighting: str = "sigma2", bar=None):
  """Behaviour model and one policy per 1/beta on one dataset; advances `bar` (tqdm) by the steps trained."""
  bar = bar if bar is not None else tqdm(disable=True)
  points, _ = sample_toy(name, size["data"], np.random.default_rng(seed))
  no_state = np.zeros((len(points), 0), np.float32)
  bar.set_postfix_str(f"{name}: behaviour")
  beh = srpo_jax.fit_behavior(no_state, points, behavior_config(size), jax.random.PRNGKey(seed),
                              steps_per_call=min(1000, size["beh_steps"]))
  bar.update(size["beh_steps"])
  eps0 = behavior_lib.behavior_eps_fn(beh.params, apply_fn=beh.apply_fn)
  eps_fn = lambda a_t, t, s: eps0(a_t, t, jnp.zeros((a_t.shape[0], 0), a_t.dtype))
  samples = np.asarray(behavior_lib.sample_behavior(eps_fn, jnp.zeros((2000, 0)), 2, jax.random.PRNGKey(seed + 1)))
  ref = points[np.random.default_rng(seed + 2).choice(len(points), 2000, replace=False)]
  behavior_ed = energy_distance(samples, ref)

  targets = target_grid(size["grid"])
  q_fn = lambda s, a: -jnp.sum((a - s) ** 2, axis=-1)
  actions, rows = {}, []
  for inv_beta in INV_BETAS:
    cfg = policy_config(size, inv_beta, weighting)
    bar.set_postfix_str(f"{name}: policy 1/beta={inv_beta}")
    pol = srpo_jax.extract_policy(eps_fn, q_fn, targets, cfg, jax.random.PRNGKey(seed + 3), action_dim=2,
                                  steps_per_call=min(1000, size["pol_steps"]))
    a = np.asarray(srpo_jax.act(pol, jnp.asarray(targets)))
    bar.update(size["pol_steps"])
    actions[inv_beta] = a
    rows.append({"dataset": name, "inv_beta": inv_beta,
                 "dist_to_target": float(np.mean(np.linalg.norm(a - targets, axis=-1))),
                 "dist_to_data": float(np.mean(nearest_distance(a, points[:20_000]))),
                 "behavior_energy_distance": behavior_ed})
    bar.write(f"  {name} 1/beta={inv_beta}: |a - target| {rows[-1]['dist_to_target']:.3f}, "  # not onto the bar
              f"dist to data {rows[-1]['dist_to_data']:.3f}")
  return {"points": points[:3000], "samples": samples, "targets": targets, "actions": actions}, rows


def plot(panels: dict, path: str):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(panels)
  fig, axes = plt.subplots(len(names), len(INV_BETAS), figsize=(3 * len(INV_BETAS), 3 * len(names)), squeeze=False)
  for i, name in enumerate(names):
    p = panels[name]
    for j, inv_beta in enumerate(INV_BETAS):
      ax = axes[i, j]
      ax.scatter(p["points"][:, 0], p["points"][:, 1], s=1, c="0.75", rasterized=True)
      a, tg = p["actions"][inv_beta], p["targets"]
      for k in range(len(tg)):
        ax.plot([tg[k, 0], a[k, 0]], [tg[k, 1], a[k, 1]], c="tab:blue", lw=0.6, alpha=0.6)
      ax.scatter(tg[:, 0], tg[:, 1], marker="x", s=12, c="tab:red", label="target")
      ax.scatter(a[:, 0], a[:, 1], s=10, c="tab:blue", label="SRPO action")
      ax.set(xlim=(-1, 1), ylim=(-1, 1), xticks=[], yticks=[], aspect="equal")
      if i == 0:
        ax.set_title(f"1/beta = {inv_beta}")
      if j == 0:
        ax.set_ylabel(name, fontsize=12)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  fig.legend(handles + [plt.Line2D([], [], marker="o", ls="", c="0.75", ms=3)], labels + ["data"], loc="upper center",
             ncol=3, fontsize=11, bbox_to_anchor=(0.5, 0.975), frameon=False)
  fig.suptitle("SRPO on 2-D bandits: Q(a) = -|a - target|^2; larger 1/beta weighs the behaviour model's pull more",
               fontsize=14, y=0.995)
  fig.tight_layout(rect=(0, 0, 1, 0.955))
  save_figure_atomic(fig, path)


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m experiments.toy --algo=srpo", description=__doc__.splitlines()[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="small")
  parser.add_argument("--out", default="/tmp/toy_srpo")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--weighting", default="sigma2", choices=("sigma2", "one", "alpha_over_sigma"),
                      help="w(t) of the policy loss; sigma2 (default) pulls towards the data mean at large 1/beta")
  parser.add_argument("--datasets", default="", help="comma-separated subset of " + ",".join(TOY_DATASETS))
  args = parser.parse_args(argv)
  size = dict(SIZES[args.size])
  if args.datasets:
    size["datasets"] = tuple(args.datasets.split(","))
  os.makedirs(args.out, exist_ok=True)
  start = time.time()
  panels, rows = {}, []
  with tqdm(total=total_steps(size), desc="toy_srpo", unit="step", dynamic_ncols=True, smoothing=0.1) as bar:
    for name in size["datasets"]:
      bar.write(f"{name}:")
      panels[name], r = run_dataset(name, size, args.seed, args.weighting, bar)
      rows += r
  plot(panels, os.path.join(args.out, "toy_srpo.png"))
  meta = {"size": args.size, "seed": args.seed, "weighting": args.weighting, "inv_betas": INV_BETAS,
          "seconds": round(time.time() - start, 1), "backend": jax.default_backend(),
          **{k: v for k, v in size.items() if k != "datasets"}}
  write_text_atomic(os.path.join(args.out, "metrics.json"), json.dumps({"meta": meta, "rows": rows}, indent=1))
  lines = ["| dataset | 1/beta | mean dist to target | mean dist to nearest data point | behaviour ED |",
           "|---|---|---|---|---|"]
  lines += [f"| {r['dataset']} | {r['inv_beta']} | {r['dist_to_target']:.3f} | {r['dist_to_data']:.3f} | "
            f"{r['behavior_energy_distance']:.4f} |" for r in rows]
  write_text_atomic(os.path.join(args.out, "metrics.md"), "\n".join(lines) + "\n")
  print(f"wrote {args.out}/toy_srpo.png, metrics.json, metrics.md ({meta['seconds']} s)")


if __name__ == "__main__":
  main()
