"""Running an absl entry point: `--help` prints the usage and the entry point's own flags and exits 0 (absl's help
exits 1, which a script reads as a failure)."""
from __future__ import annotations

import sys
from typing import Callable

from absl import app, flags

HELP_FLAGS = ("-h", "-?", "--help", "--helpshort")


def run(main: Callable, argv: list[str] | None = None, doc: str | None = None) -> None:
  """app.run(main, argv), except that a help flag prints `doc` (default: the module of `main`'s docstring) and the
  flags that module defines, then exits 0."""
  argv = list(sys.argv if argv is None else argv)
  if any(a in HELP_FLAGS for a in argv[1:]):
    module = sys.modules[main.__module__]
    print((doc if doc is not None else module.__doc__ or "").strip() + "\n")
    print(flags.FLAGS.module_help(module.__name__) or flags.FLAGS.module_help(module))
    print("\nTry --helpfull to get a list of all flags.")
    sys.exit(0)
  app.run(main, argv=argv)
