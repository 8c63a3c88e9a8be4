"""Detects a stop string (e.g. "[DONE]") in generated text on device, one token at a time.

A token's text can hold part of the stop string, or all of it, or end one token's worth of it
(`[DO` + `NE]`), so matching token ids is not enough. We run a Knuth-Morris-Pratt automaton over
characters and precompute, for every (automaton state, token) pair, the state after the
token's text and whether the stop string was completed inside it. Decoding then needs one
table lookup per row and step: no host round trip, no detokenisation in the loop.

decode/ knows nothing of tokenizers: callers pass the text of every token id.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _kmp_failure(pattern: str) -> list[int]:
  failure = [0] * len(pattern)
  k = 0
  for i in range(1, len(pattern)):
    while k and pattern[i] != pattern[k]:
      k = failure[k - 1]
    if pattern[i] == pattern[k]:
      k += 1
    failure[i] = k
  return failure


def build_stop_table(token_texts: Sequence[str], stop: str) -> tuple[np.ndarray, np.ndarray]:
  """(next_state [S, V] int32, completes [S, V] bool) for automaton states S = len(stop).

  State s means: the last s characters generated equal stop[:s]. `completes[s, v]` is true
  when appending token v's text completes `stop` somewhere inside that text.
  """
  if not stop:
    raise ValueError("stop string must be non-empty")
  failure = _kmp_failure(stop)
  num_states = len(stop)

  def step(state: int, char: str) -> int:
    while state and char != stop[state]:
      state = failure[state - 1]
    return state + 1 if char == stop[state] else 0

  next_state = np.zeros((num_states, len(token_texts)), np.int32)
  completes = np.zeros((num_states, len(token_texts)), np.bool_)
  relevant = set(stop)
  for v, text in enumerate(token_texts):
    if not text:  # control tokens (pad, eos) add no text and leave the state as it is
      next_state[:, v] = np.arange(num_states)
      continue
    if not relevant.intersection(text):  # common case: the text resets the automaton
      continue
    for s in range(num_states):
      state, done = s, False
      for char in text:
        state = step(state, char)
        if state == num_states:
          done = True
          state = failure[state - 1]
      next_state[s, v] = state
      completes[s, v] = done
  return next_state, completes
