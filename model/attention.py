"""Causal self-attention with rotary positions and grouped-query heads.

Packed rows (several examples in one row, see data/pipeline.py) attend only within their own
segment: the mask is causal AND same-segment.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model.layers import apply_rope, dense_init
from model.sharding import shard_activation


def causal_segment_mask(segment_ids_BxL: jax.Array) -> jax.Array:
  """[B, 1, L, L] boolean: query t may see key s iff s <= t and both are in one segment."""
  length = segment_ids_BxL.shape[1]
  causal_LxL = jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))
  same_BxLxL = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
  return (causal_LxL[None] & same_BxLxL)[:, None]


class Attention(nnx.Module):
  """Multi-head (num_kv_heads == num_heads), grouped-query or multi-query attention."""

  def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, head_dim: int, *,
               rope_theta: float, dtype: jnp.dtype, rngs: nnx.Rngs):
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
    self.dtype = dtype

  def __call__(self, x_BxLxD: jax.Array, positions_BxL: jax.Array,
               segment_ids_BxL: jax.Array) -> jax.Array:
    cast = lambda p: p.value.astype(self.dtype)
    q_BxLxNxH = jnp.einsum("bld,dnh->blnh", x_BxLxD, cast(self.q_DxNxH))
    k_BxLxKxH = jnp.einsum("bld,dkh->blkh", x_BxLxD, cast(self.k_DxKxH))
    v_BxLxKxH = jnp.einsum("bld,dkh->blkh", x_BxLxD, cast(self.v_DxKxH))
    q_BxLxNxH = shard_activation(apply_rope(q_BxLxNxH, positions_BxL, self.rope_theta),
                                 ("batch", "length", "act_heads", None))
    k_BxLxKxH = shard_activation(apply_rope(k_BxLxKxH, positions_BxL, self.rope_theta),
                                 ("batch", "length", "act_kv_heads", None))
    v_BxLxKxH = shard_activation(v_BxLxKxH, ("batch", "length", "act_kv_heads", None))
    out_BxLxNxH = jax.nn.dot_product_attention(
        q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, mask=causal_segment_mask(segment_ids_BxL))
    return jnp.einsum("blnh,nhd->bld", out_BxLxNxH, cast(self.o_NxHxD))
