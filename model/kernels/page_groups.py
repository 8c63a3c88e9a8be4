"""What a paged KV cache tells a decode-attention kernel about the pages its rows share.

A problem's samples read the same prompt pages (decode/kv_pages.py). The page table alone says
so only row by row; `PageGroups` says it once: row s's table columns shared_pages ...
shared_pages + pages_S[s] - 1 are table_GxW[group_S[s], :pages_S[s]] (its group's pages; the
table stays complete). A kernel may score each group's pages once for all its rows (the cpu
set, when the groups are few) or ignore it (the reference and the Pallas kernels read every
row's own table).
"""
from __future__ import annotations

from typing import NamedTuple

import jax


class PageGroups(NamedTuple):
  group_S: jax.Array     # each row's group (a problem)
  table_GxW: jax.Array   # each group's pages, as page-table entries (layer offset included)
  pages_S: jax.Array     # how many of its group's pages row s's table holds after the prefix
