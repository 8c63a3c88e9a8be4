"""The stop-string automaton against plain string search on random token streams."""
import zlib

import numpy as np
import pytest

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


# Several stop strings: one automaton against the cut it must not change.


def _cut(text, stops):
  """Where a completion is cut afterwards: the earliest start of any stop string."""
  return min((i for i in (text.find(s) for s in stops) if i != -1), default=None)


def _stop_index_by_search(texts, token_ids, stops):
  """The first token after which no continuation can move the cut: a stop string occurs, and
  no later character can complete one that starts before it."""
  text = ""
  for i, v in enumerate(token_ids):
    text += texts[v]
    cut = _cut(text, stops)
    if cut is not None and not any(
        len(text) - start < len(s) and s.startswith(text[start:])
        for start in range(cut) for s in stops):
      return i
  return None


def _first_occurrence_by_search(texts, token_ids, stops):
  text = ""
  for i, v in enumerate(token_ids):
    text += texts[v]
    if _cut(text, stops) is not None:
      return i
  return None


def _random_vocabulary(rng, alphabet, stops, size):
  """Token texts over the stop strings' characters and one other: pieces of the stops, whole
  stops, several stops in one text, empty texts."""
  texts = {"", "x", "xx"}
  while len(texts) < size:
    kind = rng.integers(4)
    if kind == 0:
      texts.add("".join(rng.choice(list(alphabet), size=rng.integers(1, 5))))
    elif kind == 1:
      s = stops[rng.integers(len(stops))]
      start = rng.integers(len(s))
      texts.add(s[start:start + rng.integers(1, len(s) + 1)])
    elif kind == 2:
      texts.add(stops[rng.integers(len(stops))] + "".join(rng.choice(list(alphabet), size=2)))
    else:
      texts.add("".join(stops[i] for i in rng.integers(len(stops), size=2)))
  return sorted(texts)


def _contains_another_past_its_start(stops):
  return any(t != s and t in s[1:] for s in stops for t in stops)


STOP_SETS = [
    ("\nif", "\nif __name__", "[DONE]"),
    ("\ndef ", "\ndef main(", "\nprint(", "\n#", "\nclass"),
    ("ab", "bab", "abab"),        # prefixes, suffixes and overlaps of each other
    ("abcd", "bc"),               # one inside another: "bc" completes first, "abcd" is cut
    ("aab", "ab", "b", "aaab"),
    ("a a", " a ", "aa"),
]


@pytest.mark.parametrize("stops", STOP_SETS, ids=repr)
def test_several_stops_match_the_brute_force_cut_on_random_streams(stops):
  rng = np.random.default_rng(zlib.crc32(repr(stops).encode()))
  alphabet = sorted(set("".join(stops))) + ["x"]
  texts = _random_vocabulary(rng, alphabet, list(stops), 40)
  table, completes = build_stop_table(texts, stops)
  plain_cut = not _contains_another_past_its_start(stops)
  found = 0
  for _ in range(1500):
    ids = rng.integers(0, len(texts), size=rng.integers(1, 14))
    expected = _stop_index_by_search(texts, ids, stops)
    got = _first_stop_with_table(ids, table, completes)
    assert got == expected, [texts[i] for i in ids]
    if plain_cut:  # then the stop comes with the first stop string completed
      assert got == _first_occurrence_by_search(texts, ids, stops)
    if got is not None:
      found += 1
      whole = "".join(texts[i] for i in ids)
      stopped = "".join(texts[i] for i in ids[:got + 1])
      # The early stop keeps the cut text, whatever the stream would have said after it.
      assert whole[:_cut(whole, stops)] == stopped[:_cut(stopped, stops)]
  assert found > 300  # the streams really exercise matches


def test_a_stop_inside_a_longer_one_waits_for_the_longer():
  texts = ["a", "b", "c", "d", "abc", "x"]
  table, completes = build_stop_table(texts, ("abcd", "bc"))
  assert _first_stop_with_table([0, 1, 2, 3], table, completes) == 3   # "abcd": cut at 0
  assert _first_stop_with_table([0, 1, 2, 5], table, completes) == 3   # "abcx": cut at 1
  assert _first_stop_with_table([1, 2], table, completes) == 1         # "bc"
  assert _first_stop_with_table([4, 0], table, completes) == 1         # "abca"


def test_the_first_of_several_stops_in_one_token_stops_it():
  texts = ["\nif x", "\nif __name__", "y", "\ndef f\nif", " __name__"]
  stops = ("\nif", "\nif __name__", "\ndef ")
  table, completes = build_stop_table(texts, stops)
  assert _first_stop_with_table([2, 0], table, completes) == 1
  assert _first_stop_with_table([2, 3], table, completes) == 1
  assert not completes[0, 2] and table[0, 2] == 0  # "y" shares nothing: back to the root


def test_control_tokens_keep_the_state_and_unrelated_tokens_reset_it():
  texts = ["", "\nde", "f ", "zz", "\n"]
  table, completes = build_stop_table(texts, ("\ndef ", "[DONE]"))
  state = table[0, 1]
  assert state != 0 and table[state, 0] == state and not completes[state, 0]
  assert table[state, 3] == 0 and not completes[state, 3]
  assert completes[state, 2]
  assert _first_stop_with_table([1, 0, 0, 2], table, completes) == 3


def test_one_string_is_one_stop_and_bad_stops_are_refused():
  for stops in ("[DONE]", ["[DONE]"], ("[DONE]", "[DONE]")):
    table, completes = build_stop_table(TEXTS, stops)
    assert table.shape == completes.shape == (6, len(TEXTS))
  for bad in ((), ("",), "", ("a", None)):
    with pytest.raises(ValueError, match="stop string"):
      build_stop_table(TEXTS, bad)


def test_random_stop_sets_over_two_letters_match_the_brute_force_cut():
  """Short stops over "ab" nest inside each other every way (pending matches included)."""
  rng = np.random.default_rng(7)
  for _ in range(25):
    stops = tuple("".join(rng.choice(["a", "b"], size=rng.integers(1, 6)))
                  for _ in range(rng.integers(2, 5)))
    texts = _random_vocabulary(rng, ["a", "b", "x"], list(stops), 20)
    table, completes = build_stop_table(texts, stops)
    for _ in range(200):
      ids = rng.integers(0, len(texts), size=rng.integers(1, 10))
      assert _first_stop_with_table(ids, table, completes) == _stop_index_by_search(
          texts, ids, stops), (stops, [texts[i] for i in ids])
