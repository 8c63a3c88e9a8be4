"""Kernels for TPUs: the xla set with attention by JAX's Pallas splash attention, and decode
attention by JAX's Pallas paged attention.

Splash attention (jax.experimental.pallas.ops.tpu.splash_attention) is a flash-attention
kernel: it walks [block_q, block_kv] tiles of the scores in VMEM and skips the tiles the
causal mask hides, so neither the [L, L] scores nor their gradient is ever in HBM (the xla
set's attention materialises them, quadratic in length). Packed rows reach it as segment ids,
grouped-query heads natively (query head n reads kv head n // (N / K)).

A Pallas kernel is a per-device program, so it runs under `shard_map` over the mesh in
context: each device gets its rows (batch over data x fsdp) and heads (over tensor), the
sharding model/sharding.py's rules give these activations anyway, so no data moves.
`check_vma=False`: the kernel's custom call carries no varying-manual-axes types.

On a CPU (the tests) the same kernel runs in Pallas' interpret mode, the TPU program
emulated with XLA:CPU ops: slow, but the very kernel, so values and gradients are checked
against the xla set there (tests/test_custom_vjps.py).
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention as pallas_paged

from model.kernels import xla
from model.kernels import platform_in_context
from model.kernels.paged_shards import on_shards
from model.sharding import logical_to_spec

# The MLP, LM head and loss are plain matmuls and reductions, which XLA:TPU fuses well.
gated_mlp = xla.gated_mlp
lm_head = xla.lm_head
token_nll = xla.token_nll

# Splash tiles the sequence in blocks of 128 lanes; lengths that no block divides take the
# xla attention (a [L, L] score tile that short costs nothing worth a kernel).
SPLASH_BLOCKS = (512, 256, 128)


def _block(length: int) -> int | None:
  return next((b for b in SPLASH_BLOCKS if length % b == 0), None)


def _splash_one_shard(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL, interpret: bool):
  """Splash attention of one device's rows and heads (scaled queries)."""
  num_heads, length = q_BxNxLxH.shape[1], q_BxNxLxH.shape[2]
  b = _block(length)
  mask = splash.MultiHeadMask([splash.CausalMask((length, length))] * num_heads)
  kernel = splash.make_splash_mha(
      mask, head_shards=1, q_seq_shards=1, interpret=interpret,
      block_sizes=splash.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b,
                                    block_kv_dkv=b, block_kv_dkv_compute=b, block_q_dq=b,
                                    block_kv_dq=b))
  one_row = lambda q, k, v, s: kernel(q, k, v, segment_ids=splash.SegmentIds(q=s, kv=s))
  return jax.vmap(one_row)(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL)


def attention(q_BxNxLxH: jax.Array, k_BxKxLxH: jax.Array, v_BxKxLxH: jax.Array,
              segment_ids_BxL: jax.Array, impl: str = "xla") -> jax.Array:
  """Causal, same-segment softmax attention; [B, N, L, H] in and out (heads-major)."""
  del impl  # one attention in this set (model/config.py refuses attention_impl != "xla")
  length, head_dim = q_BxNxLxH.shape[2], q_BxNxLxH.shape[3]
  if _block(length) is None:
    return xla.attention(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL)
  # Splash computes softmax(q k^T) v: the 1/sqrt(H) goes on the queries.
  q_BxNxLxH = q_BxNxLxH * jnp.asarray(head_dim ** -0.5, q_BxNxLxH.dtype)
  interpret = platform_in_context() != "tpu"
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return _splash_one_shard(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL, interpret)
  q_spec = logical_to_spec(("batch", "act_heads", "length", None), q_BxNxLxH.shape, mesh)
  kv_spec = logical_to_spec(("batch", "act_kv_heads", "length", None), k_BxKxLxH.shape, mesh)
  if kv_spec[1] != q_spec[1]:
    # Fewer kv heads than tensor shards: each device's query heads need kv heads that are
    # not its own; repeated to one per query head, they split like the queries.
    group = q_BxNxLxH.shape[1] // k_BxKxLxH.shape[1]
    k_BxKxLxH, v_BxKxLxH = (jnp.repeat(x, group, axis=1) for x in (k_BxKxLxH, v_BxKxLxH))
    kv_spec = q_spec
  segment_spec = logical_to_spec(("batch", "length"), segment_ids_BxL.shape, mesh)
  return jax.shard_map(
      lambda q, k, v, s: _splash_one_shard(q, k, v, s, interpret), mesh=mesh,
      in_specs=(q_spec, kv_spec, kv_spec, segment_spec), out_specs=q_spec,
      check_vma=False)(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL)


