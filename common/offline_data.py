"""The offline data as the training steps see it: the `OfflineData` pytree and batch sampling inside jitted code.
Loading, checking and preprocessing datasets is `common.data`'s job."""
from __future__ import annotations

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


def sample_batch(data: OfflineData, key: jax.Array, batch_size: int) -> OfflineData:
  """Uniformly sampled (with replacement) batch of transitions; runs on device inside jit."""
  idx = jax.random.randint(key, (batch_size,), 0, data.size)
  return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)
