"""Populations: the members of one jitted program.

A member is a seed, a dataset and values of hyperparameters that change no shape (SRPO's beta, the expectile, ...).
The members of a population train side by side on the Trainer's leading axis, as seeds always have: one member's
result is the result of the same run alone (its seed's keys, its dataset's rows, its values).

- Hyperparameters: a stage's step is built inside the vmapped program from a `ConfigView` of the config whose swept
  fields are that member's traced values, so the step functions read `config.beta` as they always do.
- Datasets: the datasets of a population (same observation and action dims, any sizes) are concatenated once and
  shared; each member samples its own rows through `Rows` (an offset and a count), never another dataset's.
- Shared stages: members that agree on everything a stage depends on (seed, dataset, that stage's swept fields and
  the stages before it) share one training of it; a sweep of the policy's beta trains one critic per seed.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from common.offline_data import Rows


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a population: its seed, its dataset and its values of the swept fields ((path, value) pairs)."""

  seed: int
  dataset: str = ""
  values: tuple[tuple[str, Any], ...] = ()

  def value(self, path: str, default=None):
    return dict(self.values).get(path, default)

  @property
  def name(self) -> str:
    """A folder name that tells members apart, e.g. `hopper-medium-v2/policy.beta=0.05/seed0`."""
    parts = [self.dataset.replace("/", "_")] if self.dataset else []
    parts += [f"{path}={value:g}" if isinstance(value, float) else f"{path}={value}" for path, value in self.values]
    return "/".join(parts + [f"seed{self.seed}"])


def grid(seeds: Sequence[int], datasets: Sequence[str], sweeps: Mapping[str, Sequence[Any]] | None = None) -> list[Member]:
  """Every combination of dataset × swept values × seed, in that order (the seeds of one setting adjacent)."""
  sweeps = dict(sweeps or {})
  paths = sorted(sweeps)
  combos = list(itertools.product(*(sweeps[p] for p in paths))) if paths else [()]
  return [Member(int(seed), dataset, tuple(zip(paths, combo)))
          for dataset in datasets for combo in combos for seed in seeds]


def prepare(config, data, members: Sequence[Member] | None = None):
  """What a trainer of a population starts from: (datasets {name: data}, members, the swept paths, the shared rows).
  data: one dataset (config.dataset's) or {name: data} of one observation and action dim; members default to one
  per seed of config.seeds on every dataset."""
  datasets = data if isinstance(data, dict) else {config.dataset: data}
  for d in datasets.values():
    if d.observations.ndim != 2 or d.actions.ndim != 2:
      raise ValueError(f"data.observations [N, S] and data.actions [N, A] needed, got {d.observations.shape}, "
                       f"{d.actions.shape}")
  members = list(members or grid(config.seeds, list(datasets)))
  paths = sorted({p for m in members for p, _ in m.values})
  shared = concatenate({name: datasets[name] for name in dict.fromkeys(m.dataset for m in members)})
  return datasets, members, paths, shared


def set_path(config, path: str, value) -> None:
  """config.<path> = value for a dotted path (ml_collections ConfigDict)."""
  *parents, leaf = path.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


class ConfigView:
  """A read-only view of a (sub-)config in which some fields read as other values (traced, per member).

  `overrides` maps paths relative to this view ("beta", "critic.expectile") to values; every other field reads
  through to the config, sub-configs as views of their own."""

  def __init__(self, config, overrides: Mapping[str, Any]):
    object.__setattr__(self, "_config", config)
    object.__setattr__(self, "_overrides", dict(overrides))

  def _child(self, name: str):
    if name in self._overrides:
      return self._overrides[name]
    value = self._config[name]
    prefix = name + "."
    nested = {k[len(prefix):]: v for k, v in self._overrides.items() if k.startswith(prefix)}
    if hasattr(value, "keys") and hasattr(value, "to_dict"):  # a sub-ConfigDict
      return ConfigView(value, nested)
    return value

  def __getattr__(self, name: str):
    if name.startswith("__"):
      raise AttributeError(name)
    try:
      return self._child(name)
    except KeyError as e:
      raise AttributeError(name) from e

  def __getitem__(self, name: str):
    return self._child(name)

  def __contains__(self, name: str) -> bool:
    return name in self._config

  def get(self, name: str, default=None):
    return self._child(name) if name in self._config else default

  def __setattr__(self, name, value):
    raise TypeError("a ConfigView is read-only")


