"""Kernels in plain JAX, differentiated by autodiff: what GPUs and TPUs run.

Attention goes through `jax.nn.dot_product_attention`: `impl="xla"` is XLA's own softmax
attention (it materialises the [L, L] scores), `impl="cudnn"` cuDNN's fused flash kernel
(GPU only, float16/bfloat16 only; the packing mask reaches it as a [B, 1, L, L] bias, the
causal part as its built-in causal mask).

Same signatures and maths as model/kernels/cpu.py (tests/test_custom_vjps.py checks both
against autodiff).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from model.sharding import shard_activation


def attention(q_BxNxLxH: jax.Array, k_BxKxLxH: jax.Array, v_BxKxLxH: jax.Array,
              segment_ids_BxL: jax.Array, impl: str = "xla") -> jax.Array:
  """Causal, same-segment softmax attention; [B, N, L, H] in and out (heads-major).

  dot_product_attention takes [B, L, N, H]; XLA folds the transposes into the matmuls'
  layouts. Grouped-query heads (K < N) are native to it: query head n uses K/V head n // G.
  """
  to_blnh = lambda x: jnp.swapaxes(x, 1, 2)
  same_segment_Bx1xLxL = (segment_ids_BxL[:, None, :, None] ==
                          segment_ids_BxL[:, None, None, :])
  out_BxLxNxH = jax.nn.dot_product_attention(
      to_blnh(q_BxNxLxH), to_blnh(k_BxKxLxH), to_blnh(v_BxKxLxH), mask=same_segment_Bx1xLxL,
      is_causal=True, implementation=impl)
  return to_blnh(out_BxLxNxH)


def gated_mlp(activation, x_BxLxD: jax.Array, gate_DxF: jax.Array, up_DxF: jax.Array,
              down_FxD: jax.Array) -> jax.Array:
  """down(act(x gate) * (x up))."""
  gate_BxLxF = jnp.einsum("bld,df->blf", x_BxLxD, gate_DxF)
  up_BxLxF = jnp.einsum("bld,df->blf", x_BxLxD, up_DxF)
  hidden_BxLxF = shard_activation(activation(gate_BxLxF) * up_BxLxF,
                                  ("batch", "length", "act_mlp"))
  return jnp.einsum("blf,fd->bld", hidden_BxLxF, down_FxD)


def lm_head(x_BxLxD: jax.Array, head_DxV: jax.Array) -> jax.Array:
  """float32 logits x @ head."""
  return jnp.einsum("bld,dv->blv", x_BxLxD, head_DxV, preferred_element_type=jnp.float32)


def token_nll(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """Per-token cross-entropy logsumexp(logits) - logits[target]."""
  label_BxL = jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits_BxLxV, axis=-1) - label_BxL


def paged_attention(q_SxNxH: jax.Array, k_pages_KxQxExH: jax.Array, v_pages_KxQxExH: jax.Array,
                    lengths_S: jax.Array, page_table_SxM: jax.Array, *,
                    shared_pages: int = 0, groups=None) -> jax.Array:
  """One query token per sequence against its paged keys/values (decode attention).

  Sequence s's position t lives in page page_table_SxM[s, t // E] at offset t % E; positions
  from lengths_S[s] on are masked. q is already scaled by 1/sqrt(H); the softmax is float32;
  query head n reads kv head n // (N / K). The reference of every set: each sequence's pages
  gathered into one [M * E] key row, masked, one softmax. `shared_pages` (the first table
  entries, the same pages in every row) and `groups` (model/kernels/page_groups.py: pages a
  group of rows shares) change nothing here.
  """
  del shared_pages, groups
  num_seqs, num_heads, head_dim = q_SxNxH.shape
  num_kv_heads, _, page_size, _ = k_pages_KxQxExH.shape
  span = page_table_SxM.shape[1] * page_size
  gather = lambda pages: pages[:, page_table_SxM].reshape(num_kv_heads, num_seqs, span, head_dim)
  k_KxSxUxH, v_KxSxUxH = gather(k_pages_KxQxExH), gather(v_pages_KxQxExH)
  q_SxKxGxH = q_SxNxH.reshape(num_seqs, num_kv_heads, num_heads // num_kv_heads, head_dim)
  scores_SxKxGxU = jnp.einsum("skgh,ksuh->skgu", q_SxKxGxH, k_KxSxUxH,
                              preferred_element_type=jnp.float32)
  valid_Sx1x1xU = (jnp.arange(span)[None, :] < lengths_S[:, None])[:, None, None, :]
  probs_SxKxGxU = jax.nn.softmax(jnp.where(valid_Sx1x1xU, scores_SxKxGxU, -jnp.inf), axis=-1)
  out_SxKxGxH = jnp.einsum("skgu,ksuh->skgh", probs_SxKxGxU, v_KxSxUxH,
                           preferred_element_type=jnp.float32)
  return out_SxKxGxH.reshape(num_seqs, num_heads, head_dim).astype(q_SxNxH.dtype)
