"""The stop-string automaton against plain string search on random token streams."""
import numpy as np

from decode.stop_matcher import build_stop_table

TEXTS = ["[", "DO", "NE", "]", "[DONE]", "x", "[D", "ONE]\n", "[[", "DONE", "E]", "]x[", "", "N"]


def _first_stop_with_table(token_ids, table, completes):
  state = 0
  for i, v in enumerate(token_ids):
    if completes[state, v]:
      return i
    state = table[state, v]
  return None


def _first_stop_by_search(token_ids, stop="[DONE]"):
  text = ""
  for i, v in enumerate(token_ids):
    text += TEXTS[v]
    if stop in text:
      return i
  return None


def test_matches_string_search_on_random_streams():
  table, completes = build_stop_table(TEXTS, "[DONE]")
  rng = np.random.default_rng(0)
  found = 0
  for _ in range(3000):
    ids = rng.integers(0, len(TEXTS), size=rng.integers(1, 12))
    expected = _first_stop_by_search(ids)
    assert _first_stop_with_table(ids, table, completes) == expected, [TEXTS[i] for i in ids]
    found += expected is not None
  assert found > 300  # the streams really exercise matches


def test_self_overlapping_stop_string():
  texts = ["a", "b", "aab", "ab"]
  table, completes = build_stop_table(texts, "aab")
  assert _first_stop_with_table([0, 0, 0, 1], table, completes) == 3   # "aaab"
  assert _first_stop_with_table([0, 3], table, completes) == 1         # "a" + "ab"
  assert _first_stop_with_table([3, 3], table, completes) is None      # "abab"
