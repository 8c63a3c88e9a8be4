"""Causal self-attention with rotary positions and grouped-query heads.

Packed rows (several examples in one row, see data/pipeline.py) attend only within their own
segment: the mask is causal AND same-segment. The softmax core of training and scoring comes
from the configured kernel set (model/kernels/: XLA's or cuDNN's dot_product_attention, or the
hand-written CPU kernel). Decoding (decode/) uses the same projections, `qkv` and `out`, around
the kernel set's paged attention.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model.kernels import kernel_set, resolve
from model.layers import apply_rope, dense_init
from model.rope import RopeScaling
from model.sharding import shard_activation


class Attention(nnx.Module):
  """Multi-head (num_kv_heads == num_heads), grouped-query or multi-query attention."""

  def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, head_dim: int, *,
               rope_theta: float, dtype: jnp.dtype, rngs: nnx.Rngs,
               rope_scaling: RopeScaling | None = None, kernels: str = "auto",
               attention_impl: str = "xla"):
    self.q_DxNxH = nnx.Param(dense_init(rngs, (d_model, num_heads, head_dim), d_model),
                             logical_axes=("embed", "heads", "head_dim"))
    self.k_DxKxH = nnx.Param(dense_init(rngs, (d_model, num_kv_heads, head_dim), d_model),
                             logical_axes=("embed", "kv_heads", "head_dim"))
    self.v_DxKxH = nnx.Param(dense_init(rngs, (d_model, num_kv_heads, head_dim), d_model),
                             logical_axes=("embed", "kv_heads", "head_dim"))
    self.o_NxHxD = nnx.Param(
        dense_init(rngs, (num_heads, head_dim, d_model), num_heads * head_dim),
        logical_axes=("heads", "head_dim", "embed"))
    self.rope_theta = rope_theta
    self.rope_scaling = rope_scaling  # hashable, so it stays static in the graphdef
    self.dtype = dtype
    self.kernels = kernels
    self.attention_impl = attention_impl

  def _rope(self, x_BxNxLxH: jax.Array, positions_Bx1xL: jax.Array) -> jax.Array:
    return apply_rope(x_BxNxLxH, positions_Bx1xL, self.rope_theta, self.rope_scaling)

  def qkv(self, x_BxLxD: jax.Array, positions_BxL: jax.Array
           ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Heads-major [B, N|K, L, H] queries, keys and values, RoPE applied to q and k.

    Heads-major activations let the score and value matmuls batch over (B, N) with contiguous
    [L, H] operands, with no per-layer transposes around them; the decode cache has the same
    layout.
    """
    cast = lambda p: p.value.astype(self.dtype)
    q_BxNxLxH = jnp.einsum("bld,dnh->bnlh", x_BxLxD, cast(self.q_DxNxH))
    k_BxKxLxH = jnp.einsum("bld,dkh->bklh", x_BxLxD, cast(self.k_DxKxH))
    v_BxKxLxH = jnp.einsum("bld,dkh->bklh", x_BxLxD, cast(self.v_DxKxH))
    positions_Bx1xL = positions_BxL[:, None, :]
    q_BxNxLxH = shard_activation(self._rope(q_BxNxLxH, positions_Bx1xL),
                                 ("batch", "act_heads", "length", None))
    k_BxKxLxH = shard_activation(self._rope(k_BxKxLxH, positions_Bx1xL),
                                 ("batch", "act_kv_heads", "length", None))
    v_BxKxLxH = shard_activation(v_BxKxLxH, ("batch", "act_kv_heads", "length", None))
    return q_BxNxLxH, k_BxKxLxH, v_BxKxLxH

  def __call__(self, x_BxLxD: jax.Array, positions_BxL: jax.Array,
               segment_ids_BxL: jax.Array) -> jax.Array:
    if self.attention_impl != "xla" and resolve(self.kernels) not in ("xla", "gpu"):
      raise ValueError(f"attention_impl={self.attention_impl!r} needs the xla kernels, but "
                       f"kernels={self.kernels!r} resolves to {resolve(self.kernels)!r} here")
    q_BxNxLxH, k_BxKxLxH, v_BxKxLxH = self.qkv(x_BxLxD, positions_BxL)
    out_BxNxLxH = kernel_set(self.kernels).attention(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH,
                                                     segment_ids_BxL, self.attention_impl)
    return self.out(out_BxNxLxH)

  def out(self, out_BxNxLxH: jax.Array) -> jax.Array:
    """The output projection of the heads' attention results: [B, N, L, H] -> [B, L, D]."""
    return jnp.einsum("bnlh,nhd->bld", out_BxNxLxH, self.o_NxHxD.value.astype(self.dtype))
