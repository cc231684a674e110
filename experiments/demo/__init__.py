"""`make demo`: the whole pipeline at small scale, no download, on any machine (CPU included).

1. Builds the built-in offline dataset (Minari, from the real Gymnasium Reacher-v5 and a noisy scripted controller;
   experiments/make_dataset.py) under <out>/minari, unless it is already there.
2. SWG (critic -> weights -> joint diffusion; evaluated as SWG and SWG-R) and SRPO (critic -> behaviour -> policy)
   on it with the `demo` presets, 2 seeds each trained together, 20 evaluation episodes per seed in Reacher-v5.
3. <out>/reacher.md and <out>/reacher_returns.png — each policy's return against the dataset's average, random
   actions and the noiseless controller.
4. The SWG toy experiment and the SRPO 2-D bandit experiment on all six datasets (<out>/toy_swg, <out>/toy_srpo).
5. <out>/report.md: this run beside the committed reference (results/demo/, the numbers the README shows).

<out> defaults to results/runs/demo, which git ignores: the committed reference is only read. Runs resume from
<out>/reacher/<algo> when started again (--fresh starts over). To adopt a run as the new reference, copy reacher.md
over results/demo/report.md and reacher_returns.png, toy_swg/ and toy_srpo/ beside it.

  python -m experiments.demo [--out=results/runs/demo] [--toy_size=small|full] [--fresh] [--skip_toys]
  python -m experiments.demo --preset=smoke --out=/tmp/demo     # tiny everything: checks the wiring in a minute
"""
from __future__ import annotations

import argparse
import os
import shutil
import time

from experiments.demo.compare import comparison_report
from experiments.report import POLICY_NAMES

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE_DIR = os.path.join(REPO_ROOT, "results", "demo")  # committed: read, never written by the demo
DEFAULT_OUT = os.path.join("results", "runs", "demo")  # ignored by git
# What a preset changes besides the algorithms' config presets: the dataset (a smoke dataset gets its own id, so a
# later full demo in the same folder never trains on it) and the toy experiments.
PRESETS = {
    "demo": dict(dataset_id=None, episodes=200, reference_episodes=50, toy_datasets=None),
    "smoke": dict(dataset_id="builtin/reacher/noisy-smoke-v0", episodes=4, reference_episodes=2,
                  toy_datasets="8gaussians"),
}


def dataset_reference(dataset_id: str) -> dict:
  """Average return of the dataset's episodes and its reference returns (random actions, noiseless controller)."""
  import minari

  from experiments import make_dataset

  dataset = minari.load_dataset(dataset_id)
  meta = dataset.storage.metadata
  return {"dataset": make_dataset.dataset_average_return(dataset), "random": meta["ref_min_score"],
          "controller": meta["ref_max_score"], "steps": dataset.total_steps}


def pipeline_rows(summaries: dict, ref: dict) -> list[dict]:
  rows = []
  for algo, summary in summaries.items():
    for name, ev in summary["eval"].items():
      ret = ev["return"]
      rows.append({"policy": POLICY_NAMES[name], "return": ret["mean"], "std": ret["std"], "per_seed": ret["per_seed"],
                   "score": ev["score"]["mean"], "gain": ret["mean"] - ref["dataset"],
                   "env": f"{ev['env_id']} (gymnasium {ev['gymnasium_version']}, mujoco {ev['mujoco_version']})",
                   "episodes": f"{len(ev['seeds'])} x {ev['episodes_per_seed']}",
                   "train_s": sum(summary["stage_seconds"].values())})
  return rows


def pipeline_report(rows: list[dict], ref: dict, dataset_id: str, wall_s: float) -> str:
  gap = ref["controller"] - ref["dataset"]
  lines = [f"Dataset `{dataset_id}` ({ref['steps']} transitions): average return {ref['dataset']:.2f}; random "
           f"actions {ref['random']:.2f}; the noiseless scripted controller {ref['controller']:.2f}.", "",
           "| policy | return (mean ± std over seeds) | normalised score | vs dataset average | share of the gap to "
           "the controller closed | seeds x episodes | training time |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['policy']} | {r['return']:.2f} ± {r['std']:.2f} | {r['score']:.1f} | {r['gain']:+.2f} | "
                 f"{100 * r['gain'] / gap:.0f} % | {r['episodes']} | {r['train_s']:.0f} s |")
  verdict = [f"{r['policy']} {'beats' if r['gain'] > 0 else 'does NOT beat'} the dataset average by {r['gain']:.2f}"
             for r in rows]
  lines += ["", "; ".join(verdict) + f". Evaluated in {rows[0]['env'] if rows else '?'}; pipeline wall time "
            f"{wall_s / 60:.1f} min in this invocation (stages finished by an earlier one are reused)."]
  return "\n".join(lines)


