"""`make demo`: what runs end to end today, with no download, on any machine (CPU included).

1. Builds the built-in offline dataset (Minari, from the real Gymnasium Reacher-v5; experiments/make_dataset.py)
   under results/demo/minari, unless it is already there.
2. The SWG toy experiment on all six 2-D datasets (experiments/toy_swg.py, small networks, 2000 samples a panel).
3. The SRPO 2-D bandit experiment on all six datasets (experiments/toy_srpo.py, small size).
Figures and tables go to results/demo/. The full pipeline on the built-in dataset (critic, SWG, SWG-R, SRPO,
evaluation, report) is the next piece of work (issue 5) and is not part of this demo yet.

  python -m experiments.demo [--out=results/demo] [--toy_size=small|full]
"""
from __future__ import annotations

import argparse
import os
import time

from common.toy_datasets import TOY_DATASETS


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="results/demo")
  parser.add_argument("--toy_size", default="small", choices=("small", "full"))
  args = parser.parse_args(argv)
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  os.environ.setdefault("MINARI_DATASETS_PATH", os.path.join(out, "minari"))
  start = time.time()

  from experiments import make_dataset

  import minari

  if make_dataset.DEFAULT_ID not in minari.list_local_datasets():
    print(f"[demo] building {make_dataset.DEFAULT_ID} in {os.environ['MINARI_DATASETS_PATH']}", flush=True)
    make_dataset.make_reacher_dataset()
  dataset = minari.load_dataset(make_dataset.DEFAULT_ID)
  meta = dataset.storage.metadata
  print(f"[demo] {make_dataset.DEFAULT_ID}: {dataset.total_steps} steps, dataset average return "
        f"{make_dataset.dataset_average_return(dataset):.2f} (random {meta['ref_min_score']:.2f}, scripted "
        f"controller {meta['ref_max_score']:.2f})", flush=True)

  from experiments import toy_srpo, toy_swg

  datasets = ",".join(TOY_DATASETS)
  print("[demo] SWG toy experiment", flush=True)
  toy_swg.main([f"--size={args.toy_size}", f"--datasets={datasets}", "--samples=2000", f"--out={out}/toy_swg"])
  print("[demo] SRPO bandit experiment", flush=True)
  toy_srpo.main([f"--size={args.toy_size}", f"--datasets={datasets}", f"--out={out}/toy_srpo"])

  for name in ("toy_swg", "toy_srpo"):
    with open(os.path.join(out, name, "metrics.md")) as f:
      print(f.read())
  print(f"[demo] done in {time.time() - start:.0f}s; figures and tables in {out}")


if __name__ == "__main__":
  main()
