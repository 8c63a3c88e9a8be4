"""Execution-prediction examples parsed from every MBPP test assert."""
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


def test_scoring_assert_accepts_any_spelling():
  call = "sorted([2, 1])"
  for prediction, right in (("[1, 2]", True), ("[1,2]", True), (" [1,2] ", True),
                            ("[2, 1]", False)):
    test = ee.scoring_assert(call, prediction)
    try:
      exec(test, {})  # noqa: S102 -- a constant, trusted expression.
      passed = True
    except AssertionError:
      passed = False
    assert passed == right, prediction
