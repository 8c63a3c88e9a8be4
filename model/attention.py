"""Causal self-attention with rotary positions and grouped-query heads.

Packed rows (several examples in one row, see data/pipeline.py) attend only within their own
segment: the mask is causal AND same-segment.

The softmax core is hand-written with its own VJP (`_attend`): on CPU the [L, L] score tensors
cost memory passes, not FLOPs, and the generic autodiff of `jax.nn.dot_product_attention`
makes several more passes over them (mask select, max, normalise, and their transposes) than
the minimum below.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model.layers import apply_rope, dense_init
from model.rope import RopeScaling
from model.sharding import shard_activation


# Queries are processed in chunks of this many rows; chunk i only needs the keys up to its
# own end, which skips the fully masked upper-right blocks of the causal [L, L] scores
# (a quarter of the score work at 2 chunks, 3/8 at 4) at the price of more, smaller ops.
QUERY_CHUNK = 128


def _query_chunks(length: int) -> list[tuple[int, int]]:
  return [(start, min(start + QUERY_CHUNK, length)) for start in range(0, length, QUERY_CHUNK)]


def _chunk_mask(segment_ids_BxL: jax.Array, start: int, end: int) -> jax.Array:
  """[B, 1, 1, T, S] mask of queries start..end against keys 0..end.

  Built from iota and compares so XLA fuses it into the score pass instead of reading a
  materialised mask per layer.
  """
  query_TxS = jax.lax.broadcasted_iota(jnp.int32, (end - start, end), 0) + start
  key_TxS = jax.lax.broadcasted_iota(jnp.int32, (end - start, end), 1)
  same_BxTxS = segment_ids_BxL[:, start:end, None] == segment_ids_BxL[:, None, :end]
  return ((key_TxS <= query_TxS)[None] & same_BxTxS)[:, None, None]


def _chunk_fwd(q_BxKxGxTxH, k_BxKxSxH, v_BxKxSxH, mask):
  scores = jnp.einsum("bkgth,bksh->bkgts", q_BxKxGxTxH, k_BxKxSxH,
                      preferred_element_type=jnp.float32)
  # The diagonal is always visible (same token, same segment), so every row has a finite
  # max and masked entries become exactly 0 after exp.
  scores = jnp.where(mask, scores, -jnp.inf)
  probs_un = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
  inv_sum_BxKxGxT = 1.0 / jnp.sum(probs_un, axis=-1)
  # Normalise the [T, H] output rather than the [T, S] probabilities: one fewer pass over
  # the big tensor, same maths.
  out_un = jnp.einsum("bkgts,bksh->bkgth", probs_un.astype(v_BxKxSxH.dtype), v_BxKxSxH,
                      preferred_element_type=jnp.float32)
  out_BxKxGxTxH = (out_un * inv_sum_BxKxGxT[..., None]).astype(q_BxKxGxTxH.dtype)
  return out_BxKxGxTxH, probs_un, inv_sum_BxKxGxT


def _chunk_bwd(q, k, v, probs_un, inv_sum, out, dout):
  dout32 = dout.astype(jnp.float32)
  # dV = P^T dO with P = probs_un * inv_sum: fold 1/sum into dO (a [T, H] tensor).
  dv = jnp.einsum("bkgts,bkgth->bksh", probs_un.astype(v.dtype),
                  (dout32 * inv_sum[..., None]).astype(v.dtype),
                  preferred_element_type=jnp.float32)
  dprobs = jnp.einsum("bkgth,bksh->bkgts", dout, v, preferred_element_type=jnp.float32)
  # Softmax backward: dS = P * (dP - rowsum(dO * O)); rowsum(dP * P) == rowsum(dO * O).
  row_dot = jnp.sum(dout32 * out.astype(jnp.float32), axis=-1, keepdims=True)
  dscores = (probs_un * inv_sum[..., None] * (dprobs - row_dot)).astype(q.dtype)
  dq = jnp.einsum("bkgts,bksh->bkgth", dscores, k, preferred_element_type=jnp.float32)
  dk = jnp.einsum("bkgts,bkgth->bksh", dscores, q, preferred_element_type=jnp.float32)
  return dq, dk, dv


@jax.custom_vjp
def _attend(q_BxKxGxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL):
  """softmax(q k^T + mask) v; q arrives pre-scaled by 1/sqrt(head_dim)."""
  return _attend_fwd(q_BxKxGxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL)[0]


def _attend_fwd(q_BxKxGxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL):
  outs, saved = [], []
  for start, end in _query_chunks(q_BxKxGxLxH.shape[3]):
    out, probs_un, inv_sum = _chunk_fwd(
        q_BxKxGxLxH[:, :, :, start:end], k_BxKxLxH[:, :, :end], v_BxKxLxH[:, :, :end],
        _chunk_mask(segment_ids_BxL, start, end))
    outs.append(out)
    saved.append((probs_un, inv_sum))
  out_BxKxGxLxH = jnp.concatenate(outs, axis=3) if len(outs) > 1 else outs[0]
  return out_BxKxGxLxH, (q_BxKxGxLxH, k_BxKxLxH, v_BxKxLxH, saved, out_BxKxGxLxH)


def _attend_bwd(residuals, dout_BxKxGxLxH):
  q, k, v, saved, out = residuals
  length = q.shape[3]
  pad = lambda x, end: jnp.pad(x, ((0, 0), (0, 0), (0, length - end), (0, 0)))
  dqs, dk, dv = [], 0.0, 0.0
  for (start, end), (probs_un, inv_sum) in zip(_query_chunks(length), saved):
    dq_c, dk_c, dv_c = _chunk_bwd(q[:, :, :, start:end], k[:, :, :end], v[:, :, :end], probs_un,
                                  inv_sum, out[:, :, :, start:end],
                                  dout_BxKxGxLxH[:, :, :, start:end])
    dqs.append(dq_c)
    # Chunk i saw keys 0..end_i only: its key/value gradients cover that prefix.
    dk = dk + pad(dk_c, end)
    dv = dv + pad(dv_c, end)
  dq = jnp.concatenate(dqs, axis=3) if len(dqs) > 1 else dqs[0]
  return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None)


_attend.defvjp(_attend_fwd, _attend_bwd)


def attention_core(q_BxNxLxH: jax.Array, k_BxKxLxH: jax.Array, v_BxKxLxH: jax.Array,
                   segment_ids_BxL: jax.Array) -> jax.Array:
  """Causal, same-segment softmax attention; [B, N, L, H] out, heads-major layout."""
  batch, num_heads, length, head_dim = q_BxNxLxH.shape
  num_kv_heads = k_BxKxLxH.shape[1]
  group = num_heads // num_kv_heads
  # Query heads n = kv * group + g share K/V head kv (the usual GQA grouping).
  q_BxKxGxLxH = (q_BxNxLxH * jnp.asarray(head_dim ** -0.5, q_BxNxLxH.dtype)).reshape(
      batch, num_kv_heads, group, length, head_dim)
  out = _attend(q_BxKxGxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL)
  return out.reshape(batch, num_heads, length, head_dim)


class Attention(nnx.Module):
  """Multi-head (num_kv_heads == num_heads), grouped-query or multi-query attention."""

  def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, head_dim: int, *,
               rope_theta: float, dtype: jnp.dtype, rngs: nnx.Rngs,
               rope_scaling: RopeScaling | None = None):
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

  def _rope(self, x_BxNxLxH: jax.Array, positions_Bx1xL: jax.Array) -> jax.Array:
    return apply_rope(x_BxNxLxH, positions_Bx1xL, self.rope_theta, self.rope_scaling)

  def _qkv(self, x_BxLxD: jax.Array, positions_BxL: jax.Array
           ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Heads-major [B, N|K, L, H] queries, keys and values, RoPE applied to q and k.

    Heads-major activations let the score and value matmuls batch over (B, N) with contiguous
    [L, H] operands, with no per-layer transposes around them; the decode cache has the same
    layout (an [B, S, K, H] cache made XLA:CPU transpose the whole cache in every step).
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
    q_BxNxLxH, k_BxKxLxH, v_BxKxLxH = self._qkv(x_BxLxD, positions_BxL)
    out_BxNxLxH = attention_core(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL)
    return jnp.einsum("bnlh,nhd->bld", out_BxNxLxH, self.o_NxHxD.value.astype(self.dtype))

  def decode(self, x_BxTxD: jax.Array, positions_BxT: jax.Array, kv_valid_BxS: jax.Array,
             cache: dict[str, jax.Array], index) -> tuple[jax.Array, dict[str, jax.Array]]:
    """T new tokens written at cache slots index..index+T-1 (model/sampling.py).

    Query t sees slot s iff s <= index + t and kv_valid[b, s] (left padding is invalid).
    Cache layout: {"k", "v"}: [B, K, S, H], heads-major like the new tokens (see _qkv).
    """
    q_BxNxTxH, k_BxKxTxH, v_BxKxTxH = self._qkv(x_BxTxD, positions_BxT)
    start = (0, 0, index, 0)
    k_BxKxSxH = jax.lax.dynamic_update_slice(cache["k"], k_BxKxTxH.astype(cache["k"].dtype),
                                             start)
    v_BxKxSxH = jax.lax.dynamic_update_slice(cache["v"], v_BxKxTxH.astype(cache["v"].dtype),
                                             start)
    batch, num_heads, num_new, head_dim = q_BxNxTxH.shape
    num_kv, num_slots = k_BxKxSxH.shape[1], k_BxKxSxH.shape[2]
    group = num_heads // num_kv
    # Grouped-query: the G = N / K query heads that share a kv head are rows of one matmul.
    q_BxKxGTxH = q_BxNxTxH.reshape(batch, num_kv, group * num_new, head_dim)
    scores_BxKxGTxS = jnp.einsum("bkqh,bksh->bkqs", q_BxKxGTxH, k_BxKxSxH,
                                 preferred_element_type=jnp.float32) * head_dim ** -0.5
    query_slot_Tx1 = index + jnp.arange(num_new)[:, None]
    causal_TxS = jnp.arange(num_slots)[None, :] <= query_slot_Tx1
    mask_BxTxS = causal_TxS[None] & kv_valid_BxS[:, None, :]
    mask_Bx1xGTxS = jnp.tile(mask_BxTxS, (1, group, 1))[:, None]
    # A finite fill, so the rows of padding tokens (no valid key at all) stay finite instead
    # of spreading NaN through the cache.
    scores_BxKxGTxS = jnp.where(mask_Bx1xGTxS, scores_BxKxGTxS, jnp.finfo(jnp.float32).min)
    probs_BxKxGTxS = jax.nn.softmax(scores_BxKxGTxS, axis=-1).astype(v_BxKxSxH.dtype)
    out_BxKxGTxH = jnp.einsum("bkqs,bksh->bkqh", probs_BxKxGTxS, v_BxKxSxH)
    out_BxNxTxH = out_BxKxGTxH.reshape(batch, num_heads, num_new, head_dim)
    out_BxTxD = jnp.einsum("bnth,nhd->btd", out_BxNxTxH, self.o_NxHxD.value.astype(self.dtype))
    return out_BxTxD, {"k": k_BxKxSxH, "v": v_BxKxSxH}