def section_overrides(values: Mapping[str, Any], section: str) -> dict[str, Any]:
  """The values of paths under `section` ("critic"), relative to it ("expectile")."""
  prefix = section + "."
  return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def with_values(make_step: Callable, section_config, section: str, paths: Sequence[str]) -> Callable:
  """A step `(state, (data, values), key)` whose config section reads the member's `values` ({path: scalar}) for
  the swept `paths`; without swept paths in this section, `make_step(section_config)` itself (the same program)."""
  own = [p for p in paths if p.startswith(section + ".")]
  if not own:
    return make_step(section_config)

  def step(state, data_values, key):
    data, values = data_values
    view = ConfigView(section_config, section_overrides(values, section))
    return make_step(view)(state, data, key)

  return step


@dataclasses.dataclass(frozen=True)
class StagePlan:
  """The distinct trainings of one stage (`units`, one per group of members that share it) and, per member, the
  unit it takes its result from (`index`)."""

  units: list[Member]
  index: np.ndarray  # [num_members] -> unit

  def __len__(self) -> int:
    return len(self.units)

  def gather(self, unit_tree: Any) -> Any:
    """The units' results, one per member (a leading axis of num_members)."""
    idx = jnp.asarray(self.index)
    return jax.tree.map(lambda x: x[idx], unit_tree)


  def first_member(self, unit: int) -> int:
    """A member that takes its result from `unit`."""
    return int(np.flatnonzero(self.index == unit)[0])


def plan_stage(members: Sequence[Member], paths: Sequence[str], upstream: Sequence[StagePlan] = ()) -> StagePlan:
  """Members that agree on seed, dataset, the swept `paths` of this stage and their units of the `upstream` stages
  share a unit of this one."""
  keys, units, index = {}, [], []
  for i, m in enumerate(members):
    own = tuple((p, v) for p, v in m.values if p in paths)
    key = (m.seed, m.dataset, own, tuple(int(up.index[i]) for up in upstream))
    if key not in keys:
      keys[key] = len(units)
      units.append(Member(m.seed, m.dataset, own))
    index.append(keys[key])
  return StagePlan(units, np.asarray(index, np.int32))


def stacked_values(units: Sequence[Member], paths: Sequence[str]) -> dict[str, jax.Array]:
  """{path: [num_units] float32} of the swept values each unit trains with."""
  return {p: jnp.asarray([u.value(p) for u in units], jnp.float32) for p in paths}


@dataclasses.dataclass(frozen=True)
class SharedData:
  """The datasets of a population concatenated along rows, and where each one's rows are."""

  data: Any  # a pytree of [sum of sizes, ...] arrays
  offsets: dict[str, int]
  counts: dict[str, int]

  def rows(self, units: Sequence[Member]) -> Rows | Any:
    """What the units' steps read: the data itself when there is one dataset (the program of a plain run), else
    `Rows` with each unit's offset and count (a leading axis of num_units)."""
    if len(self.offsets) == 1:
      return self.data
    return Rows(data=self.data, offset=jnp.asarray([self.offsets[u.dataset] for u in units], jnp.int32),
                count=jnp.asarray([self.counts[u.dataset] for u in units], jnp.int32))

  def per_unit(self) -> bool:
    return len(self.offsets) > 1


def concatenate(datasets: Mapping[str, Any]) -> SharedData:
  """One pytree of rows from datasets of one structure and dims (any sizes), in the mapping's order."""
  names = list(datasets)
  sizes = [int(jax.tree.leaves(datasets[n])[0].shape[0]) for n in names]
  offsets = dict(zip(names, np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()))
  if len(names) == 1:
    return SharedData(datasets[names[0]], offsets, dict(zip(names, sizes)))
  data = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *[datasets[n] for n in names])
  return SharedData(data, offsets, dict(zip(names, sizes)))


def data_flags(shared: SharedData, values: Mapping[str, Any], data_flag=False):
  """The Trainer's `data_per_seed` for `(rows, values)` (or the rows alone when nothing is swept): the shared rows
  have no member axis (their `Rows` offsets and counts do), the swept values do."""
  rows_flag = Rows(data=data_flag, offset=True, count=True) if shared.per_unit() else data_flag
  return (rows_flag, True) if values else rows_flag


def step_input(shared: SharedData, units: Sequence[Member], paths: Sequence[str], data_of: Callable | None = None,
               data_flag=False):
  """(data the stage's Trainer gets, its data_per_seed flags) for `units` with the swept `paths` of the stage.
  data_of(rows) -> the stage's data built from the rows (e.g. only the observations), by default the rows;
  data_flag: which of that data has a unit axis (e.g. SWG's per-unit weights)."""
  rows = shared.rows(units)
  data = rows if data_of is None else data_of(rows)
  values = stacked_values(units, paths)
  flags = data_flags(shared, values, data_flag)
  return ((data, values), flags) if values else (data, flags)
