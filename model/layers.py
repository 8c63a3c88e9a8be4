"""Building blocks of the decoder: RMSNorm, rotary position embeddings, the gated MLP.

Every parameter declares `logical_axes` (see model/sharding.py). Parameters are stored in
float32; `dtype` is the compute dtype that weights and activations are cast to at use. The
matmul-heavy cores come from the configured kernel set (model/kernels/).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model.kernels import kernel_set
from model.rope import RopeScaling, rope_frequencies


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


def apply_rope(x_BxNxLxH: jax.Array, positions_Bx1xL: jax.Array, theta: float,
               scaling: RopeScaling | None = None) -> jax.Array:
  """Rotary embedding, "rotate half" layout (the one Llama/Gemma checkpoints are stored in).

  Heads-major inputs (model/attention.py); the positions broadcast over the heads axis.
  `scaling` (model/rope.py) rescales the frequencies of long-context checkpoints, with yarn's
  factor on cos and sin.
  """
  head_dim = x_BxNxLxH.shape[-1]
  attention_factor = 1.0
  if scaling is None:
    # Kept in jnp as it always was: unscaled models (and trained runs) stay bit-identical.
    inv_freq_H2 = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  else:
    inv_freq_np_H2, attention_factor = rope_frequencies(head_dim, theta, scaling)
    inv_freq_H2 = jnp.asarray(inv_freq_np_H2)
  angles_Bx1xLxH2 = positions_Bx1xL.astype(jnp.float32)[..., None] * inv_freq_H2
  sin, cos = jnp.sin(angles_Bx1xLxH2), jnp.cos(angles_Bx1xLxH2)
  if attention_factor != 1.0:
    sin, cos = sin * attention_factor, cos * attention_factor
  x = x_BxNxLxH.astype(jnp.float32)
  first, second = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x_BxNxLxH.dtype)


def _silu(x):
  return jax.nn.silu(x)


def _gelu_tanh(x):
  # Gemma's GeGLU uses the tanh approximation; silu has no variants.
  return jax.nn.gelu(x, approximate=True)


class GatedMLP(nnx.Module):
  """down(act(gate(x)) * up(x)): SwiGLU with silu, GeGLU with gelu."""

  def __init__(self, d_model: int, d_ff: int, *, activation: str, dtype: jnp.dtype,
               rngs: nnx.Rngs, kernels: str = "auto"):
    self.gate_DxF = nnx.Param(dense_init(rngs, (d_model, d_ff), d_model),
                              logical_axes=("embed", "mlp"))
    self.up_DxF = nnx.Param(dense_init(rngs, (d_model, d_ff), d_model),
                            logical_axes=("embed", "mlp"))
    self.down_FxD = nnx.Param(dense_init(rngs, (d_ff, d_model), d_ff),
                              logical_axes=("mlp", "embed"))
    # Module-level functions, not lambdas: the activation is a static (hashed) argument of
    # the cpu kernel's custom VJP, so equal activations must compare equal across traces.
    self.activation = _silu if activation == "silu" else _gelu_tanh
    self.dtype = dtype
    self.kernels = kernels

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cast = lambda p: p.value.astype(self.dtype)
    return kernel_set(self.kernels).gated_mlp(self.activation, x_BxLxD, cast(self.gate_DxF),
                                              cast(self.up_DxF), cast(self.down_FxD))
