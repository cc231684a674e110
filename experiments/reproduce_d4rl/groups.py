"""The tables' runs as populations: one algorithm's runs on the datasets of one environment (the three locomotion
levels, the six mazes) train as one program (`common.population`), each run's results in its usual folder, so the
report and a rerun see the same files as when every run trains alone. On an accelerator that keeps the chip busier;
on a CPU it buys nothing (`make bench`), so `--populations=auto` uses them on accelerators only."""
from __future__ import annotations

import hashlib
import os


CHOICES = ("auto", "on", "off")


def environment_of(dataset: str) -> str:
  """The environment a dataset's observations and actions come from: 'hopper', ..., 'antmaze'."""
  return "antmaze" if dataset.startswith("antmaze") else dataset.split("-")[0]


def wanted(choice: str) -> bool:
  if choice not in CHOICES:
    raise ValueError(f"--populations={choice!r}: expected one of {CHOICES}")
  if choice == "auto":
    import jax

    return jax.default_backend() != "cpu"
  return choice == "on"


def group_units(units: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
  """The grid's (dataset, algorithm) runs grouped by algorithm and environment, in the grid's order of first
  appearance: the units of work (and of sharding) when populations are on."""
  groups: dict[tuple[str, str], list] = {}
  for dataset, algo in units:
    groups.setdefault((algo, environment_of(dataset)), []).append((dataset, algo))
  return list(groups.values())


def population_workdir(out: str, group: list[tuple[str, str]]) -> str:
  """Where a group's shared checkpoints and metrics go: named by its algorithm, environment and datasets."""
  algo = group[0][1]
  names = ",".join(d for d, _ in group)
  digest = hashlib.sha1(names.encode()).hexdigest()[:8]
  return os.path.join(out, "populations", f"{algo}-{environment_of(group[0][0])}-{len(group)}-{digest}")


def train_group(group: list[tuple[str, str]], configs: dict, out: str, download: bool) -> None:
  """Train and evaluate the group's runs as one population (every run's results in out/<dataset>/<algo>/)."""
  from common.run import populations
  from experiments.report import algorithm_package

  algo = group[0][1]
  package = algorithm_package(algo)
  settings = [populations.Setting(dataset, configs[dataset], folder=os.path.join(out, dataset, algo))
              for dataset, _ in group]
  populations.check_settings(settings, package.configs.SWEEPABLE)
  package.train_and_evaluate_population(settings, population_workdir(out, group), download=download)


