"""The generated-token cache of the slot sampler as a pool of pages (PagedAttention-style).

Each slot's sample keeps the keys/values of the tokens it generates. Held as one dense
[slots, max_new_tokens] row per slot, every decode step read every row to its end: at the
paper's protocol (256 new tokens, samples of median 57 tokens) most of what the own attention
read was empty, and on a CPU that cache (17 MB a device for the tiny model at 32 slots) did
not fit the last-level cache beside the weights and prompts (random weights, every sample 256
tokens: a step cost 8.9 ms at 256 new tokens and 7.1 ms at 128).

So the keys/values live in pages of PAGE positions ({"k": [pages, K, H, PAGE], "v": [pages, K,
PAGE, H]} per layer), enough pages for every slot to reach max_new_tokens, so a slot never
waits for one. A slot takes a page when its sample enters a new block of PAGE positions, the
lowest-numbered free page first, and gives its pages back when the sample stops, so the pages
in use stay near the start of the pool. The pool is held in two arrays: a hot part (the first
HOT_FRACTION of the pages), which every step reads, and the cold rest, read (`lax.cond`) only
in a step that has a page there in use. Two arrays, not slices of one: XLA:CPU copied a
sliced pool in every step, which cost as much as it saved.

Attention over the pages: every page is scored against its owner slot's queries (one batched
matmul over pages), and the pages' partial softmax statistics are summed per slot by one-hot
matmuls (`attend_pages`); the caller merges them with the prompt parts under one softmax.
On a mesh, the slots are split over the "batch" axes (data, fsdp): the pool and the page table
are then held per group of slots ([groups, ...], one group per batch shard, sharding.py
batch_groups), each group's slots taking only its own pages, so every page operation is local
to a shard. (The per-shard loop of a purely data-parallel mesh has one group: its own pool.)
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from model.sharding import batch_groups

PAGE = 32  # positions per page
# The share of the pool in its hot part, which every step reads; the cold rest is read only in
# a step that has a page there in use. Replaying the tiny model's MBPP sample lengths at 32
# slots (256 pages): a hot part of 144 pages held every page in use in 95.6% of the steps, and
# a step read 58% of the pool on average (128: 77% and 62%; 160: 98.8% and 63%).
HOT_FRACTION = 9 / 16


class Pages(NamedTuple):
  """Who holds which page, per group of slots (slot s is slot s % S' of group s // S', S' =
  slots / groups). A free page has owner == S'; a slot with no page (idle) has current ==
  pages per group, so its writes are dropped."""
  owner_GxP: jax.Array    # the group's slot whose sample the page belongs to
  block_GxP: jax.Array    # which PAGE positions of that sample it holds (block * PAGE ...)
  current_GxS: jax.Array  # the page of each slot's newest block


def pages_per_slot(max_new_tokens: int) -> int:
  return -(-max_new_tokens // PAGE)


def hot_pages(pool_pages: int) -> int:
  """Pages in the hot part of a group's pool of `pool_pages` (the rest is its cold part)."""
  return max(1, min(pool_pages, math.ceil(pool_pages * HOT_FRACTION)))


def pool_shape(num_slots: int, max_new_tokens: int) -> tuple[int, int]:
  """(groups, pages per group): every slot can hold a max_new_tokens sample at once."""
  groups = batch_groups(num_slots)
  return groups, num_slots // groups * pages_per_slot(max_new_tokens)


def init_pages(num_slots: int, max_new_tokens: int) -> Pages:
  groups, pool = pool_shape(num_slots, max_new_tokens)
  per_group = num_slots // groups
  return Pages(owner_GxP=jnp.full((groups, pool), per_group, jnp.int32),
               block_GxP=jnp.zeros((groups, pool), jnp.int32),
               current_GxS=jnp.full((groups, per_group), pool, jnp.int32))


def _by_group(pages: Pages, *xs_S: jax.Array) -> tuple[jax.Array, ...]:
  groups = pages.current_GxS.shape[0]
  return tuple(x.reshape(groups, -1, *x.shape[1:]) for x in xs_S)


