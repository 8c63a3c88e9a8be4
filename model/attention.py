"""Causal self-attention with rotary positions and grouped-query heads.

Packed rows (several examples in one row, see data/pipeline.py) attend only within their own
segment: the mask is causal AND same-segment. The softmax core of training and scoring comes
from the configured kernel set (model/kernels/: XLA's or cuDNN's dot_product_attention, or the
hand-written CPU kernel); cached decoding (`decode`) has one plain-JAX core for every set.
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
    if self.attention_impl != "xla" and resolve(self.kernels) != "xla":
      raise ValueError(f"attention_impl={self.attention_impl!r} needs the xla kernels, but "
                       f"kernels={self.kernels!r} resolves to {resolve(self.kernels)!r} here")
    q_BxNxLxH, k_BxKxLxH, v_BxKxLxH = self._qkv(x_BxLxD, positions_BxL)
    out_BxNxLxH = kernel_set(self.kernels).attention(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH,
                                                     segment_ids_BxL, self.attention_impl)
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

  def decode_shared(self, x_Sx1xD: jax.Array, positions_S: jax.Array,
                    prompt: dict[str, jax.Array], prompt_valid_PxL: jax.Array,
                    problem_S: jax.Array, generated: dict[str, jax.Array],
                    generated_valid_SxN: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One new token per slot over [its problem's prompt cache ; its own generated cache ; itself].

    `prompt` {"k", "v"}: [P, K, L, H], one per problem (model/shared_decode.py's prefill);
    `generated` {"k", "v"}: [S, K, N, H], the keys/values of the slot's own earlier tokens
    (valid where generated_valid_SxN). One softmax spans the three parts, so the result is
    the attention of a single cache holding prompt + generated tokens. Returns
    (out [S, 1, D], the new token's k [S, K, H] and v [S, K, H]) for the caller to store.
    """
    q_SxNx1xH, k_SxKx1xH, v_SxKx1xH = self._qkv(x_Sx1xD, positions_S[:, None])
    slots, num_heads, _, head_dim = q_SxNx1xH.shape
    num_kv = k_SxKx1xH.shape[1]
    # Grouped-query: the G = N / K query heads that share a kv head are rows of one matmul.
    q_SxKxGxH = q_SxNx1xH.reshape(slots, num_kv, num_heads // num_kv, head_dim)
    k_SxKxH, v_SxKxH = k_SxKx1xH[:, :, 0], v_SxKx1xH[:, :, 0]
    # Every slot's queries against every problem's prompt keys, then each slot keeps its own
    # problem's row: P times the (small) prompt-attention FLOPs, but the prompt cache is read
    # in place, never gathered per slot (a per-slot copy would cost the memory traffic the
    # shared cache saves).
    pick_SxP = jax.nn.one_hot(problem_S, prompt["k"].shape[0], dtype=q_SxKxGxH.dtype)
    scale = head_dim ** -0.5
    f32 = jnp.float32
    all_scores = jnp.einsum("skgh,pklh->skgpl", q_SxKxGxH, prompt["k"].astype(q_SxKxGxH.dtype),
                            preferred_element_type=f32)
    prompt_scores = jnp.einsum("skgpl,sp->skgl", all_scores, pick_SxP.astype(f32)) * scale
    own_scores = jnp.einsum("skgh,sknh->skgn", q_SxKxGxH,
                            generated["k"].astype(q_SxKxGxH.dtype),
                            preferred_element_type=f32) * scale
    self_scores = jnp.einsum("skgh,skh->skg", q_SxKxGxH, k_SxKxH,
                             preferred_element_type=f32)[..., None] * scale
    # One softmax over the three parts, by a shared max and sum: concatenating the scores
    # made the step ~2x slower on XLA:CPU (measured with N = 512 generated positions).
    low = jnp.finfo(f32).min
    prompt_scores = jnp.where(jnp.take(prompt_valid_PxL, problem_S, axis=0)[:, None, None, :],
                              prompt_scores, low)
    own_scores = jnp.where(generated_valid_SxN[:, None, None, :], own_scores, low)
    max_SxKxGx1 = jnp.maximum(
        jnp.maximum(jnp.max(prompt_scores, -1, keepdims=True),
                    jnp.max(own_scores, -1, keepdims=True)), self_scores)
    prompt_exp = jnp.exp(prompt_scores - max_SxKxGx1)
    own_exp = jnp.exp(own_scores - max_SxKxGx1)
    self_exp = jnp.exp(self_scores - max_SxKxGx1)
    total = (jnp.sum(prompt_exp, -1, keepdims=True) + jnp.sum(own_exp, -1, keepdims=True) +
             self_exp)
    cast = lambda x: (x / total).astype(v_SxKxH.dtype)
    out_SxKxGxH = (
        jnp.einsum("skgpl,pklh->skgh",
                   jnp.einsum("skgl,sp->skgpl", cast(prompt_exp),
                              pick_SxP.astype(v_SxKxH.dtype)),
                   prompt["v"].astype(v_SxKxH.dtype)) +
        jnp.einsum("skgn,sknh->skgh", cast(own_exp), generated["v"].astype(v_SxKxH.dtype)) +
        cast(self_exp) * v_SxKxH[:, :, None, :])
    out_SxNxH = out_SxKxGxH.reshape(slots, num_heads, head_dim)
    out_Sx1xD = jnp.einsum("snh,nhd->sd", out_SxNxH,
                           self.o_NxHxD.value.astype(self.dtype))[:, None]
    return out_Sx1xD, k_SxKxH, v_SxKxH
