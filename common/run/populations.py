"""A population run: settings (datasets × values of swept fields), each with the run's seeds, trained as one program
(`common.population`). Each setting gets the folder a run alone would write (settings/<name>/: its evaluations and
summary), and report.md puts the settings side by side.

A setting's config is exactly the config of the same run alone: the dataset's paper values, the command's
--config overrides, then the swept values. The settings may differ only in fields the algorithm can vary inside one
program (`sweepable`: no shape, no optimiser constant, no Python branch depends on them) and in what is read only
when loading data; anything else ends in one `error:` line before any work.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from common import population
from common.errors import RunError

# Fields read only when the data is loaded (or naming the run), which settings may differ in.
LOAD_FIELDS = ("dataset", "env_id", "reward_kind", "seeds")


@dataclasses.dataclass(frozen=True)
class Setting:
  """One run of the population: its folder name, its full config (as the run alone), its values of swept fields."""

  name: str
  config: Any
  values: tuple[tuple[str, Any], ...] = ()
  folder: str | None = None  # where its results go; default <population workdir>/settings/<name>


def parse_sweep(text: str) -> tuple[str, list[Any]]:
  """'policy.beta=0.01,0.02' -> ('policy.beta', [0.01, 0.02]); numbers become floats (ints stay ints)."""
  path, sep, values = text.partition("=")
  if not sep or not path:
    raise RunError(f"--sweep={text}: expected <field>=<value>,<value>,... e.g. policy.beta=0.01,0.02")
  items = [v.strip() for v in values.split(",") if v.strip()]
  if not items:
    raise RunError(f"--sweep={text}: no values for {path}")
  parsed = [_number(v) for v in items]
  if len(set(parsed)) != len(parsed):
    raise RunError(f"--sweep={text}: a value is given twice ({', '.join(items)})")
  return path.strip(), parsed


def _number(text: str):
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def _flat(d: Mapping, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def check_sweeps(sweeps: Mapping[str, Sequence[Any]], config, sweepable: Sequence[str], algo: str) -> None:
  """RunError for a swept field the config does not have, one that cannot vary inside one program, or a value
  of the wrong kind."""
  fields = _flat(config.to_dict())
  for path, values in sweeps.items():
    if path not in fields:
      raise RunError(f"--sweep={path}=...: {algo} has no field {path!r}")
    if path not in sweepable:
      raise RunError(f"--sweep={path}=...: {path} cannot vary inside one program (it sets a shape, an optimiser "
                     f"constant or a branch); the fields a sweep can vary for {algo}: {', '.join(sweepable)}")
    for v in values:
      if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise RunError(f"--sweep={path}=...: value {v!r} is not a number")


def make_settings(config_for: Callable[[str], Any], datasets: Sequence[str], seeds: Sequence[int],
                  sweeps: Mapping[str, Sequence[Any]], sweepable: Sequence[str], algo: str) -> list[Setting]:
  """Every dataset × combination of swept values, each a full config (config_for(dataset) then the values), in
  that order. Raises RunError when two settings differ in a field that cannot vary inside one program."""
  if len(set(datasets)) != len(datasets):
    raise RunError(f"--dataset: a dataset is given twice ({', '.join(datasets)})")
  paths = sorted(sweeps)
  settings = []
  for dataset in datasets:
    for combo in itertools.product(*(sweeps[p] for p in paths)):
      config = copy.deepcopy(config_for(dataset))
      config.seeds = tuple(int(s) for s in seeds)
      for path, value in zip(paths, combo):
        population.set_path(config, path, type(_get(config, path))(value))
      values = tuple(zip(paths, combo))
      name = "/".join([dataset.replace("/", "_")] + [f"{p}={v:g}" for p, v in values])
      settings.append(Setting(name, config, values))
  check_settings(settings, sweepable)
  return settings


def check_settings(settings: Sequence[Setting], sweepable: Sequence[str]) -> None:
  """RunError when two settings differ in a field that cannot vary inside one program."""
  base = _flat(settings[0].config.to_dict())
  for s in settings[1:]:
    for path, value in _flat(s.config.to_dict()).items():
      if path.split(".")[-1] in LOAD_FIELDS or value == base.get(path) or path in sweepable:
        continue
      raise RunError(f"{settings[0].name} and {s.name} differ in {path} ({base.get(path)!r} and {value!r}), which "
                     f"cannot vary inside one program: train them as separate runs")


def _get(config, path: str):
  node = config
  for p in path.split("."):
    node = node[p]
  return node


def members(settings: Sequence[Setting], sweepable: Sequence[str]) -> list[population.Member]:
  """The population's members, the seeds of one setting adjacent: each with the values its setting's config has
  for every sweepable field in which the settings differ."""
  flats = [_flat(s.config.to_dict()) for s in settings]
  varying = sorted(p for p in sweepable if len({repr(f.get(p)) for f in flats}) > 1)
  out = []
  for s, flat in zip(settings, flats):
    values = tuple((p, flat[p]) for p in varying)
    out += [population.Member(int(seed), s.config.dataset, values) for seed in s.config.seeds]
  return out


def population_config(settings: Sequence[Setting]) -> ml_collections.ConfigDict:
  """What config.json records for the population run: the first setting's config and every setting's name and
  values (another sweep in the same workdir is another run, and is refused)."""
  config = copy.deepcopy(settings[0].config)
  config.population = ml_collections.ConfigDict(
      {"settings": [s.name for s in settings],
       "values": [json.dumps(dict(s.values), sort_keys=True) for s in settings],
       "datasets": list(dict.fromkeys(s.config.dataset for s in settings))})
  return config


def setting_dir(workdir: str | None, setting: Setting) -> str | None:
  """The setting's results folder (created): its own `folder`, else <workdir>/settings/<name>; None without
  either."""
  folder = setting.folder or (None if workdir is None else os.path.join(workdir, "settings", setting.name))
  if folder is not None:
    os.makedirs(folder, exist_ok=True)
  return folder


def member_slices(settings: Sequence[Setting]) -> list[slice]:
  """Where each setting's members are in the population (its seeds, adjacent)."""
  out, start = [], 0
  for s in settings:
    out.append(slice(start, start + len(s.config.seeds)))
    start += len(s.config.seeds)
  return out


