"""Detects stop strings (e.g. "[DONE]", "\\ndef ") in generated text on device, one token at a time.

A token's text can hold part of a stop string, or all of it, or end one token's worth of it
(`[DO` + `NE]`), or hold several, so matching token ids is not enough. We run one
Aho-Corasick automaton over characters (a trie of the stop strings with failure links; state
0 is the root) and precompute, for every (automaton state, token) pair, the state after the
token's text and whether the sample stops inside it. Decoding then needs one table lookup per
row and step: no host round trip, no detokenisation in the loop.

When a sample stops: a completion is cut afterwards where the earliest-starting stop string
begins (data/humaneval.py cut_at_stop), so the sample stops at the first token after which
no continuation can move that cut, and the early stop never changes the cut text. That is
the token that completes the first stop string, unless the text there is also a longer
stop string's unfinished start that began earlier ("bc" inside "abcd"): then the automaton
remembers the completed match (extra "pending" states, none for stop strings that contain no
other one past their first character) until that longer match completes or fails.

decode/ knows nothing of tokenizers: callers pass the text of every token id.
"""
from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np


class _Trie:
  """The stop strings' Aho-Corasick automaton over character classes (the stop strings'
  characters, then one class for every other character)."""

  def __init__(self, stops: Sequence[str]):
    self.classes = {c: i for i, c in enumerate(sorted(set("".join(stops))))}
    other = len(self.classes)
    children: list[dict[int, int]] = [{}]
    self.depth = [0]
    is_stop = [False]
    for stop in stops:
      node = 0
      for char in stop:
        c = self.classes[char]
        if c not in children[node]:
          children[node][c] = len(children)
          children.append({})
          self.depth.append(self.depth[node] + 1)
          is_stop.append(False)
        node = children[node][c]
      is_stop[node] = True
    # goto[node, class]: the trie node of the longest suffix of node's text + the character
    # that starts a stop string (the automaton's transition, failure links folded in).
    self.goto = np.zeros((len(children), other + 1), np.int32)
    # longest_stop[node]: the length of the longest stop string that ends node's text.
    self.longest_stop = [0] * len(children)
    failure = [0] * len(children)
    queue = collections.deque([0])
    while queue:  # breadth first: a node's failure target is shallower, so done already
      node = queue.popleft()
      self.longest_stop[node] = (self.depth[node] if is_stop[node]
                                 else self.longest_stop[failure[node]])
      for c in range(other):
        child = children[node].get(c)
        if child is None:
          self.goto[node, c] = self.goto[failure[node], c] if node else 0
        else:
          failure[child] = self.goto[failure[node], c] if node else 0
          self.goto[node, c] = child
          queue.append(child)


def _char_steps(trie: _Trie) -> tuple[np.ndarray, int]:
  """(step [A + 1, classes] int32, A): the sample's state after one more character.

  A state is a trie node, or a pending state: a trie node plus k, the characters since the
  start of the earliest stop string completed so far, while a longer match that started
  before it may still complete (k < the node's depth). Only the states a sample can rest in
  are kept (a node that ends a stop string is never one), the nodes first, in trie order, so
  state 0 is the root. Row A is the absorbing stop: the cut is fixed."""
  targets: dict[tuple[int, int], list[tuple[int, int] | None]] = {}
  queue = collections.deque([(0, 0)])
  while queue:
    node, k = queue.popleft()
    if (node, k) in targets:
      continue
    row: list[tuple[int, int] | None] = []
    for next_node in map(int, trie.goto[node]):
      # The earliest start of a completed stop string, as characters back from here.
      since = max(k + 1 if k else 0, trie.longest_stop[next_node])
      if since and trie.depth[next_node] <= since:
        row.append(None)  # no unfinished match starts earlier: the cut is fixed
      else:
        row.append((next_node, since))
        queue.append((next_node, since))
    targets[(node, k)] = row
  order = sorted(targets, key=lambda state: (state[1] > 0, state))
  number = {state: i for i, state in enumerate(order)}
  stop = len(order)
  step = np.full((stop + 1, trie.goto.shape[1]), stop, np.int32)
  for state in order:
    step[number[state]] = [stop if t is None else number[t] for t in targets[state]]
  return step, stop


def _normalised(stops: str | Sequence[str]) -> tuple[str, ...]:
  stops = (stops,) if isinstance(stops, str) else tuple(stops)
  if not stops:
    raise ValueError("no stop strings given")
  for stop in stops:
    if not isinstance(stop, str) or not stop:
      raise ValueError(f"stop strings must be non-empty strings, got {stop!r}")
  return tuple(dict.fromkeys(stops))


def build_stop_table(token_texts: Sequence[str], stops: str | Sequence[str]
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(next_state [A, V] int32, completes [A, V] bool) for the automaton's A states.

  `stops`: one stop string or several. `completes[a, v]`: appending token v's text in state
  a fixes where the completion is cut (module docstring), so the sample stops with v;
  `next_state[a, v]`: the state after v otherwise (0 where it completes).
  """
  trie = _Trie(_normalised(stops))
  step, stop = _char_steps(trie)
  num_states, vocab = stop, len(token_texts)
  other = len(trie.classes)
  # Empty texts (control tokens: pad, eos) leave the state as it is.
  final = np.tile(np.arange(num_states, dtype=np.int32)[:, None], (1, vocab))
  unrelated: list[int] = []
  spelled: list[tuple[int, list[int]]] = []
  for v, text in enumerate(token_texts):
    if not text:
      continue
    codes = [trie.classes.get(char, other) for char in text]
    if min(codes) == other:
      unrelated.append(v)
    else:
      spelled.append((v, codes))
  # The common case, no character of any stop string, acts as one other character: back to
  # the root, or the stop where a completed match was pending.
  final[:, unrelated] = step[:num_states, other, None]
  # The other tokens, all states at once, a character position at a time; longest first, so
  # the tokens still spelling at position j are a prefix of the list.
  spelled.sort(key=lambda entry: -len(entry[1]))
  if spelled:
    ids = np.array([v for v, _ in spelled])
    lengths = np.array([len(codes) for _, codes in spelled])
    chars = np.zeros((len(spelled), lengths[0]), np.int32)
    for row, (_, codes) in enumerate(spelled):
      chars[row, :len(codes)] = codes
    states = final[:, ids]
    for j in range(lengths[0]):
      n = int(np.count_nonzero(lengths > j))
      states[:, :n] = step[states[:, :n], chars[None, :n, j]]
    final[:, ids] = states
  completes = final == stop
  return np.where(completes, 0, final).astype(np.int32), completes
