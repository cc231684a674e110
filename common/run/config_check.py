"""Checks of a config file, its command-line overrides and its values against what an algorithm reads, made before
any work.

ml_collections reports an override of a field that does not exist (`--config.critic.lrr=1e-4`) as a 50-line chained
traceback while absl parses the flags, and a config file of the other algorithm is only found out when a stage reads
a field it lacks, after the first stages have trained. These functions turn both into one sentence naming the field
and the nearest valid name.
"""
from __future__ import annotations

import difflib
import importlib.util
import math
import numbers
import os
import re
from typing import Any

import ml_collections
from ml_collections.config_flags import config_path


class ConfigError(ValueError):
  """A config that cannot be used; the message names the field or file and what to give instead."""


def field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every field of a (nested) ConfigDict as a dotted path, sub-dicts before their fields: ["critic", "critic.lr"]."""
  paths = []
  for name, value in config.items():
    paths.append(prefix + name)
    if isinstance(value, ml_collections.ConfigDict):
      paths.extend(field_paths(value, f"{prefix}{name}."))
  return paths


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """The config of a `--config` value "path/to/configs.py[:arg]", loaded as ml_collections does (the text after the
  first ':' goes to get_config). Raises ConfigError when the file is missing or get_config refuses its argument."""
  path, sep, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config={spec}: no config file {path!r} (from {os.getcwd()}); the configs are "
                      "swg_jax/configs.py and srpo_jax/configs.py, run from the repository root")
  module_spec = importlib.util.spec_from_file_location("_checked_config", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if sep else module.get_config()
  except Exception as e:  # a user's config file may fail in any way: one line, not its traceback
    raise ConfigError(f"--config={spec}: {type(e).__name__}: {e}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"--config={spec}: get_config returned {type(config).__name__}, not an ml_collections "
                      "ConfigDict")
  return config


def override_items(argv: list[str], flag: str = "config") -> list[tuple[str, str | None]]:
  """(field path, value or None) of every `--config.<path>=v`, `--config.<path> v` and `--noconfig.<path>` in argv."""
  pattern = re.compile(rf"^--?(no)?{re.escape(flag)}\.([^=]+)(?:=(.*))?$", re.DOTALL)
  items = []
  for i, arg in enumerate(argv):
    m = pattern.match(arg)
    if m:
      value = m.group(3)
      if value is None and not m.group(1) and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
        value = argv[i + 1]
      items.append((m.group(2), value))
  return items


def _whole_tuple_example(value: tuple, path: str, given: str | None) -> str:
  """`value` with the item that `path`'s last index names replaced by `given` (as typed), for an error message."""
  m = re.search(r"\[(-?\d+)\]$", path)
  items = [repr(v) for v in value]
  if m and given is not None and -len(items) <= int(m.group(1)) < len(items):
    items[int(m.group(1))] = given
  return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _named_fields(path: str) -> list[str]:
  """The named fields of an override path, up to its first index: 'critic.hidden[0]' -> ['critic', 'hidden']."""
  try:
    fields = config_path.split(path)
  except Exception:  # unparsable brackets: check the names before them
    fields = path.split("[", 1)[0].split(".")
  names = []
  for f in fields:
    if not isinstance(f, str):
      break
    names.append(f)
  return names


def nearest_fields(path: str, config: ml_collections.ConfigDict) -> tuple[list[str], bool]:
  """(valid field paths a mistyped `path` most likely meant, whether they are close). Tried in order: close spellings
  among its siblings ('critic.lrr' -> 'critic.lr'), the same last name elsewhere ('lr' -> 'critic.lr', 'policy.lr'),
  close spellings of the whole path; else (not close) the single nearest path."""
  paths = field_paths(config)
  parent, _, last = path.rpartition(".")
  siblings = [p for p in paths if p.rpartition(".")[0] == parent]
  names = difflib.get_close_matches(last, [p.rpartition(".")[2] for p in siblings], n=2, cutoff=0.6)
  if names:
    return [f"{parent}.{n}" if parent else n for n in names], True
  same_name = [p for p in paths if p.rpartition(".")[2] == last]
  if same_name:
    return same_name[:4], True
  close = difflib.get_close_matches(path, paths, n=2, cutoff=0.6)
  return (close, True) if close else (difflib.get_close_matches(path, paths, n=1, cutoff=0.0), False)


def check_overrides(config: ml_collections.ConfigDict, paths: list[str], *, what: str, flag: str = "config",
                    values: dict[str, str | None] | None = None) -> None:
  """Raise ConfigError for the first override path that names no field of `config` (`what` says whose config), or
  that indexes into a tuple (ml_collections cannot set one item of it). `values`: path -> the value as typed."""
  values = values or {}
  for path in paths:
    node: Any = config
    names = _named_fields(path)
    for depth, name in enumerate(names):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        where = ".".join(names[:depth + 1])
        near, close = nearest_fields(where, config)
        suggested = " or ".join(f"--{flag}.{p}" for p in near)
        hint = (f"did you mean {suggested}?" if close else f"the nearest valid name is {suggested}") if near else ""
        parent = ".".join(names[:depth])
        if isinstance(node, ml_collections.ConfigDict):
          fields = ", ".join(sorted(node.keys()))
          hint += f" (fields of {flag}{'.' + parent if parent else ''}: {fields})"
        else:
          hint = f"{flag}.{parent} is a {type(node).__name__}, not a group of fields; " + hint
        raise ConfigError(f"--{flag}.{path}: the {what} config has no field {where!r}; {hint.strip()}")
      node = node[name]
    if "[" in path and isinstance(node, tuple):
      given = values.get(path)
      field = ".".join(names)
      raise ConfigError(f"--{flag}.{path}{'' if given is None else '=' + given}: {flag}.{field} is a tuple, "
                        f"{node!r}; its items cannot be set one by one: give it whole, e.g. "
                        f"--{flag}.{field}='{_whole_tuple_example(node, path, given)}'")


