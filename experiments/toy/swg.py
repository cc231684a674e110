"""SWG on the 2-D toy bandits: ground truth vs SWG samples for beta in {0, 1, 5, 10, 15} (the paper's toy figure).

  python -m experiments.toy.swg --size=small --out=/tmp/toy_swg
  python -m experiments.toy.swg --size=full --out=results/toy_swg     # all six datasets, 2000 samples per panel

For each dataset one joint (a, w) model is trained on all betas at once, conditioned on beta through its state input
(s = beta / 15: a family of bandits, like the official toy's beta-conditioned model), on weights
w = exp(beta (E - 1)), then sampled with rho = 1 (exact SWG) and rho = 0 (behaviour), DDPM at temperature 1.

Two settings differ from SWG's D4RL defaults, for measured reasons:
  * data scale: the model sees the [-1, 1] points times `--data_scale` (2.25: per-coordinate std about 1). In [-1, 1]
    the smallest noise level of the T = 15 schedule, sigma = 0.168, is wider than the structure (8gaussians cluster
    std 0.078, spiral-arm gap 0.27): even the exact eps of the 8-Gaussian mixture then samples a ring that barely
    shows the clusters, and the small network cannot fit the sharp denoiser there either.
  * T = 50 steps (the official toy uses T = 100): at the larger scale distant modes stop overlapping under the noise
    after a few of T = 15's steps, and guidance at beta = 15 then degrades (swissroll, checkerboard); with T = 50 it
    still fails on the checkerboard (samples pile up on the board's low-energy edges).
Writes toy_swg.png, metrics.json and metrics.md: energy distance and the off-support share (which registers blur) of
SWG vs truth, their noise floors (two independent truth draws) and unguided vs truth.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import swg_jax
from common.checkpoint import write_text_atomic
from common.run.plots import save_figure_atomic
from common.data.toys import (SCALE, TOY_DATASETS, energy_distance, off_support_fraction, sample_toy,
                                 target_samples, toy_weights)
from common.training import Trainer
from swg_jax import model as model_lib
from swg_jax.sampling import sample_z

BETAS = (0.0, 1.0, 5.0, 10.0, 15.0)
BETA_NORM = 15.0  # the state fed to the network is beta / BETA_NORM
DATA_SCALE = SCALE / 2  # the model's coordinates: [-1, 1] points times this
SIZES = {
    "smoke": dict(datasets=("8gaussians",), samples=200, steps=20, hidden=16, batch=64, data=2000, lr=3e-3,
                  timesteps=10),
    "small": dict(datasets=("8gaussians", "2spirals"), samples=500, steps=5000, hidden=64, batch=512, data=20_000,
                  lr=3e-3, timesteps=50),
    "full": dict(datasets=TOY_DATASETS, samples=2000, steps=50_000, hidden=256, batch=1024, data=100_000,
                 lr=1e-3, timesteps=50),
}


def toy_config(size: dict):
  c = swg_jax.get_config("smoke")
  c.diffusion.update(hidden=size["hidden"], num_blocks=3, dropout_rate=0.0, time_embed_dim=32,
                     time_features=(size["hidden"],) * 2, batch_size=size["batch"], num_steps=size["steps"],
                     decay_steps=size["steps"], lr=size["lr"], ema=0.005, num_timesteps=size["timesteps"])
  return c


def make_trainer(config) -> Trainer:
  dc = config.diffusion
  return Trainer(model_lib.make_diffusion_step(2, dc), num_steps=dc.num_steps, steps_per_call=min(dc.num_steps, 1000),
                 name="toy_diffusion")


def train_toy_model(points: np.ndarray, energy: np.ndarray, betas, config, seed: int, data_scale: float,
                    trainer: Trainer | None = None):
  """One beta-conditioned model on the points scaled by data_scale; returns (EMA params, net, schedule).
  Pass the same `trainer` for every dataset: it keeps the compiled training call (same shapes), which saves a
  compilation per dataset."""
  dc = config.diffusion
  n = len(points)
  data = model_lib.WeightedData(
      observations=jnp.asarray(np.repeat(np.asarray(betas, np.float32) / BETA_NORM, n)[:, None]),
      actions=jnp.asarray(np.tile(points * data_scale, (len(betas), 1)), jnp.float32),
      weights=jnp.asarray(np.concatenate([toy_weights(energy, b) for b in betas])))
  keys = jax.random.PRNGKey(seed)[None]
  state = jax.vmap(lambda k: model_lib.init_diffusion(k, 1, 2, dc))(keys)
  state = (trainer or make_trainer(config)).run(state, data, keys)
  return jax.tree.map(lambda x: x[0], state.ema_params), model_lib.make_network(2, dc), model_lib.make_schedule(dc)


@functools.partial(jax.jit, static_argnames=("net", "schedule", "n", "guidance_scale", "sampler", "num_steps",
                                             "data_scale"))
def sample_actions(params, beta, key, *, net, schedule, n: int, guidance_scale: float, sampler: str, num_steps: int,
                   data_scale: float):
  """n actions [n, 2] in [-1, 1] for one beta: SWG's guided sampler at temperature 1, with the actions clipped to the
  model's scaled box."""
  obs = jnp.full((n, 1), beta / BETA_NORM, jnp.float32)
  z = sample_z(lambda z, t: net.apply(params, z, t, obs), schedule, n, 3, key, guidance_scale=guidance_scale,
               sampler=sampler, num_steps=num_steps, temperature=1.0, action_bound=data_scale,
               heads_fn=lambda z, t: net.apply(params, z, t, obs, split_heads=True))
  return z[:, :-1] / data_scale


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
          ax.set_title(f"beta = {beta:g}", fontsize=12)
        if j == 0:
          ax.set_ylabel(f"{name}\n{label}", fontsize=11)
  marker = lambda color: plt.Line2D([], [], marker="o", ls="", color=color, ms=5)
  fig.legend([marker("tab:blue"), marker("tab:red")],
             ["ground truth: mu(a) exp(beta E(a)), normalised", "SWG samples (rho = 1, temperature 1)"],
             loc="upper center", ncol=2, fontsize=12, bbox_to_anchor=(0.5, 0.985), frameon=False)
  fig.suptitle("SWG on 2-D toys: one beta-conditioned model per dataset, guided by its own weight prediction",
               fontsize=15, y=0.998)
  fig.tight_layout(rect=(0, 0, 1, 0.975))
  save_figure_atomic(fig, path)


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m experiments.toy --algo=swg", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="small")
  parser.add_argument("--out", default="/tmp/toy_swg")
  parser.add_argument("--datasets", default="", help="comma-separated subset (default: the size's list)")
  parser.add_argument("--steps", type=int, default=0, help="override training steps")
  parser.add_argument("--samples", type=int, default=0, help="override samples per panel")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--guidance_scale", type=float, default=1.0)
  parser.add_argument("--sampler", choices=("ddpm", "dpm"), default="ddpm")
  parser.add_argument("--num_steps", type=int, default=15, help="DPM-Solver++ steps (sampler=dpm)")
  parser.add_argument("--data_scale", type=float, default=DATA_SCALE,
                      help="the model's coordinates are the [-1, 1] points times this")
  parser.add_argument("--timesteps", type=int, default=0, help="override the diffusion steps T (DDPM runs all T)")
  args = parser.parse_args(argv)
  size = dict(SIZES[args.size])
  if args.steps:
    size["steps"] = args.steps
  if args.samples:
    size["samples"] = args.samples
  if args.timesteps:
    size["timesteps"] = args.timesteps
  datasets = tuple(d for d in args.datasets.split(",") if d) or size["datasets"]
  for d in datasets:
    if d not in TOY_DATASETS:
      parser.error(f"unknown dataset {d!r}; choose from {TOY_DATASETS}")
  os.makedirs(args.out, exist_ok=True)
  config = toy_config(size)
  n = size["samples"]
  trainer = make_trainer(config)
  panels, metrics = {}, []
  for name in datasets:
    start = time.time()
    print(f"{name}: training one beta-conditioned model ({size['steps']} steps)", flush=True)
    points, energy = sample_toy(name, size["data"], np.random.default_rng(args.seed))
    params, net, schedule = train_toy_model(points, energy, BETAS, config, args.seed, args.data_scale, trainer)
    sample = functools.partial(sample_actions, params, net=net, schedule=schedule, n=n, sampler=args.sampler,
                               num_steps=args.num_steps, data_scale=args.data_scale)
    panels[name] = {}
    for b, beta in enumerate(BETAS):
      truth = target_samples(name, beta, n, np.random.default_rng(1000 + b))
      truth_again = target_samples(name, beta, n, np.random.default_rng(2000 + b))
      key = jax.random.PRNGKey(args.seed + b)
      swg = np.asarray(sample(beta, key, guidance_scale=args.guidance_scale))
      unguided = np.asarray(sample(beta, key, guidance_scale=0))
      panels[name][beta] = {"truth": truth, "swg": swg}
      row = {"dataset": name, "beta": beta, "swg_vs_truth": energy_distance(swg, truth),
             "noise_floor": energy_distance(truth_again, truth), "unguided_vs_truth": energy_distance(unguided, truth),
             "swg_off_support": off_support_fraction(swg, truth),
             "off_support_floor": off_support_fraction(truth_again, truth),
             "unguided_off_support": off_support_fraction(unguided, truth)}
      metrics.append(row)
      print(f"  beta={beta:g}: energy distance SWG {row['swg_vs_truth']:.4f} floor {row['noise_floor']:.4f} "
            f"unguided {row['unguided_vs_truth']:.4f} | off support SWG {row['swg_off_support']:.3f} "
            f"floor {row['off_support_floor']:.3f} unguided {row['unguided_off_support']:.3f}", flush=True)
    print(f"  {time.time() - start:.0f}s", flush=True)

  plot(panels, datasets, BETAS, os.path.join(args.out, "toy_swg.png"))
  sampler = f"DDPM-{size['timesteps']}" if args.sampler == "ddpm" else f"DPM-Solver++ {args.num_steps} steps"
  meta = {"size": args.size, "samples_per_panel": n, "guidance_scale": args.guidance_scale, "sampler": args.sampler,
          "num_steps": args.num_steps, "temperature": 1.0, "data_scale": args.data_scale,
          "model": "one beta-conditioned model per dataset (state = beta / 15)", "config": config.diffusion.to_dict(),
          "backend": jax.default_backend()}
  write_text_atomic(os.path.join(args.out, "metrics.json"), json.dumps({"meta": meta, "rows": metrics}, indent=1,
                                                                    default=str))
  lines = [f"# SWG toy results ({args.size}: {n} samples per panel, rho = {args.guidance_scale:g}, {sampler}, "
           f"temperature 1, data scale {args.data_scale:g})", "",
           "Energy distance to the ground truth (lower is better) and the share of samples off the ground truth's "
           "support (farther from their 10th-nearest truth point than 95% of truth points are: it registers blur). "
           "The floors compare two independent ground-truth draws.", "",
           "| dataset | beta | ED: SWG | ED: floor | ED: unguided | off support: SWG | off support: floor | "
           "off support: unguided |", "|---|---|---|---|---|---|---|---|"]
  lines += [f"| {r['dataset']} | {r['beta']:g} | {r['swg_vs_truth']:.4f} | {r['noise_floor']:.4f} | "
            f"{r['unguided_vs_truth']:.4f} | {r['swg_off_support']:.3f} | {r['off_support_floor']:.3f} | "
            f"{r['unguided_off_support']:.3f} |" for r in metrics]
  write_text_atomic(os.path.join(args.out, "metrics.md"), "\n".join(lines) + "\n")
  print(f"wrote {args.out}/toy_swg.png, metrics.json, metrics.md")


if __name__ == "__main__":
  main()
