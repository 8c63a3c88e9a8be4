"""The paged KV cache of one sampling call: pages in one pool, a page table per slot.

The pool holds Q pages of E positions per layer, for every layer along one axis (layer l's
page q is page l * Q + q): {"k", "v"}: [K, layers * Q, E, H], the layout of JAX's Pallas
paged-attention kernels. A kernel reads layer l through page tables offset by l * Q, so the
decode loop updates one pool in place and never copies a layer's slice out of it.

A call's Q pages (per data shard, decode/engine.py), in order:
  * the shared prefix: C = Cp * E tokens every prompt of the call starts with (a few-shot
    template's examples), prefilled once;
  * the prompts: problem p's L = Lp * E positions (what follows the prefix, right-padded)
    in pages Cp + p * Lp ... Cp + (p + 1) * Lp - 1, prefilled once for its n samples;
  * the slots: Ms pages of slot s's own, for the tokens its sample generates.
A slot that holds a sample of problem p reads the page table [the prefix's pages ; p's
whole prompt pages ; its own pages]. p's last, partly filled prompt page is copied into the
slot's first own page when the slot takes the sample (`copy_prompt_tails`): the sample's
tokens continue that page, so its positions 0 ... C + len + t are contiguous in its table and
a kernel needs only the table and a length. A sample's own pages are the slot's: the slot's
next sample reuses them when it stops.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from model.config import ModelConfig
from model.kernels.page_groups import PageGroups
from model.sharding import shard_activation

PAGE = 32  # positions per page (E): a divisor of every bucketed prompt length and prefix

Pool = dict[str, jax.Array]  # {"k", "v"}: [K, layers * Q, E, H]


def slot_pages(max_new_tokens: int, page: int = PAGE) -> int:
  """Pages a slot owns (Ms): a sample starts inside its prompt's last page, up to E - 1
  positions of it, then max_new_tokens of its own."""
  return -(-(page - 1 + max_new_tokens) // page)


@dataclasses.dataclass(frozen=True)
class PageLayout:
  """Where a call's pages are (module docstring); static, part of the compiled shape."""
  prefix_pages: int    # Cp
  prompt_pages: int    # Lp, per problem
  problems: int        # P
  slots: int           # S
  slot_pages: int      # Ms, per slot
  page: int = PAGE     # E

  @classmethod
  def of(cls, *, prefix_len: int, prompt_len: int, problems: int, slots: int,
         max_new_tokens: int, page: int | None = None) -> PageLayout:
    page = page or PAGE
    if prefix_len % page or prompt_len % page:
      raise ValueError(f"prefix {prefix_len} and prompt length {prompt_len} must be whole "
                       f"pages of {page}")
    return cls(prefix_len // page, prompt_len // page, problems, slots,
               slot_pages(max_new_tokens, page), page)

  @property
  def pages_per_layer(self) -> int:  # Q
    return self.prefix_pages + self.problems * self.prompt_pages + self.slots * self.slot_pages

  @property
  def table_width(self) -> int:  # M
    return self.prefix_pages + self.prompt_pages + self.slot_pages

  @property
  def first_slot_page(self) -> int:
    return self.prefix_pages + self.problems * self.prompt_pages


def init_pool(cfg: ModelConfig, layout: PageLayout) -> Pool:
  shape = (cfg.num_kv_heads, cfg.num_layers * layout.pages_per_layer, layout.page, cfg.head_dim)
  zeros = lambda: shard_activation(jnp.zeros(shape, jnp.dtype(cfg.dtype)),
                                   ("act_kv_heads", None, None, None))
  return {"k": zeros(), "v": zeros()}


def page_tables(layout: PageLayout, problem_S: jax.Array, prompt_len_S: jax.Array) -> jax.Array:
  """[S, M] page tables of slots holding samples of problem_S (prompts of prompt_len_S tokens
  after the prefix): prefix pages, the prompt's whole pages, the slot's own pages (entries
  past the last own page repeat it: valid indices no length reaches)."""
  m_M = jnp.arange(layout.table_width)
  whole_S = prompt_len_S // layout.page
  own_SxM = jnp.minimum(m_M[None] - layout.prefix_pages - whole_S[:, None], layout.slot_pages - 1)
  own_page_SxM = (layout.first_slot_page + jnp.arange(layout.slots)[:, None] * layout.slot_pages
                  + own_SxM)
  prompt_page_SxM = (layout.prefix_pages + problem_S[:, None] * layout.prompt_pages
                     + m_M[None] - layout.prefix_pages)
  return jnp.where(m_M[None] < layout.prefix_pages, m_M[None],
                   jnp.where(m_M[None] < layout.prefix_pages + whole_S[:, None],
                             prompt_page_SxM, own_page_SxM)).astype(jnp.int32)