# --- Decode attention over the paged KV cache ----------------------------------------------

# Pallas' TPU paged attention (jax.experimental.pallas.ops.tpu.paged_attention) walks each
# sequence's pages in blocks of `pages_per_compute_block` pages, DMA-ing the next block from
# HBM into VMEM while it scores the current one, and stops at the sequence's length (pages
# past it are never read). Its query/output blocks are [G, H] tiles, which Mosaic lays out
# only when H is a multiple of the 128 lanes; other head dims take the xla reference. It reads
# K/V as bfloat16 (its choice: what a TPU's MXU multiplies), so float32 pools are rounded.
PAGED_LANES = 128
# Tokens per compute block at most: bigger blocks mean fewer, longer DMAs and fewer softmax
# rescales; the double-buffered K/V blocks (2 x 2 x block x H) stay far below VMEM's size.
PAGED_BLOCK_TOKENS = 512


def pages_per_compute_block(pages_per_sequence: int, page_size: int) -> int:
  """The largest divisor of the table's width whose pages hold at most PAGED_BLOCK_TOKENS
  (the kernel needs a divisor; 1 always is)."""
  return max(b for b in range(1, pages_per_sequence + 1)
             if pages_per_sequence % b == 0 and (b == 1 or b * page_size <= PAGED_BLOCK_TOKENS))


def paged_attention(q_SxNxH: jax.Array, k_pages_KxQxExH: jax.Array, v_pages_KxQxExH: jax.Array,
                    lengths_S: jax.Array, page_table_SxM: jax.Array, *,
                    shared_pages: int = 0, groups=None) -> jax.Array:
  """xla.paged_attention's maths by the Pallas TPU kernel (interpreted off a TPU)."""
  del shared_pages, groups  # the kernel reads every sequence's pages itself
  interpret = platform_in_context() != "tpu"
  # Pallas' TPU interpreter runs the kernel as host callbacks, which on a CPU mesh of several
  # devices deadlock or crash XLA:CPU (nested shard_maps): there, off a TPU, the reference
  # runs instead, and the kernel's sharding is checked by compiling for a v5e-8.
  several_cpu_devices = interpret and jax.sharding.get_abstract_mesh().size > 1
  if q_SxNxH.shape[-1] % PAGED_LANES or several_cpu_devices:
    return xla.paged_attention(q_SxNxH, k_pages_KxQxExH, v_pages_KxQxExH, lengths_S,
                               page_table_SxM)
  block = pages_per_compute_block(page_table_SxM.shape[1], k_pages_KxQxExH.shape[2])

  def kernel(q, k_pages, v_pages, lengths, page_table):
    # Off a TPU the kernel runs in Pallas' TPU interpret mode (its DMAs and semaphores
    # emulated on the CPU): the very kernel, so the tests check it against the reference.
    with pltpu.force_tpu_interpret_mode() if interpret else contextlib.nullcontext():
      return pallas_paged(q, k_pages, v_pages, lengths, page_table,
                          pages_per_compute_block=block)

  return on_shards(kernel, q_SxNxH, k_pages_KxQxExH, v_pages_KxQxExH, lengths_S, page_table_SxM)
