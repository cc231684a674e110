"""Noticing a diverged training stage: non-finite metrics or parameters, per seed, and the message that says where
and what usually causes it.

The parameter check is reduced on the device inside the fused chunk (`tree_all_finite`: one bool per seed), so it
reaches the host with the chunk's mean metrics in the transfer that already happens once per chunk. A NaN or inf in
any step of a chunk carries into that chunk's mean metrics, so the metrics need no per-step check either.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def tree_all_finite(tree: Any) -> jax.Array:
  """Whether every floating-point value of a pytree is finite (integer leaves, e.g. step counters, are skipped).  []

  One float32 sum per leaf: a sum is NaN or inf when any term is (inf + -inf is NaN), and it costs a third less than
  all(isfinite(x)) on a CPU. It also turns inf when finite values total beyond float32's range (~3e38), which only a
  diverged run's parameters reach."""
  sums = [jnp.sum(x, dtype=jnp.float32) for x in jax.tree.leaves(tree)
          if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.isfinite(jnp.sum(jnp.stack(sums))) if sums else jnp.asarray(True)


def nonfinite_metrics(metrics: Mapping[str, Any]) -> dict[str, list[int]]:
  """{metric: positions of the seeds whose value is NaN or inf} for the metrics [N] of one chunk."""
  bad = {}
  for name, values in metrics.items():
    values = np.atleast_1d(np.asarray(values, np.float64))
    rows = np.flatnonzero(~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1))
    if rows.size:
      bad[name] = rows.tolist()
  return bad


def _format_value(values, rows) -> str:
  v = np.atleast_1d(np.asarray(values, np.float64)).reshape(-1)[rows[0]]
  return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")


def divergence_message(stage: str, *, start: int, end: int, num_steps: int, metrics: Mapping[str, Any],
                       params_finite: np.ndarray, seed_ids: Sequence[int] | None = None,
                       suspects: Mapping[str, Any] | None = None, last_saved: int | None = None,
                       directory: str | None = None) -> str | None:
  """Why the chunk of steps (start, end] counts as diverged, in one paragraph, or None when it does not.

  params_finite [N]: per seed, whether the state after the chunk is finite. suspects: config values that usually
  cause a divergence of this stage ({"critic.lr": 3e-4}). last_saved / directory: the stage's newest checkpoint."""
  bad_metrics = nonfinite_metrics(metrics)
  bad_params = np.flatnonzero(~np.asarray(params_finite, bool)).tolist()
  if not bad_metrics and not bad_params:
    return None
  rows = sorted(set(bad_params).union(*bad_metrics.values()))
  names = [int(seed_ids[r]) for r in rows] if seed_ids is not None and len(seed_ids) > max(rows) else rows
  shown = ", ".join(f"{m} = {_format_value(metrics[m], r)}" for m, r in bad_metrics.items())
  if not bad_metrics:
    what = "its parameters went non-finite (its metrics are still finite)"
  else:
    what = shown + ("; its parameters are non-finite too" if bad_params else " (its parameters are still finite)")
  seeds = f"seed{'s' if len(names) > 1 else ''} {', '.join(map(str, names))}"
  text = f"stage '{stage}' diverged in steps {start + 1}-{end} of {num_steps} ({seeds}): {what}. "
  if suspects:
    values = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in suspects.items())
    text += f"The usual cause is a step size too large for this data: {values}. "
  if last_saved:
    text += f"Nothing non-finite was saved: the last checkpoint, step {last_saved} in {directory}, is finite. "
  else:
    text += "Nothing non-finite was saved (this stage has no checkpoint yet). "
  first = next(iter(suspects)) if suspects else "the learning rate"
  return text + (f"Lower {first} and train again in a new --workdir (copying into it the checkpoints/<stage> folders "
                 "of the stages that finished keeps them)")
