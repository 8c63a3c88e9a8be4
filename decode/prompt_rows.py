"""A call's prompts as arrays: the prefix they share, the rest right-padded to a bucketed length.

Lengths are bucketed (and the shared prefix cut to a multiple of 64) so an evaluation's calls
share a few compiled shapes; both are whole pages of the paged cache (decode/kv_pages.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def right_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
  """(tokens [B, length] right-padded, real lengths [B]); prompts longer than length fail.
  Right: a row's token t is its position t, whole pages of the cache hold whole positions."""
  tokens = np.full((len(prompts), length), pad_id, np.int32)
  lengths = np.zeros((len(prompts),), np.int32)
  for row, prompt in enumerate(prompts):
    if len(prompt) > length:
      raise ValueError(f"prompt of {len(prompt)} tokens does not fit in {length}")
    tokens[row, :len(prompt)] = prompt
    lengths[row] = len(prompt)
  return tokens, lengths


def bucket_length(n: int, minimum: int = 64, half_octaves: bool = False) -> int:
  """Prompt lengths round up to a power of two (>= minimum): few distinct shapes to compile.
  With half_octaves, also to 1.5 x a power of two (64, 96, 128, 192, ...): at most a third
  of the bucket is padding instead of half, for twice the shapes."""
  length = minimum
  while length < n:
    if half_octaves and length * 3 // 2 >= n:
      return length * 3 // 2
    length *= 2
  return length


def shared_prefix_length(prompts: Sequence[Sequence[int]], multiple: int = 64) -> int:
  """Tokens every prompt starts with (the few-shot examples of a task's template), rounded
  down to a multiple of `multiple` so calls share a few shapes, and leaving every prompt at
  least one token of its own (its last token's logits start its samples)."""
  if not prompts:
    return 0
  shortest = min(len(p) for p in prompts)
  first = prompts[0]
  length = 0
  while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
    length += 1
  return length // multiple * multiple


def split_shared_prefix(prompts: Sequence[Sequence[int]], multiple: int = 64,
                        at_most: int | None = None
                        ) -> tuple[np.ndarray | None, list[list[int]]]:
  """(the shared prefix as int32 tokens, or None when shorter than `multiple`; each prompt's
  rest): what a sampling call takes (decode/engine.py generate_samples). `at_most`
  caps the prefix (an evaluation's calls then share one prefix length: one compiled shape)."""
  length = shared_prefix_length(prompts, multiple)
  if at_most is not None:
    length = min(length, at_most // multiple * multiple)
  prefix = np.asarray(prompts[0][:length], np.int32) if length else None
  return prefix, [list(p[length:]) for p in prompts]
