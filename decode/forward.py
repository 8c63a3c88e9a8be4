"""The model's layers over the paged cache: prefill (many tokens of a row at once) and one
decode step (one token per slot), both through `Decoder.scan_layers`.

Prefill writes a row's keys/values into its pages (decode/kv_pages.py) and attends in plain
JAX: the shared prefix's rows attend causally among themselves; a prompt's rows attend to the
prefix's keys (read back from its pages) and causally to their own. A decode step stores each
slot's new key/value at its position first, then attends through the kernel set's
`paged_attention` (model/kernels/) over the slot's page table: the prefix's pages, its
problem's prompt pages and its own, the new token last.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from decode import kv_pages
from model.decoder import Decoder
from model.kernels import kernel_set, resolve
from model.kernels.page_groups import PageGroups

_LOW = float(jnp.finfo(jnp.float32).min)


def layer_unroll(model: Decoder) -> int | bool:
  """Layers per iteration of the decode step's scan: all of them on XLA:CPU, which runs a
  rolled loop's iterations one small program at a time; one elsewhere."""
  return True if resolve(model.cfg.kernels) == "cpu" else 1


def _prefill_attention(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, prefix=None):
  """Causal attention of L rows over [the prefix's C keys (shared by every row) ; their own
  L], one float32 softmax; grouped-query heads. Returns [B, N, L, H]."""
  batch, num_heads, length, head_dim = q_BxNxLxH.shape
  kv_heads = k_BxKxLxH.shape[1]
  q_BxKxGxLxH = q_BxNxLxH.reshape(batch, kv_heads, num_heads // kv_heads, length, head_dim)
  q_BxKxGxLxH = q_BxKxGxLxH * jnp.asarray(head_dim ** -0.5, q_BxKxGxLxH.dtype)
  f32 = jnp.float32
  own_BxKxGxLxU = jnp.einsum("bkglh,bkuh->bkglu", q_BxKxGxLxH, k_BxKxLxH,
                             preferred_element_type=f32)
  causal_LxU = jnp.arange(length)[None, :] <= jnp.arange(length)[:, None]
  scores = jnp.where(causal_LxU, own_BxKxGxLxU, _LOW)
  if prefix is not None:
    prefix_k_KxCxH, prefix_v_KxCxH = prefix
    scores = jnp.concatenate([jnp.einsum("bkglh,kch->bkglc", q_BxKxGxLxH, prefix_k_KxCxH,
                                         preferred_element_type=f32), scores], axis=-1)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_BxKxLxH.dtype)
  out_BxKxGxLxH = jnp.einsum("bkglu,bkuh->bkglh", probs[..., -length:], v_BxKxLxH,
                             preferred_element_type=f32)
  if prefix is not None:
    out_BxKxGxLxH += jnp.einsum("bkglc,kch->bkglh", probs[..., :-length], prefix_v_KxCxH,
                                preferred_element_type=f32)
  return out_BxKxGxLxH.astype(q_BxNxLxH.dtype).reshape(q_BxNxLxH.shape)


def prefill(model: Decoder, tokens_BxL: jax.Array, first_position: int, pool: kv_pages.Pool,
            layout: kv_pages.PageLayout, first_page: int, with_prefix: bool
            ) -> tuple[jax.Array, kv_pages.Pool]:
  """(hidden states [B, L, D] after the last layer, the pool with the rows' keys/values in
  pages first_page ... (layer by layer)). Row b's token t is at position first_position + t;
  with_prefix: the rows follow the layout's prefix (its pages, prefilled already)."""
  num_rows, length = tokens_BxL.shape
  positions_BxL = jnp.broadcast_to(first_position + jnp.arange(length), (num_rows, length))
  per_layer = layout.pages_per_layer

  def layer(block, carry, index):
    x_BxLxD, pool = carry
    q_BxNxLxH, k_BxKxLxH, v_BxKxLxH = block.attn.qkv(block.attn_norm(x_BxLxD), positions_BxL)
    prefix = None
    if with_prefix:
      prefix = kv_pages.read_pages(pool, index * per_layer, layout.prefix_pages)
    pool = kv_pages.write_pages(pool, index * per_layer + first_page, k_BxKxLxH, v_BxKxLxH)
    attention = _prefill_attention(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, prefix)
    return block.residuals(x_BxLxD, block.attn.out(attention)), pool

  return model.scan_layers(layer, (model.embed(tokens_BxL), pool),
                           jnp.arange(model.cfg.num_layers))


def decode_step(model: Decoder, token_S: jax.Array, position_S: jax.Array,
                table_SxM: jax.Array, pool: kv_pages.Pool, layout: kv_pages.PageLayout,
                groups: PageGroups | None = None) -> tuple[jax.Array, kv_pages.Pool]:
  """(next-token logits [S, V], the pool with each slot's token stored). Slot s feeds
  token_S[s] at position position_S[s] of the sequence its page table table_SxM[s] holds;
  groups: which of the tables' pages slots share (kv_pages.prompt_groups), for the kernel."""
  paged_attention = kernel_set(model.cfg.kernels).paged_attention
  head_dim = model.cfg.head_dim
  per_layer = layout.pages_per_layer

  def layer(block, carry, index):
    x_Sx1xD, pool = carry
    q_SxNx1xH, k_SxKx1xH, v_SxKx1xH = block.attn.qkv(block.attn_norm(x_Sx1xD),
                                                     position_S[:, None])
    offset = index * per_layer
    pool = kv_pages.write_tokens(pool, offset, table_SxM, position_S, k_SxKx1xH[:, :, 0],
                                 v_SxKx1xH[:, :, 0])
    q_SxNxH = q_SxNx1xH[:, :, 0] * jnp.asarray(head_dim ** -0.5, q_SxNx1xH.dtype)
    layer_groups = None if groups is None else groups._replace(
        table_GxW=groups.table_GxW + offset)
    out_SxNxH = paged_attention(q_SxNxH, pool["k"], pool["v"], position_S + 1,
                                table_SxM + offset, shared_pages=layout.prefix_pages,
                                groups=layer_groups)
    return block.residuals(x_Sx1xD, block.attn.out(out_SxNxH[:, :, None])), pool

  x_Sx1xD, pool = model.scan_layers(layer, (model.embed(token_S[:, None]), pool),
                                    jnp.arange(model.cfg.num_layers),
                                    unroll=layer_unroll(model))
  return model.logits(x_Sx1xD)[:, 0], pool
