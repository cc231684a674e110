"""The papers' 2-D toy experiments behind one entry point: `--algo=swg` (experiments/toy/swg.py: SWG samples vs the
weighted target, beta in {0, 1, 5, 10, 15}) or `--algo=srpo` (experiments/toy/srpo.py: the extracted action as 1/beta
grows). Every other flag goes to that script.

  python -m experiments.toy --algo=swg --size=small --out=/tmp/toy_swg
  python -m experiments.toy --algo=srpo --size=full --datasets=8gaussians,2spirals
"""
from __future__ import annotations

import sys

ALGOS = ("swg", "srpo")


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  algo = next((a.split("=", 1)[1] for a in argv if a.startswith("--algo=")), None)
  if algo is None and any(a in ("-h", "--help") for a in argv):
    print(__doc__ + "\n--algo=swg|srpo picks the experiment; `--algo=swg --help` and `--algo=srpo --help` list its flags.")
    return
  if algo not in ALGOS:
    sys.exit(f"error: pass --algo=swg or --algo=srpo (got {algo!r}); the other flags go to experiments/toy_<algo>.py")
  rest = [a for a in argv if not a.startswith("--algo=")]
  if algo == "swg":
    from experiments.toy import swg as script
  else:
    from experiments.toy import srpo as script
  script.main(rest)

