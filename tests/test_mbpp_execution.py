"""Execution-prediction examples parsed from every MBPP test assert, and how a
prediction is scored."""
import collections
import json

import pytest

from data import execution_examples as ee


@pytest.mark.parametrize("test,call,expected", [
    ('assert remove_Occ("hello","l") == "heo"', 'remove_Occ("hello","l")', '"heo"'),
    ("assert f( [1, 2],3)==[85, 75] ", "f( [1, 2],3)", "[85, 75]"),
    ("assert f(1) == 2, 'message'", "f(1)", "2"),
    # Tasks 313/362/436: Python reads `assert (f(x) == 1), 2`.
    ("assert pos_nos([-1,-2,1,2]) == 1,2", "pos_nos([-1,-2,1,2])", "1"),
    ("assert set(f(x)) == set((4, 5))", "set(f(x))", "set((4, 5))"),
])
def test_parse_assert(test, call, expected):
  assert ee.parse_assert(test) == (call, expected)


@pytest.mark.parametrize("test,reason", [
    ("assert math.isclose(f(1), 2.0)", "not a comparison"),
    ("assert f(1)", "not a comparison"),
    ("assert not f(1)", "not a comparison"),
    ("assert f(1) != 2", "not a single =="),
    ("assert f(1) == 2 == g(3)", "not a single =="),
    ("assert x == f(1)", "not a call"),
    ("assert f(1 == 2", "not valid Python"),
    ("print(f(1))", "not a single assert"),
])
def test_unparseable_asserts_say_why(test, reason):
  with pytest.raises(ValueError, match=reason):
    ee.parse_assert(test)


def _problems(shared_data_dir, name):
  path = shared_data_dir / "mbpp" / name
  if name.endswith(".jsonl"):
    return [json.loads(line) for line in path.read_text().splitlines()]
  return json.loads(path.read_text())


def test_every_full_mbpp_test_becomes_an_example(shared_data_dir):
  cases, unparsed = ee.cases_from_problems(_problems(shared_data_dir, "mbpp.jsonl"))
  assert (len(cases), len(unparsed)) == (2922, 0)
  by_id = {(c.task_id, c.test_index): c for c in cases}
  assert by_id[11, 1].assert_source == 'assert remove_Occ("abcda","a") == "bcd"'
  assert [by_id[t, 0].expected for t in (313, 362, 436)] == ["1", "2", "-1"]


def test_sanitized_mbpp_parse_failures_are_counted(shared_data_dir):
  cases, unparsed = ee.cases_from_problems(
      _problems(shared_data_dir, "sanitized-mbpp.json"))
  assert (len(cases), len(unparsed)) == (1263, 61)
  reasons = {u.reason for u in unparsed}
  assert any("not a comparison" in r for r in reasons)  # math.isclose(...), assert f(x)


def _scores(call: str, prediction: str, namespace: dict | None = None) -> bool:
  test = ee.scoring_assert(call, prediction)
  try:
    exec(test, dict(namespace or {}))  # noqa: S102 -- our own comparison and a literal.
  except AssertionError:
    return False
  return True


def test_scoring_assert_accepts_any_spelling():
  call = "sorted([2, 1])"
  for prediction, right in (("[1, 2]", True), ("[1,2]", True), (" [1,2] ", True),
                            ("[2, 1]", False), ("(1, 2)", False), ("[1, 2]  # sorted", True)):
    assert _scores(call, prediction) == right, prediction


@pytest.mark.parametrize("prediction,right", [
    ("1, 2", True), ("(1, 2)", True), ("1, 2,", True), ("1, 2, 3", False), ("1,", False),
    ("1", False),
])
def test_scoring_assert_reads_a_bare_tuple_as_literal_eval_does(prediction, right):
  # A model that writes `1, 2` for a returned (1, 2) means the tuple, as literal_eval reads it.
  if right:
    assert ee.parse_prediction(prediction) == (1, 2)
  assert _scores("tuple([1, 2])", prediction) == right, prediction


@pytest.mark.parametrize("returned,predicted,same", [
    (True, True, True), (True, 1, False), (1, True, False), (0, False, False),
    (False, 0.0, False), (3, 3.0, True), (3.0, 3, True), (2.5, 2.5, True), (2.5, 2.4, False),
    (1j, 1j, True), ("a", "a", True), ("1", 1, False), (b"a", b"a", True), (b"a", "a", False),
    (None, None, True), (None, 0, False), ([], [], True), ([1], (1,), False),
    ((1,), [1], False), ([1, [True]], [1, [1]], False), ([1, [True]], [1.0, [True]], True),
    ({1: "a"}, {1: "a"}, True), ({True: "a"}, {1: "a"}, False), ({1: True}, {1: 1}, False),
    ({1: 2}, {1: 2, 3: 4}, False), ({1, 2}, {2, 1}, True), ({True}, {1}, False),
    (frozenset({1}), {1}, True), ({1}, [1], False), (set(), set(), True), ([1, 2], [1], False),
])
def test_same_value_respects_types(returned, predicted, same):
  assert ee.same_value(returned, predicted) is same


def test_same_value_accepts_subclasses_of_the_predicted_kind():
  counts = collections.Counter("aab")
  assert ee.same_value(counts, {"a": 2, "b": 1})
  assert ee.same_value(collections.defaultdict(list, {"x": [1]}), {"x": [1]})
  assert ee.same_value(collections.namedtuple("P", "x y")(1, 2), (1, 2))
  assert not ee.same_value(collections.deque([1]), [1])


@pytest.mark.parametrize("prediction", [
    'sort_matrix([[1, 2, 3], [2, 4, 5]])',    # The call, echoed from the prompt.
    "__import__('unittest.mock').mock.ANY",   # Equal to everything.
    "x", "sys.maxsize", "float('nan')", "[1, f(2)]", "1 +", "", "   ", "[DONE]",
])
def test_predictions_that_are_not_values_are_refused(prediction):
  with pytest.raises(ee.InvalidPrediction):
    ee.parse_prediction(prediction)
  with pytest.raises(ee.InvalidPrediction):
    ee.scoring_assert("f(1)", prediction)


def test_predictions_that_are_values_parse():
  assert ee.parse_prediction(" -3 ") == -3
  assert ee.parse_prediction("(1, 'a', [None, 2.5e3], {b'x': set()})") == (
      1, "a", [None, 2500.0], {b"x": set()})


def test_scoring_assert_runs_the_call_once_and_says_what_it_returned():
  namespace = {"calls": [], "f": lambda x: namespace["calls"].append(x) or x * 2}
  test = ee.scoring_assert("f(2)", "3")
  with pytest.raises(AssertionError, match="returned 4"):
    exec(test, namespace)  # noqa: S102
  assert namespace["calls"] == [2]
  # A program's own name for a comparison is not disturbed before the call runs.
  assert _scores("same_value(1)", "1", {"same_value": lambda x: x})


def test_non_literal_expected_values_are_the_documented_ones(shared_data_dir):
  for config, name in (("full", "mbpp.jsonl"), ("sanitized", "sanitized-mbpp.json")):
    cases, _ = ee.cases_from_problems(_problems(shared_data_dir, name))
    non_literal = collections.Counter()
    for case in cases:
      try:
        ee.parse_prediction(case.expected)
      except ee.InvalidPrediction:
        non_literal[case.task_id] += 1
    assert dict(non_literal) == ee.NON_LITERAL_EXPECTED[config], config
  cases, _ = ee.cases_from_problems(_problems(shared_data_dir, "mbpp.jsonl"))
  assert len(cases) - sum(ee.NON_LITERAL_EXPECTED["full"].values()) == 2919