def report(settings: Sequence[Setting], summaries: Sequence[dict], extra: Sequence[str] = ()) -> str:
  """report.md: one row per setting and evaluated policy; `extra` names summary fields to add as columns."""
  paths = sorted({p for s in settings for p, _ in s.values})
  head = ["dataset", *paths, "policy", "seeds", "return", "normalised score", *extra]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  fmt = lambda stat, d: "n/a" if not stat else f"{stat['mean']:.{d}f} ± {stat['std']:.{d}f}"
  for s, summary in zip(settings, summaries):
    values = dict(s.values)
    for name, ev in summary["eval"].items():
      cells = [s.config.dataset, *[f"{values.get(p, '')}" for p in paths], name, str(len(s.config.seeds))]
      if "skipped" in ev:
        cells += [f"not evaluated: {ev['skipped']}", ""]
      else:
        cells += [fmt(ev["return"], 2), fmt(ev["score"], 1)]
      cells += [fmt(summary.get(col), 3) if isinstance(summary.get(col), dict) else str(summary.get(col, ""))
                for col in extra]
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def append_setting_metrics(workdir: str | None, setting: Setting, name: str, step: int, values: dict) -> None:
  """One record of settings/<name>/metrics_<name>.jsonl ({metric: [its seeds]}); a record of this step or later,
  from a callback redone on resume, is replaced."""
  from common import distributed, metrics_file

  folder = setting_dir(workdir, setting)
  if folder is None or not distributed.is_main_process():
    return
  path = os.path.join(folder, f"metrics_{name}.jsonl")
  metrics_file.truncate_after(path, step - 1)
  metrics_file.append_record(path, {"step": int(step), "metrics": {k: list(v) for k, v in values.items()}})