def plot_returns(rows: list[dict], ref: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5.5, 3.4))
  names = [r["policy"] for r in rows]
  ax.bar(names, [r["return"] for r in rows], color="tab:blue", alpha=0.7)
  for i, r in enumerate(rows):
    ax.scatter([i] * len(r["per_seed"]), r["per_seed"], color="black", s=12, zorder=3,
               label="seed means" if i == 0 else None)
  for value, label, style in ((ref["dataset"], "dataset average", "--"), (ref["random"], "random actions", ":"),
                              (ref["controller"], "noiseless controller", "-.")):
    ax.axhline(value, color="tab:red", linestyle=style, linewidth=1, label=f"{label} ({value:.1f})")
  ax.set_ylabel("episode return (Reacher-v5)")
  ax.set_title("Offline RL on the built-in noisy-controller dataset")
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run_pipeline(out: str, fresh: bool, preset: str = "demo") -> str:
  """Dataset, both pipelines, <out>/reacher.md and <out>/reacher_returns.png; returns the markdown."""
  import srpo_jax
  import swg_jax
  from common.checkpoint import write_text_atomic
  from experiments import make_dataset

  import minari

  spec = PRESETS[preset]
  dataset_id = spec["dataset_id"] or make_dataset.DEFAULT_ID
  if dataset_id not in minari.list_local_datasets():
    print(f"[demo] building {dataset_id} in {os.environ['MINARI_DATASETS_PATH']}", flush=True)
    make_dataset.make_reacher_dataset(dataset_id, episodes=spec["episodes"],
                                      reference_episodes=spec["reference_episodes"])
  ref = dataset_reference(dataset_id)
  start = time.time()
  summaries = {}
  for algo, module in (("swg", swg_jax), ("srpo", srpo_jax)):
    workdir = os.path.join(out, "reacher", algo)
    if fresh:
      shutil.rmtree(workdir, ignore_errors=True)
    print(f"[demo] {algo.upper()} on {dataset_id} (workdir {workdir})", flush=True)
    summaries[algo] = module.train_and_evaluate(module.get_config(f"{dataset_id}:{preset}"), workdir)
  rows = pipeline_rows(summaries, ref)
  text = pipeline_report(rows, ref, dataset_id, time.time() - start)
  plot_returns(rows, ref, os.path.join(out, "reacher_returns.png"))
  write_text_atomic(os.path.join(out, "reacher.md"), text + "\n")
  return text


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=DEFAULT_OUT, help="run folder (default ignored by git)")
  parser.add_argument("--reference", default=REFERENCE_DIR, help="committed results to compare with (read only)")
  parser.add_argument("--preset", default="demo", choices=sorted(PRESETS),
                      help="smoke: tiny dataset, networks and toys (a wiring check, not a result)")
  parser.add_argument("--toy_size", default=None, choices=("smoke", "small", "full"),
                      help="default: small (smoke with --preset=smoke)")
  parser.add_argument("--fresh", action="store_true", help="retrain instead of resuming earlier demo runs")
  parser.add_argument("--skip_toys", action="store_true")
  return parser


def main(argv=None):
  parser = build_parser()
  args = parser.parse_args(argv)
  out, reference = os.path.realpath(args.out), os.path.realpath(args.reference)
  if out == reference or out.startswith(reference + os.sep):
    parser.exit(2, f"error: --out={args.out!r} is the committed reference folder {reference} (or inside it); the "
                   "demo writes to a run folder of its own and only reads the reference\n")
  toy_size = args.toy_size or ("smoke" if args.preset == "smoke" else "small")
  problem = unwritable(out)
  if problem:
    parser.exit(2, f"error: --out={args.out!r} is not a writable folder: {problem}\n")
  os.environ.setdefault("MINARI_DATASETS_PATH", os.path.join(out, "minari"))
  start = time.time()

  from absl import logging

  from common import interrupts
  from common.data import DatasetError
  from common.errors import RunError

  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
  interrupts.install_process_handlers()  # SIGTERM (and SIGINT in a background job) stop with a message
  try:
    run_everything(args, out, reference, toy_size, start)
  except (DatasetError, RunError) as e:
    parser.exit(1, f"error: {e}\n")
  except OSError as e:
    parser.exit(1, f"error: {e.strerror or e}: {e.filename or out}\n")
  except KeyboardInterrupt as e:
    parser.exit(interrupts.exit_code(e), f"{interrupts.stop_message(e)}; progress is saved in {out}: run the same "
                "command again to resume\n")


def unwritable(folder: str) -> str | None:
  """Why `folder` cannot be created or written (the reason, e.g. "Permission denied"), or None."""
  import tempfile

  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test_"):
      pass
  except OSError as e:
    return e.strerror or str(e)
  return None


def run_everything(args, out: str, reference: str, toy_size: str, start: float) -> None:
  run_pipeline(out, args.fresh, args.preset)

  if not args.skip_toys:
    from common.data.toys import TOY_DATASETS
    from experiments.toy import swg as toy_swg
    from experiments.toy import srpo as toy_srpo

    datasets = PRESETS[args.preset]["toy_datasets"] or ",".join(TOY_DATASETS)
    samples = [] if toy_size == "smoke" else ["--samples=2000"]
    print("[demo] SWG toy experiment", flush=True)
    toy_swg.main([f"--size={toy_size}", f"--datasets={datasets}", *samples, f"--out={out}/toy_swg"])
    print("[demo] SRPO bandit experiment", flush=True)
    toy_srpo.main([f"--size={toy_size}", f"--datasets={datasets}", f"--out={out}/toy_srpo"])

  from common.checkpoint import write_text_atomic

  report = comparison_report(out, reference)
  write_text_atomic(os.path.join(out, "report.md"), report)
  print(report)
  print(f"[demo] done in {time.time() - start:.0f}s; this run's report (beside the committed reference), figures "
        f"and tables in {out}")

