"""Kernels for GPUs: the xla set, with decode attention by JAX's Pallas GPU paged attention.

Training and prefill take the xla set's kernels (`attention_impl="cudnn"` picks cuDNN's
flash attention there). Decode attention over the paged KV cache is Pallas' GPU
paged_attention (jax.experimental.pallas.ops.gpu.paged_attention), a Triton kernel: per
sequence and kv head it splits the table into `k_splits` partitions scored in parallel
(flash-decoding), each walking its pages `pages_per_compute_block` at a time and stopping at
the sequence's length, and merges the partitions' softmax statistics at the end.

Triton tiles must be powers of two: the head dim and the [block of pages x page size] key
tile; other shapes take the xla reference. A kv head's query heads are padded to the kernel's
16-row tile (block_h). Off a GPU the same kernel runs in Pallas' interpret mode (the tests).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.gpu import paged_attention as pallas_paged

from model.kernels import platform_in_context
from model.kernels import xla
from model.kernels.paged_shards import on_shards

attention = xla.attention
gated_mlp = xla.gated_mlp
lm_head = xla.lm_head
token_nll = xla.token_nll

# Partitions of the table scored in parallel at most (the kernel's default), and pages per
# step of a partition's loop at most (more pages: fewer, larger tiles).
MAX_K_SPLITS = 16
MAX_PAGES_PER_BLOCK = 8


def _power_of_two(n: int) -> bool:
  return n > 0 and n & (n - 1) == 0


def kernel_blocks(pages_per_sequence: int) -> tuple[int, int]:
  """(k_splits, pages_per_compute_block): the most partitions that divide the table, and the
  largest power of two (Triton's tiles) of pages that divides a partition."""
  k_splits = max(k for k in range(1, MAX_K_SPLITS + 1) if pages_per_sequence % k == 0)
  partition = pages_per_sequence // k_splits
  block = max(b for b in (1, 2, 4, 8) if b <= MAX_PAGES_PER_BLOCK and partition % b == 0)
  return k_splits, block


def paged_attention(q_SxNxH: jax.Array, k_pages_KxQxExH: jax.Array, v_pages_KxQxExH: jax.Array,
                    lengths_S: jax.Array, page_table_SxM: jax.Array, *,
                    shared_pages: int = 0, groups=None) -> jax.Array:
  """xla.paged_attention's maths by the Pallas GPU kernel (interpreted off a GPU)."""
  del shared_pages, groups  # the kernel reads every sequence's pages itself
  head_dim, page_size = q_SxNxH.shape[-1], k_pages_KxQxExH.shape[2]
  if not (_power_of_two(head_dim) and _power_of_two(page_size)):
    return xla.paged_attention(q_SxNxH, k_pages_KxQxExH, v_pages_KxQxExH, lengths_S,
                               page_table_SxM)
  # The kernel splits a table into up to MAX_K_SPLITS parts run in parallel, parts that must
  # divide it: padded with its last page (past every length, never read) to a multiple of
  # that, any table gets every split.
  extra = -page_table_SxM.shape[1] % MAX_K_SPLITS
  if extra:
    page_table_SxM = jnp.pad(page_table_SxM, ((0, 0), (0, extra)), mode="edge")
  k_splits, block = kernel_blocks(page_table_SxM.shape[1])
  kernel = functools.partial(
      _kernel, k_splits=k_splits, pages_per_compute_block=block,
      interpret=platform_in_context() != "gpu")
  return on_shards(kernel, q_SxNxH, k_pages_KxQxExH, v_pages_KxQxExH, lengths_S, page_table_SxM)


def _kernel(q, k_pages, v_pages, lengths, page_table, **blocks):
  # The Pallas function takes the table before the lengths.
  return pallas_paged.paged_attention(q, k_pages, v_pages, page_table, lengths, **blocks)
