"""Building blocks of the decoder: RMSNorm, rotary position embeddings, the gated MLP.

Every parameter declares `logical_axes` (see model/sharding.py). Parameters are stored in
float32; `dtype` is the compute dtype that weights and activations are cast to at use.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model.sharding import shard_activation


def dense_init(rngs: nnx.Rngs, shape: tuple[int, ...], fan_in: int) -> jax.Array:
  """Truncated normal with variance 1/fan_in (LeCun), the usual choice for pre-norm stacks."""
  stddev = fan_in ** -0.5 / 0.87962566103423978  # undo the truncation's variance shrink
  return stddev * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, jnp.float32)


class RMSNorm(nnx.Module):
  """x / rms(x) * scale, computed in float32 (Gemma stores scale - 1: `plus_one`)."""

  def __init__(self, dim: int, *, eps: float, plus_one: bool, dtype: jnp.dtype):
    init = jnp.zeros if plus_one else jnp.ones
    self.scale = nnx.Param(init((dim,), jnp.float32), logical_axes=("norm",))
    self.eps = eps
    self.plus_one = plus_one
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    scale = self.scale.value + 1.0 if self.plus_one else self.scale.value
    return (normed * scale).astype(self.dtype)


def apply_rope(x_BxLxNxH: jax.Array, positions_BxL: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding, "rotate half" layout (the one Llama/Gemma checkpoints are stored in)."""
  head_dim = x_BxLxNxH.shape[-1]
  inv_freq_H2 = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  angles_BxLxH2 = positions_BxL.astype(jnp.float32)[..., None] * inv_freq_H2
  sin = jnp.sin(angles_BxLxH2)[:, :, None, :]
  cos = jnp.cos(angles_BxLxH2)[:, :, None, :]
  x = x_BxLxNxH.astype(jnp.float32)
  first, second = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x_BxLxNxH.dtype)


class GatedMLP(nnx.Module):
  """down(act(gate(x)) * up(x)): SwiGLU with silu, GeGLU with gelu."""

  def __init__(self, d_model: int, d_ff: int, *, activation: str, dtype: jnp.dtype,
               rngs: nnx.Rngs):
    self.gate_DxF = nnx.Param(dense_init(rngs, (d_model, d_ff), d_model),
                              logical_axes=("embed", "mlp"))
    self.up_DxF = nnx.Param(dense_init(rngs, (d_model, d_ff), d_model),
                            logical_axes=("embed", "mlp"))
    self.down_FxD = nnx.Param(dense_init(rngs, (d_ff, d_model), d_ff),
                              logical_axes=("mlp", "embed"))
    # Gemma's GeGLU uses the tanh approximation; silu has no variants.
    self.activation = (jax.nn.silu if activation == "silu"
                       else lambda x: jax.nn.gelu(x, approximate=True))
    self.dtype = dtype

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cast = lambda p: p.value.astype(self.dtype)
    gate_BxLxF = jnp.einsum("bld,df->blf", x_BxLxD, cast(self.gate_DxF))
    up_BxLxF = jnp.einsum("bld,df->blf", x_BxLxD, cast(self.up_DxF))
    hidden_BxLxF = shard_activation(self.activation(gate_BxLxF) * up_BxLxF,
                                    ("batch", "length", "act_mlp"))
    return jnp.einsum("blf,fd->bld", hidden_BxLxF, cast(self.down_FxD))
