"""The offline data as the training steps see it: the `OfflineData` pytree and batch sampling inside jitted code.
Loading, checking and preprocessing datasets is `common.data`'s job."""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp


class OfflineData(flax.struct.PyTreeNode):
  """Transitions (s, a, r, s', mask). observations [N, S], actions [N, A], rewards [N], next_observations [N, S],
  masks [N] with mask = 1 - terminal (a timeout/truncation is not a terminal)."""

  observations: jax.Array
  actions: jax.Array
  rewards: jax.Array
  next_observations: jax.Array
  masks: jax.Array

  @property
  def size(self) -> int:
    return self.observations.shape[0]

  @property
  def obs_dim(self) -> int:
    return self.observations.shape[-1]

  @property
  def action_dim(self) -> int:
    return self.actions.shape[-1]


class Rows(flax.struct.PyTreeNode):
  """One member's rows [offset, offset + count) of data that several members share (`common.population`)."""

  data: Any
  offset: jax.Array
  count: jax.Array


def row_indices(data, key: jax.Array, batch_size: int) -> jax.Array:
  """batch_size row indices drawn uniformly (with replacement) from `data`'s rows, or from a `Rows`' own rows."""
  if isinstance(data, Rows):
    return data.offset + jax.random.randint(key, (batch_size,), 0, data.count)
  return jax.random.randint(key, (batch_size,), 0, jax.tree.leaves(data)[0].shape[0])


def rows_of(data) -> Any:
  """The arrays rows are taken from: `data`, or a `Rows`' shared data."""
  return data.data if isinstance(data, Rows) else data


def map_rows(data, fn: Callable[[Any], Any]):
  """fn applied to the data, keeping a `Rows`' offset and count (e.g. only the observations of the rows)."""
  return data.replace(data=fn(data.data)) if isinstance(data, Rows) else fn(data)


def sample_batch(data, key: jax.Array, batch_size: int):
  """Uniformly sampled (with replacement) batch of transitions, of `data` or of a member's `Rows`; runs on device
  inside jit. Any pytree of [N, ...] arrays (an OfflineData, SWG's WeightedData)."""
  idx = row_indices(data, key, batch_size)
  return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), rows_of(data))