def _take(owner_P, block_P, current_S, active_S, position_S):
  per_group, pool = current_S.shape[0], owner_P.shape[0]
  needs_S = active_S & (position_S % PAGE == 0)
  free_count_P = jnp.cumsum(owner_P == per_group)
  rank_S = jnp.cumsum(needs_S) - 1
  page_S = jnp.searchsorted(free_count_P, rank_S + 1).astype(jnp.int32)
  target_S = jnp.where(needs_S, page_S, pool)  # out of range: dropped
  return (owner_P.at[target_S].set(jnp.arange(per_group, dtype=jnp.int32), mode="drop"),
          block_P.at[target_S].set(position_S // PAGE, mode="drop"),
          jnp.where(needs_S, page_S, current_S))


def take_pages(pages: Pages, active_S: jax.Array, position_S: jax.Array) -> Pages:
  """Every active slot whose next position opens a block takes its group's lowest free page
  (the k-th such slot of a group the k-th free page)."""
  return Pages(*jax.vmap(_take)(*pages, *_by_group(pages, active_S, position_S)))


def release_pages(pages: Pages, done_S: jax.Array) -> Pages:
  """The pages of the slots whose samples stopped become free."""
  per_group, pool = pages.current_GxS.shape[1], pages.owner_GxP.shape[1]
  done_GxS, = _by_group(pages, done_S)
  done_GxP = jnp.take_along_axis(jnp.pad(done_GxS, ((0, 0), (0, 1))), pages.owner_GxP, axis=1)
  return Pages(owner_GxP=jnp.where(done_GxP, per_group, pages.owner_GxP),
               block_GxP=pages.block_GxP,
               current_GxS=jnp.where(done_GxS, pool, pages.current_GxS))


def cold_needed(pages: Pages) -> jax.Array:
  """Whether any group has a page past its hot part in use."""
  per_group, pool = pages.current_GxS.shape[1], pages.owner_GxP.shape[1]
  return jnp.any(pages.owner_GxP[:, hot_pages(pool):] < per_group)


def store_token(pool_l: dict[str, dict[str, jax.Array]], pages: Pages, position_S: jax.Array,
                k_SxKxH: jax.Array, v_SxKxH: jax.Array) -> dict[str, dict[str, jax.Array]]:
  """Writes each slot's new token at its position (idle slots write nothing), in place.
  `pool_l`: one layer's {"hot", "cold"} parts, {"k": [groups, pages, K, H, PAGE], "v":
  [groups, pages, K, PAGE, H]}."""
  hot = pool_l["hot"]["k"].shape[1]
  end = hot + pool_l["cold"]["k"].shape[1]

  def write(part, index_S, offset_S, k_SxKxH, v_SxKxH):
    k = part["k"].at[index_S, :, :, offset_S].set(k_SxKxH.astype(part["k"].dtype), mode="drop")
    v = part["v"].at[index_S, :, offset_S, :].set(v_SxKxH.astype(part["v"].dtype), mode="drop")
    return {"k": k, "v": v}

  def one_group(pool_l, page_S, offset_S, k_SxKxH, v_SxKxH):
    # Out-of-range indices are dropped: a hot page's write skips the cold part and vice versa.
    return {"hot": write(pool_l["hot"], jnp.where(page_S < hot, page_S, end), offset_S,
                         k_SxKxH, v_SxKxH),
            "cold": write(pool_l["cold"], jnp.where(page_S >= hot, page_S - hot, end),
                          offset_S, k_SxKxH, v_SxKxH)}

  return jax.vmap(one_group)(pool_l, pages.current_GxS,
                             *_by_group(pages, position_S % PAGE, k_SxKxH, v_SxKxH))


def attend_pages(q_SxKxGxH: jax.Array, pool_l: dict[str, dict[str, jax.Array]], pages: Pages,
                 length_S: jax.Array, cold: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Each slot's attention partials over its own pages: (max [S, K, G], sum of exp(score -
  max) [S, K, G], those weights times the values [S, K, G, H]); the first length_S[s]
  positions of slot s's sample are its keys. The cold parts are read only when `cold`
  (cold_needed). A slot with no keys gets (lowest float, 0, 0)."""
  num_slots = q_SxKxGxH.shape[0]
  per_group = pages.current_GxS.shape[1]
  hot = pool_l["hot"]["k"].shape[1]
  low = jnp.finfo(jnp.float32).min
  f32 = jnp.float32

  def attend(q_SxKxGxH, part, owner_B, block_B, length_S):
    slot_B = jnp.minimum(owner_B, per_group - 1)
    key_end_B = jnp.where(owner_B < per_group, length_S[slot_B], 0)
    valid_BxT = block_B[:, None] * PAGE + jnp.arange(PAGE)[None, :] < key_end_B[:, None]
    scores = jnp.einsum("bkgh,bkht->bkgt", q_SxKxGxH[slot_B], part["k"].astype(
        q_SxKxGxH.dtype), preferred_element_type=f32)
    scores = jnp.where(valid_BxT[:, None, None], scores, low)
    owns_SxB = owner_B[None, :] == jnp.arange(per_group)[:, None]
    max_SxKxG = jnp.max(jnp.where(owns_SxB[:, :, None, None], jnp.max(scores, -1)[None], low),
                        axis=1)
    weights = jnp.where(valid_BxT[:, None, None],
                        jnp.exp(scores - max_SxKxG[slot_B][..., None]), 0)
    owns = owns_SxB.astype(f32)
    sum_SxKxG = jnp.einsum("sb,bkg->skg", owns, jnp.sum(weights, -1))
    out_BxKxGxH = jnp.einsum("bkgt,bkth->bkgh", weights.astype(part["v"].dtype), part["v"],
                             preferred_element_type=f32)
    return max_SxKxG, sum_SxKxG, jnp.einsum("sb,bkgh->skgh", owns, out_BxKxGxH)

  def attend_part(name, owner_GxB, block_GxB, q_SxKxGxH, length_S):
    q_GxSxKxGxH, length_GxS = _by_group(pages, q_SxKxGxH, length_S)
    parts = jax.vmap(attend)(q_GxSxKxGxH, pool_l[name], owner_GxB, block_GxB, length_GxS)
    return tuple(x.reshape(num_slots, *x.shape[2:]) for x in parts)

  hot_max, hot_sum, hot_out = attend_part("hot", pages.owner_GxP[:, :hot],
                                          pages.block_GxP[:, :hot], q_SxKxGxH, length_S)
  if pool_l["cold"]["k"].shape[1] == 0:
    return hot_max, hot_sum, hot_out
  # Pages are taken lowest first, so the cold parts are rarely in use: read them only then
  # (the test is global, outside the vmap over groups, where a cond would run both sides).
  nothing = (jnp.full_like(hot_max, low), jnp.zeros_like(hot_sum), jnp.zeros_like(hot_out))
  cold_max, cold_sum, cold_out = jax.lax.cond(
      cold, lambda *args: attend_part("cold", *args), lambda *_: nothing,
      pages.owner_GxP[:, hot:], pages.block_GxP[:, hot:], q_SxKxGxH, length_S)
  max_SxKxG = jnp.maximum(hot_max, cold_max)
  hot_scale, cold_scale = jnp.exp(hot_max - max_SxKxG), jnp.exp(cold_max - max_SxKxG)
  return (max_SxKxG, hot_sum * hot_scale + cold_sum * cold_scale,
          hot_out * hot_scale[..., None] + cold_out * cold_scale[..., None])
