"""Flax (linen) modules shared by SWG and SRPO. Shapes: B batch, S state dim, A action dim."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Activation = Callable[[jax.Array], jax.Array]

# Parameters whose path contains this marker are held fixed by `common.training.make_optimizer`.
FROZEN = "frozen"


def mish_saving_intermediates(x):
  """mish as autodiff differentiates it by default: softplus and tanh are kept for the backward pass."""
  return x * jnp.tanh(jax.nn.softplus(x))


# Recomputed in the backward pass from its input (which the backward pass reads anyway) instead of saving softplus and
# tanh: on a GPU a step of the SRPO behaviour model then moves about 12 % fewer bytes (`make aot-check`); the values
# are the same.
mish = jax.checkpoint(mish_saving_intermediates)


ACTIVATIONS = {"relu": nn.relu, "swish": nn.swish, "mish": mish, "gelu": nn.gelu}
COMPUTE_DTYPES = ("float32", "bfloat16", "auto")


def compute_dtype(name: str) -> Any:
  """A config's `compute_dtype` as the flax `dtype` of a module's matmuls and norms: "float32", "bfloat16", or "auto"
  (bfloat16 on an accelerator, float32 on a CPU, where bf16 matmuls are emulated and slower).

  Parameters (and so gradients and optimiser state) stay float32 either way; only the computation is cast.
  """
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {name!r}")
  if name == "auto":
    name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return jnp.bfloat16 if name == "bfloat16" else jnp.float32


class MLP(nn.Module):
  """Dense layers with an activation between them (and after the last one if `activate_final`)."""

  features: Sequence[int]
  activation: Activation = nn.relu
  activate_final: bool = False
  dtype: Any = jnp.float32  # computation dtype (params stay float32)

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.features):
      x = nn.Dense(width, dtype=self.dtype)(x)
      if i + 1 < len(self.features) or self.activate_final:
        x = self.activation(x)
    return x


class GaussianFourierTime(nn.Module):
  """Fixed random Fourier features of a scalar time: [sin(2 pi t W), cos(2 pi t W)], W ~ N(0, scale^2).  [B] -> [B, D]"""

  embed_dim: int = 64
  scale: float = 30.0

  @nn.compact
  def __call__(self, t):
    w = self.param(f"{FROZEN}_W", lambda key: self.scale * jax.random.normal(key, (self.embed_dim // 2,)))
    w = jax.lax.stop_gradient(w)
    proj = 2.0 * np.pi * t[..., None] * w
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class LearnableFourierTime(nn.Module):
  """Learnable Fourier features: [cos(2 pi t W), sin(2 pi t W)], W initialised N(0, std^2).  [B] -> [B, 2 F]"""

  num_frequencies: int = 64
  init_std: float = 0.2

  @nn.compact
  def __call__(self, t):
    w = self.param("kernel", nn.initializers.normal(self.init_std), (self.num_frequencies,))
    proj = 2.0 * np.pi * t[..., None] * w
    return jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], axis=-1)


class LNResNetBlock(nn.Module):
  """Dropout -> LayerNorm -> Dense(4h) -> activation -> Dense(h), plus the residual."""

  hidden: int
  activation: Activation
  dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-6  # flax's default; the official PyTorch SRPO nets use torch's 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = x
    if self.dropout_rate > 0:
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype)(y)
    y = nn.Dense(4 * self.hidden, dtype=self.dtype)(y)
    y = self.activation(y)
    y = nn.Dense(self.hidden, dtype=self.dtype)(y)
    return x + y


class ConditionalEpsNet(nn.Module):
  """eps(x_t, t, s): the IDQL/SRPO LN-ResNet noise predictor.

  time -> embedding -> MLP(time_features); concat(x_t, s, time features) -> Dense(h) -> blocks -> act -> Dense(out).
  With `aux_head_after_block = k` (1-based), an extra head MLP(h -> act -> aux_out_dim) reads the output of block k
  and its output is concatenated after the main one (SWG's weight head). Returns [B, out_dim (+ aux_out_dim)], or
  with `split_heads=True` the pair ([B, out_dim], [B, aux_out_dim]): a gradient of the aux output alone then has no
  backward pass through the blocks after k (concatenated, the main head's zero cotangent is still propagated).
  """

  out_dim: int
  time_embedding: str = "gaussian"  # "gaussian" (fixed) or "learnable"
  time_embed_dim: int = 64  # gaussian: total features; learnable: number of frequencies
  time_features: Sequence[int] = (128, 128)
  hidden: int = 256
  num_blocks: int = 3
  dropout_rate: float = 0.1
  activation: str = "mish"
  aux_head_after_block: Optional[int] = None
  aux_out_dim: int = 1
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32  # computation dtype of the trunk (time features are formed in float32); outputs float32

  @nn.compact
  def __call__(self, x, t, s, train: bool = False, split_heads: bool = False):
    act = ACTIVATIONS[self.activation]
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1])
    if self.time_embedding == "gaussian":
      temb = GaussianFourierTime(self.time_embed_dim)(t)
    elif self.time_embedding == "learnable":
      temb = LearnableFourierTime(self.time_embed_dim)(t)
    else:
      raise ValueError(f"time_embedding must be 'gaussian' or 'learnable', got {self.time_embedding!r}")
    temb = MLP(self.time_features, act, dtype=self.dtype)(temb)
    h = nn.Dense(self.hidden, dtype=self.dtype)(jnp.concatenate([x, s, temb.astype(x.dtype)], axis=-1))
    aux = None
    for k in range(1, self.num_blocks + 1):
      h = LNResNetBlock(self.hidden, act, self.dropout_rate, self.layer_norm_eps, self.dtype)(h, train)
      if k == self.aux_head_after_block:
        aux = MLP((self.hidden, self.aux_out_dim), act, dtype=self.dtype, name="aux_head")(h).astype(x.dtype)
    out = nn.Dense(self.out_dim, dtype=self.dtype)(act(h)).astype(x.dtype)
    if aux is None:
      return out
    return (out, aux) if split_heads else jnp.concatenate([out, aux], axis=-1)


class TwinQ(nn.Module):
  """Two independent Q MLPs on concat(s, a), evaluated as one batched ensemble.  -> [2, B]"""

  hidden: Sequence[int] = (256, 256)
  num_qs: int = 2
  dtype: Any = jnp.float32  # computation dtype; Q values are returned in float32

  @nn.compact
  def __call__(self, s, a):
    ensemble = nn.vmap(
        MLP,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=None,
        axis_size=self.num_qs,
    )
    q = ensemble((*self.hidden, 1), nn.relu, dtype=self.dtype)(jnp.concatenate([s, a], axis=-1))
    return q[..., 0].astype(jnp.float32)


class ValueNet(nn.Module):
  """V(s): MLP(S -> hidden -> 1), optionally with a LayerNorm on its input (SWG).  -> [B]"""

  hidden: Sequence[int] = (256, 256)
  layer_norm_input: bool = False
  dtype: Any = jnp.float32  # computation dtype; V is returned in float32

  @nn.compact
  def __call__(self, s):
    if self.layer_norm_input:
      s = nn.LayerNorm(dtype=self.dtype)(s)
    return MLP((*self.hidden, 1), nn.relu, dtype=self.dtype)(s)[..., 0].astype(jnp.float32)


class DiracPolicy(nn.Module):
  """Deterministic policy a = tanh(MLP(s)): `num_layers` hidden ReLU layers of width `hidden`.  -> [B, A]"""

  action_dim: int
  hidden: int = 256
  num_layers: int = 2

  @nn.compact
  def __call__(self, s):
    return jnp.tanh(MLP((self.hidden,) * self.num_layers + (self.action_dim,), nn.relu)(s))


def param_count(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