def check_structure(config: ml_collections.ConfigDict, references: dict[str, ml_collections.ConfigDict], algo: str,
                    spec: str) -> None:
  """Raise ConfigError when `config` lacks fields that algorithm `algo` reads (those of references[algo]); when it
  has every field of another algorithm's reference, say it is that algorithm's config."""
  have = set(field_paths(config))
  missing = [p for p in field_paths(references[algo]) if p not in have]
  if not missing:
    return
  for other, reference in references.items():
    if other != algo and set(field_paths(reference)) <= have:
      sections = sorted(set(reference.keys()) - set(references[algo].keys()))
      raise ConfigError(f"--config={spec} is a {other} config (it has {', '.join(sections)}), but --algo={algo}: "
                        f"give --config={algo}_jax/configs.py:<preset>, or --algo={other}")
  shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
  raise ConfigError(f"--config={spec} lacks field(s) {shown} that --algo={algo} reads (see {algo}_jax/configs.py)")


# ---------------------------------------------------------------------------------------------------------------
# Values: every number a run reads, in its allowed range, before any work.


def _whole(lo: int):
  return (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo,
          f"a whole number >= {lo}")


def _number(lo: float, hi: float = math.inf, *, low_open: bool = False, high_open: bool = False):
  def ok(v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
      return False
    return (v > lo if low_open else v >= lo) and (v < hi if high_open else v <= hi)

  low = f"{'>' if low_open else '>='} {lo:g}"
  rule = f"a finite number {low}" if hi == math.inf else f"a number in {'(' if low_open else '['}{lo:g}, {hi:g}" \
         f"{')' if high_open else ']'}"
  return ok, rule


STEPS, COUNT, RATE = _whole(1), _whole(1), _number(0, low_open=True)
FRACTION = _number(0, 1, low_open=True, high_open=True)
VALUE_RULES = {
    "steps_per_call": COUNT, "checkpoint_every": _whole(0), "max_runtime_s": _number(0),
    "eval.episodes": COUNT, "eval.max_episode_steps": _whole(0), "eval.seed": _whole(0),
    "critic.num_steps": STEPS, "critic.batch_size": COUNT, "critic.lr": RATE, "critic.expectile": FRACTION,
    "critic.discount": _number(0, 1), "critic.polyak": _number(0, 1, low_open=True),
    "weights.expectile": FRACTION, "weights.temperature": RATE, "weights.clip_min": _number(0),
    "weights.clip_max": RATE, "weights.chunk_size": COUNT,
    "diffusion.num_steps": STEPS, "diffusion.batch_size": COUNT, "diffusion.lr": RATE, "diffusion.decay_steps": STEPS,
    "diffusion.weight_decay": _number(0), "diffusion.ema": _number(0, 1, low_open=True),
    "diffusion.dropout_rate": _number(0, 1, high_open=True), "diffusion.num_timesteps": COUNT,
    "sampling.guidance_scale": _number(0), "sampling.num_steps": COUNT, "sampling.temperature": _number(0),
    "sampling.num_candidates": COUNT, "resampling.num_candidates": COUNT, "resampling.temperature": _number(0),
    "behavior.num_steps": STEPS, "behavior.batch_size": COUNT, "behavior.lr": RATE,
    "behavior.weight_decay": _number(0), "behavior.dropout_rate": _number(0, 1, high_open=True),
    "policy.num_steps": STEPS, "policy.batch_size": COUNT, "policy.lr": RATE, "policy.beta": _number(0),
    "policy.t_min": FRACTION, "policy.t_max": _number(0, 1, low_open=True), "policy.fixed_t": FRACTION,
}
# Pairs (low, high) where low must stay below high.
ORDERED = (("policy.t_min", "policy.t_max"), ("weights.clip_min", "weights.clip_max"),
           ("sampling.w_min", "sampling.w_max"))


def _get(config: ml_collections.ConfigDict, path: str):
  node = config
  for name in path.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      return None, False
    node = node[name]
  return node, True


def check_values(config: ml_collections.ConfigDict) -> None:
  """Raise ConfigError for the first field of `config` outside its allowed range (fields a config lacks are
  skipped), naming the field, its value and the range. A stage of 0 steps is refused: it would report an untrained
  model as a result."""
  for path, (ok, rule) in VALUE_RULES.items():
    value, present = _get(config, path)
    if present and not ok(value):
      why = "; a stage of 0 steps would report an untrained model as a result" if value == 0 and \
          path.endswith(".num_steps") else ""
      raise ConfigError(f"config.{path} = {value!r} is out of range: it must be {rule}{why}")
  for low, high in ORDERED:
    (a, has_a), (b, has_b) = _get(config, low), _get(config, high)
    if has_a and has_b and not a < b:
      raise ConfigError(f"config.{low} = {a!r} must be below config.{high} = {b!r}")
