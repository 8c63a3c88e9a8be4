"""Causal self-attention with rotary positions and grouped-query heads.

Packed rows (several examples in one row, see data/pipeline.py) attend only within their own
segment: the mask is causal AND same-segment. The softmax core of training and scoring comes
from the configured kernel set (model/kernels/: XLA's or cuDNN's dot_product_attention, or the
hand-written CPU kernel); cached decoding (`decode`) has one plain-JAX core for every set.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from model import page_pool
from model.kernels import kernel_set, resolve
from model.layers import apply_rope, dense_init
from model.rope import RopeScaling
from model.sharding import shard_activation


class OwnKeys(NamedTuple):
  """Where decode_shared finds each slot's own earlier keys in the page pool."""
  pages: page_pool.Pages
  length_S: jax.Array   # keys per slot (its positions 0 ... length - 1)
  cold: jax.Array       # page_pool.cold_needed: whether the step reads the cold pages


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

  def _qkv_one_token(self, x_Sx1xD: jax.Array, positions_S: jax.Array
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """_qkv for one token per row, as 2-D matmuls against [D, heads * H] weights: in a
    sampling loop XLA:CPU copied the 3-D weights into a matmul layout in every step."""
    slots, _, d_model = x_Sx1xD.shape
    x_SxD = x_Sx1xD.reshape(slots, d_model)

    def project(param, axes):
      w_DxM = param.value.astype(self.dtype).reshape(d_model, -1)
      heads = param.value.shape[1]
      out_SxNx1xH = (x_SxD @ w_DxM).reshape(slots, heads, 1, -1)
      return shard_activation(out_SxNx1xH, ("batch", axes, "length", None))

    positions_Sx1x1 = positions_S[:, None, None]
    q_SxNx1xH = self._rope(project(self.q_DxNxH, "act_heads"), positions_Sx1x1)
    k_SxKx1xH = self._rope(project(self.k_DxKxH, "act_kv_heads"), positions_Sx1x1)
    return q_SxNx1xH, k_SxKx1xH, project(self.v_DxKxH, "act_kv_heads")

  def __call__(self, x_BxLxD: jax.Array, positions_BxL: jax.Array,
               segment_ids_BxL: jax.Array) -> jax.Array:
    if self.attention_impl != "xla" and resolve(self.kernels) not in ("xla", "gpu"):
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
                    prompt: dict[str, jax.Array], prompt_valid_SxL: jax.Array,
                    window_offset_S: jax.Array, generated: dict[str, jax.Array],
                    own: OwnKeys, store=None, prefix: dict[str, jax.Array] | None = None
                    ) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
    """One new token per slot over [the shared prefix ; its problem's prompt cache ; its own
    generated cache ; itself].

    The S slots form J lanes of S / J (model/slot_sampling.py). `prompt` {"k": [J, W, K, H, L],
    "v": [J, W, K, L, H]} holds each lane's window of W problems' prompt caches
    (model/shared_decode.py); slot s's problem is entry window_offset_S[s] of its lane's
    window, its real keys where prompt_valid_SxL[s]. `generated` (model/page_pool.py: "hot"
    and "cold" parts of {"k": [groups, pages, K, H, PAGE], "v": [groups, pages, K, PAGE, H]})
    holds the keys/values of the slots' own earlier tokens, in the pages `own.pages` gives
    each slot; slot s's first own.length_S[s] positions are keys (the cold parts are read
    only if own.cold).
    `prefix` {"k": [K, H, C], "v": [K, C, H]}, when given, holds the C tokens every problem's
    prompt starts with (then `prompt` holds only what follows them); every slot attends to all
    of it. One softmax spans the parts, so the result is the attention of a single cache
    holding prompt + generated tokens.

    `store(generated, k_SxKxH, v_SxKxH) -> generated`, when given, writes the new token into
    the generated cache first, and the valid positions must include it; the token is then
    attended there. Written after the read instead, an in-place cache update makes XLA copy
    the whole cache in every step (the read and the write of one buffer in one step). Without
    `store` the token attends to itself separately and the caller stores it. Returns
    (out [S, 1, D], the new token's k [S, K, H] and v [S, K, H], the generated cache).
    """
    q_SxNx1xH, k_SxKx1xH, v_SxKx1xH = self._qkv_one_token(x_Sx1xD, positions_S)
    slots, num_heads, _, head_dim = q_SxNx1xH.shape
    num_kv = k_SxKx1xH.shape[1]
    lanes, window = prompt["k"].shape[:2]
    # Grouped-query: the G = N / K query heads that share a kv head are rows of one matmul.
    q_SxKxGxH = q_SxNx1xH.reshape(slots, num_kv, num_heads // num_kv, head_dim)
    k_SxKxH, v_SxKxH = k_SxKx1xH[:, :, 0], v_SxKx1xH[:, :, 0]
    if store is not None:
      generated = store(generated, k_SxKxH, v_SxKxH)
    # The 1/sqrt(H) scale goes on the queries (S x N x H values), not on every score.
    q_SxKxGxH = q_SxKxGxH * jnp.asarray(head_dim ** -0.5, q_SxKxGxH.dtype)
    f32 = jnp.float32
    low = jnp.finfo(f32).min
    # The prompt part is lane-major, [J, K, Q = slots of the lane x query group, ...]: a
    # lane's queries against its window's keys are one matmul per (lane, kv head), the
    # operands in the layouts they have. With W > 1 each slot keeps the scores of its own
    # problem (W times the prompt FLOPs).
    per_lane, group = slots // lanes, num_heads // num_kv
    to_lane_major = lambda x_SxKxGxT: x_SxKxGxT.reshape(
        lanes, per_lane, num_kv, group, -1).transpose(0, 2, 1, 3, 4).reshape(
            lanes, num_kv, per_lane * group, -1)
    to_slot_major = lambda x_JxKxQxT: x_JxKxQxT.reshape(
        lanes, num_kv, per_lane, group, -1).transpose(0, 2, 1, 3, 4).reshape(
            slots, num_kv, group, -1)
    q_JxKxQxH = to_lane_major(q_SxKxGxH)
    own_problem_JxQ = jnp.repeat(window_offset_S.reshape(lanes, per_lane), group, axis=1)
    window_scores = jnp.einsum("jkqh,jwkhl->jkqwl", q_JxKxQxH,
                               prompt["k"].astype(q_SxKxGxH.dtype), preferred_element_type=f32)
    prompt_scores = window_scores[:, :, :, 0]
    for w in range(1, window):
      prompt_scores = jnp.where((own_problem_JxQ == w)[:, None, :, None],
                                window_scores[:, :, :, w], prompt_scores)
    prompt_valid_JxQxL = jnp.repeat(prompt_valid_SxL.reshape(lanes, per_lane, -1), group, 1)
    prompt_scores = jnp.where(prompt_valid_JxQxL[:, None], prompt_scores, low)
    lane_max_JxKxQx1 = jnp.max(prompt_scores, -1, keepdims=True)
    if prefix is not None:
      # Every key of the prefix is real and every slot sees all of it: no window, no mask.
      # Kv-head-major [K, J, Q, C], the order a dot_general batched over K produces: as
      # [J, K, Q, C] XLA:CPU transposed these scores (C = 700 per query) twice a layer.
      q_KxJxQxH = q_JxKxQxH.transpose(1, 0, 2, 3)
      prefix_scores = jnp.einsum("kjqh,khc->kjqc", q_KxJxQxH,
                                 prefix["k"].astype(q_SxKxGxH.dtype),
                                 preferred_element_type=f32)
      lane_max_JxKxQx1 = jnp.maximum(
          lane_max_JxKxQx1, jnp.max(prefix_scores, -1, keepdims=True).transpose(1, 0, 2, 3))
    # The own pages come as softmax partials under their own max, merged below.
    own_max_SxKxG, own_sum_SxKxG, own_out_SxKxGxH = page_pool.attend_pages(
        q_SxKxGxH, generated, own.pages, own.length_S, own.cold)
    own_max_SxKxGx1 = own_max_SxKxG[..., None]
    # One softmax over the parts, by a shared max and sum (concatenating the scores made the
    # step ~2x slower on XLA:CPU); only the [.., 1] statistics change layout.
    max_SxKxGx1 = jnp.maximum(to_slot_major(lane_max_JxKxQx1), own_max_SxKxGx1)
    if store is None:
      self_scores = jnp.einsum("skgh,skh->skg", q_SxKxGxH, k_SxKxH,
                               preferred_element_type=f32)[..., None]
      max_SxKxGx1 = jnp.maximum(max_SxKxGx1, self_scores)
    lane_max_JxKxQx1 = to_lane_major(max_SxKxGx1)
    prompt_exp = jnp.exp(prompt_scores - lane_max_JxKxQx1)
    lane_sum_JxKxQx1 = jnp.sum(prompt_exp, -1, keepdims=True)
    if prefix is not None:
      prefix_exp = jnp.exp(prefix_scores - lane_max_JxKxQx1.transpose(1, 0, 2, 3))
      lane_sum_JxKxQx1 = lane_sum_JxKxQx1 + jnp.sum(prefix_exp, -1, keepdims=True).transpose(
          1, 0, 2, 3)
    own_scale_SxKxGx1 = jnp.exp(own_max_SxKxGx1 - max_SxKxGx1)
    total = to_slot_major(lane_sum_JxKxQx1) + own_sum_SxKxG[..., None] * own_scale_SxKxGx1
    if store is None:
      self_exp = jnp.exp(self_scores - max_SxKxGx1)
      total = total + self_exp
    # The values are weighted by the unnormalised exponentials (each <= 1) and the sum is
    # divided by the total once, on the [S, K, G, H] output rather than on every weight.
    dtype = v_SxKxH.dtype
    prompt_exp = prompt_exp.astype(dtype)
    prompt_out = 0
    if prefix is not None:
      prompt_out = jnp.einsum("kjqc,kch->kjqh", prefix_exp.astype(dtype),
                              prefix["v"].astype(dtype),
                              preferred_element_type=f32).transpose(1, 0, 2, 3)
    for w in range(window):
      exp_w = prompt_exp if window == 1 else jnp.where(
          (own_problem_JxQ == w)[:, None, :, None], prompt_exp, 0)
      prompt_out = prompt_out + jnp.einsum("jkql,jklh->jkqh", exp_w,
                                           prompt["v"][:, w].astype(dtype),
                                           preferred_element_type=f32)
    out_SxKxGxH = to_slot_major(prompt_out) + own_out_SxKxGxH * own_scale_SxKxGx1
    if store is None:
      out_SxKxGxH = out_SxKxGxH + self_exp * v_SxKxH[:, :, None, :]
    out_SxM = (out_SxKxGxH / total).astype(dtype).reshape(slots, num_heads * head_dim)
    out_Sx1xD = (out_SxM @ self.o_NxHxD.value.astype(self.dtype).reshape(
        num_heads * head_dim, -1))[:, None]
    return out_Sx1xD, k_SxKxH, v_SxKxH, generated
