"""SWG on the 2-D toy bandits: ground truth vs SWG samples for beta in {0, 1, 5, 10, 15} (the paper's toy figure).

  python -m experiments.toy_swg --size=small --out=/tmp/toy_swg
  python -m experiments.toy_swg --size=full --out=results/toy_swg     # all six datasets, 2000 samples per panel

For each dataset one joint (a, w) model per beta is trained on weights w = exp(beta (E - 1)) (the betas of a dataset
are trained together: vmapped over a stacked batch axis), then sampled with rho = 1 (exact SWG) and rho = 0 (behaviour).
Writes toy_swg.png, metrics.json and metrics.md: energy distance SWG vs truth, the noise floor (two independent truth
draws) and unguided vs truth.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import swg_jax
from common.checkpoint import write_text_atomic
from common.toy_datasets import TOY_DATASETS, energy_distance, sample_toy, target_samples, toy_weights
from common.training import Trainer
from swg_jax import model as model_lib

BETAS = (0.0, 1.0, 5.0, 10.0, 15.0)
SIZES = {
    "small": dict(datasets=("8gaussians", "2spirals"), samples=500, steps=2000, hidden=64, batch=256, data=20_000),
    "full": dict(datasets=TOY_DATASETS, samples=2000, steps=20_000, hidden=256, batch=1024, data=100_000),
}


def toy_config(size: dict):
  c = swg_jax.get_config("smoke")
  c.diffusion.update(hidden=size["hidden"], num_blocks=3, dropout_rate=0.0, time_embed_dim=32,
                     time_features=(size["hidden"],) * 2, batch_size=size["batch"], num_steps=size["steps"],
                     decay_steps=size["steps"], lr=1e-3, ema=0.005)
  return c


def train_betas(points: np.ndarray, energy: np.ndarray, betas, config, seed: int):
  """One model per beta, trained side by side (vmap over betas: state, data and key all batched)."""
  dc = config.diffusion
  n = len(points)
  data = model_lib.WeightedData(
      observations=jnp.zeros((len(betas), n, 0)), actions=jnp.broadcast_to(jnp.asarray(points), (len(betas), n, 2)),
      weights=jnp.stack([jnp.asarray(toy_weights(energy, b)) for b in betas]))
  keys = jax.random.split(jax.random.PRNGKey(seed), len(betas))
  state = jax.vmap(lambda k: model_lib.init_diffusion(k, 0, 2, dc))(keys)
  trainer = Trainer(model_lib.make_diffusion_step(2, dc), num_steps=dc.num_steps, steps_per_call=min(dc.num_steps, 1000),
                    name="toy_diffusion", data_per_seed=True)  # every beta has its own weights
  state = trainer.run(state, data, keys)
  defaults = tuple(sorted(config.sampling.to_dict().items()))
  net, schedule = model_lib.make_network(2, dc), model_lib.make_schedule(dc)
  return [swg_jax.SWGModel(params=jax.tree.map(lambda x: x[i], state.ema_params), net=net, schedule=schedule,
                           obs_dim=0, action_dim=2, sampling_defaults=defaults) for i in range(len(betas))]


def plot(panels, datasets, betas, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = 2 * len(datasets)
  fig, axes = plt.subplots(rows, len(betas), figsize=(2.2 * len(betas), 2.2 * rows), squeeze=False)
  for d, name in enumerate(datasets):
    for j, beta in enumerate(betas):
      for r, (label, pts) in enumerate((("ground truth", panels[name][beta]["truth"]),
                                        ("SWG", panels[name][beta]["swg"]))):
        ax = axes[2 * d + r, j]
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5, color="tab:blue" if r == 0 else "tab:red")
        ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_xticks([]), ax.set_yticks([]), ax.set_aspect("equal")
        if d == 0 and r == 0:
          ax.set_title(f"beta = {beta:g}")
        if j == 0:
          ax.set_ylabel(f"{name}\n{label}", fontsize=8)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  os.replace(tmp, path)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="small")
  parser.add_argument("--out", default="/tmp/toy_swg")
  parser.add_argument("--datasets", default="", help="comma-separated subset (default: the size's list)")
  parser.add_argument("--steps", type=int, default=0, help="override training steps")
  parser.add_argument("--samples", type=int, default=0, help="override samples per panel")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--guidance_scale", type=float, default=1.0)
  parser.add_argument("--sampler", choices=("ddpm", "dpm"), default="ddpm")
  parser.add_argument("--num_steps", type=int, default=15, help="DPM-Solver++ steps (sampler=dpm)")
  args = parser.parse_args(argv)
  size = dict(SIZES[args.size])
  if args.steps:
    size["steps"] = args.steps
  if args.samples:
    size["samples"] = args.samples
  datasets = tuple(d for d in args.datasets.split(",") if d) or size["datasets"]
  for d in datasets:
    if d not in TOY_DATASETS:
      parser.error(f"unknown dataset {d!r}; choose from {TOY_DATASETS}")
  os.makedirs(args.out, exist_ok=True)
  config = toy_config(size)
  n = size["samples"]
  obs = np.zeros((n, 0), np.float32)
  panels, metrics = {}, []
  for name in datasets:
    start = time.time()
    print(f"{name}: training {len(BETAS)} models ({size['steps']} steps)", flush=True)
    points, energy = sample_toy(name, size["data"], np.random.default_rng(args.seed))
    models = train_betas(points, energy, BETAS, config, args.seed)
    panels[name] = {}
    for b, (beta, model) in enumerate(zip(BETAS, models)):
      truth = target_samples(name, beta, n, np.random.default_rng(1000 + b))
      truth_again = target_samples(name, beta, n, np.random.default_rng(2000 + b))
      key = jax.random.PRNGKey(args.seed + b)
      opts = dict(temperature=1.0, sampler=args.sampler, num_steps=args.num_steps)
      swg, _ = swg_jax.sample(model, obs, key, guidance_scale=args.guidance_scale, **opts)
      unguided, _ = swg_jax.sample(model, obs, key, guidance_scale=0, **opts)
      swg, unguided = np.asarray(swg), np.asarray(unguided)
      panels[name][beta] = {"truth": truth, "swg": swg}
      row = {"dataset": name, "beta": beta, "swg_vs_truth": energy_distance(swg, truth),
             "noise_floor": energy_distance(truth_again, truth), "unguided_vs_truth": energy_distance(unguided, truth)}
      metrics.append(row)
      print(f"  beta={beta:g}: SWG {row['swg_vs_truth']:.4f}  floor {row['noise_floor']:.4f}  "
            f"unguided {row['unguided_vs_truth']:.4f}", flush=True)
    print(f"  {time.time() - start:.0f}s", flush=True)

  plot(panels, datasets, BETAS, os.path.join(args.out, "toy_swg.png"))
  meta = {"size": args.size, "samples_per_panel": n, "guidance_scale": args.guidance_scale, "sampler": args.sampler,
          "num_steps": args.num_steps, "temperature": 1.0, "config": config.diffusion.to_dict(),
          "backend": jax.default_backend()}
  write_text_atomic(os.path.join(args.out, "metrics.json"), json.dumps({"meta": meta, "rows": metrics}, indent=1,
                                                                    default=str))
  lines = [f"# SWG toy results ({args.size}: {n} samples per panel, rho = {args.guidance_scale:g}, {args.sampler}, "
           "temperature 1)", "", "Energy distance to the ground truth (lower is better); the noise floor is the "
           "distance between two independent ground-truth draws.", "",
           "| dataset | beta | SWG vs truth | noise floor | unguided vs truth |", "|---|---|---|---|---|"]
  lines += [f"| {r['dataset']} | {r['beta']:g} | {r['swg_vs_truth']:.4f} | {r['noise_floor']:.4f} | "
            f"{r['unguided_vs_truth']:.4f} |" for r in metrics]
  write_text_atomic(os.path.join(args.out, "metrics.md"), "\n".join(lines) + "\n")
  print(f"wrote {args.out}/toy_swg.png, metrics.json, metrics.md")


if __name__ == "__main__":
  main()