def prompt_groups(layout: PageLayout, problem_S: jax.Array, prompt_len_S: jax.Array
                  ) -> PageGroups:
  """What `page_tables` share, for a kernel (model/kernels/page_groups.py): a slot's group is
  its problem, whose whole prompt pages its table holds after the prefix."""
  table_PxL = (layout.prefix_pages + jnp.arange(layout.problems)[:, None] * layout.prompt_pages
               + jnp.arange(layout.prompt_pages)[None])
  return PageGroups(problem_S, table_PxL.astype(jnp.int32), prompt_len_S // layout.page)


def write_tokens(pool: Pool, layer_offset: jax.Array, table_SxM: jax.Array,
                 position_S: jax.Array, k_SxKxH: jax.Array, v_SxKxH: jax.Array) -> Pool:
  """Each slot's new key/value at its position (layer_offset = layer * Q), in place."""
  page = pool["k"].shape[2]
  page_S = layer_offset + jnp.take_along_axis(table_SxM, (position_S // page)[:, None], 1)[:, 0]
  # One index per (kv head, slot), each writing a row of H: the update windows are the pool's
  # last axis alone, so XLA:TPU keeps the pool in the layout the Pallas kernel reads. Indexed
  # by (page, position) with windows over heads and H, it laid the pool out pages-major and
  # copied all of it into the kernel's layout twice a layer and step (tests/test_plan_targets.py
  # counts such copies).
  head_Kx1 = jnp.arange(pool["k"].shape[0])[:, None]
  write = lambda x, new_SxKxH: x.at[head_Kx1, page_S[None], (position_S % page)[None]].set(
      jnp.swapaxes(new_SxKxH, 0, 1).astype(x.dtype))
  return {"k": write(pool["k"], k_SxKxH), "v": write(pool["v"], v_SxKxH)}


def write_pages(pool: Pool, first_page: jax.Array, k_BxKxLxH: jax.Array,
                v_BxKxLxH: jax.Array) -> Pool:
  """B rows of L positions (whole pages) into consecutive pages from first_page: row b's
  position t at page first_page + b * L / E + t // E (a prefill's keys and values)."""
  page = pool["k"].shape[2]

  def write(x, new_BxKxLxH):
    batch, kv_heads, length, head_dim = new_BxKxLxH.shape
    pages_KxBLxExH = jnp.swapaxes(new_BxKxLxH, 0, 1).reshape(
        kv_heads, batch * length // page, page, head_dim)
    return jax.lax.dynamic_update_slice_in_dim(x, pages_KxBLxExH.astype(x.dtype), first_page, 1)

  return {"k": write(pool["k"], k_BxKxLxH), "v": write(pool["v"], v_BxKxLxH)}


def read_pages(pool: Pool, first_page: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
  """(keys, values) [K, count * E, H] of `count` consecutive pages (the shared prefix)."""
  def read(x):
    pages = jax.lax.dynamic_slice_in_dim(x, first_page, count, 1)
    return pages.reshape(x.shape[0], count * x.shape[2], x.shape[3])
  return read(pool["k"]), read(pool["v"])


def copy_prompt_tails(pool: Pool, layout: PageLayout, num_layers: int, taken_S: jax.Array,
                      problem_S: jax.Array, prompt_len_S: jax.Array, most: int) -> Pool:
  """For the first `most` slots that took a sample (taken_S), their problem's last partly
  filled prompt page into the slot's first own page, in every layer (prompts of whole pages
  have none). A fixed number of copies a step: the pool is updated in place, never copied."""
  slot_R, = jnp.nonzero(taken_S & (prompt_len_S % layout.page > 0), size=most,
                        fill_value=layout.slots)
  present_R = slot_R < layout.slots
  slot_R = jnp.minimum(slot_R, layout.slots - 1)
  tail_R = (layout.prefix_pages + problem_S[slot_R] * layout.prompt_pages
            + prompt_len_S[slot_R] // layout.page)
  first_own_R = layout.first_slot_page + slot_R * layout.slot_pages
  offset_Yx1 = jnp.arange(num_layers)[:, None] * layout.pages_per_layer
  total = num_layers * layout.pages_per_layer
  source = (offset_Yx1 + tail_R[None]).reshape(-1)
  target = (offset_Yx1 + jnp.where(present_R, first_own_R, total)[None]).reshape(-1)
  copy = lambda x: x.at[:, target].set(x[:, source], mode="drop")
  return {"k": copy(pool["k"]), "v": copy(pool["v"])}
