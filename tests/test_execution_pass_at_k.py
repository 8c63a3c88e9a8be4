"""pass@k and aggregation against hand-computed values and Chen et al.'s numpy formula."""
import numpy as np
import pytest

from execution import records
from execution.records import Result
from execution.pass_at_k import pass_at_k, problem_of, score


@pytest.mark.parametrize("n, c, k, expected", [
    (5, 2, 1, 2 / 5),                      # pass@1 is the pass rate.
    (5, 2, 2, 1 - 3 / 10),                 # 1 - C(3,2)/C(5,2)
    (5, 2, 3, 1 - 1 / 10),                 # 1 - C(3,3)/C(5,3)
    (5, 2, 4, 1.0),                        # Fewer than k failures: some draw must pass.
    (4, 1, 2, 1 - 3 / 6),                  # 1 - C(3,2)/C(4,2)
    (10, 0, 3, 0.0),
    (10, 10, 7, 1.0),
    (200, 3, 100, 1 - (100 * 99 * 98) / (200 * 199 * 198)),  # 1 - C(197,100)/C(200,100)
    (80, 1, 80, 1.0),
    (80, 1, 1, 1 / 80),
])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
  assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_pass_at_k_matches_chen_et_al_numpy_formula():
  def reference(n, c, k):  # The estimator as written in the Codex paper.
    if n - c < k:
      return 1.0
    return 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))
  for n in (1, 2, 7, 80, 200):
    for c in sorted({0, 1, n // 3, n // 2, n - 1, n}):
      for k in sorted({1, 2, 10, 80, n}):
        if 0 <= c <= n and k <= n:
          assert pass_at_k(n, c, k) == pytest.approx(reference(n, c, k), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(5, 2, 6), (5, 2, 0), (5, 6, 1), (5, -1, 1)])
def test_pass_at_k_rejects_undefined_arguments(n, c, k):
  with pytest.raises(ValueError):
    pass_at_k(n, c, k)


def _result(rid: str, status: str) -> Result:
  return Result(rid, status, status == records.PASSED, 0, 3, "", 0.01)


def test_score_groups_by_problem_and_reports_only_defined_k():
  results = [_result("p1/0", "passed"), _result("p1/1", "passed"), _result("p1/2", "failed"),
             _result("p1/3", "timeout"), _result("p1/4", "error"),
             _result("p2/0", "syntax_error"), _result("p2/1", "killed")]
  scores = score(results, ks=(1, 2, 5))
  p1, p2 = scores["per_problem"]["p1"], scores["per_problem"]["p2"]
  assert (p1["n"], p1["passed"], p1["pass_rate"]) == (5, 2, 0.4)
  assert p1["pass_at_k"] == pytest.approx({1: 0.4, 2: 0.7, 5: 1.0})
  assert p2["pass_at_k"] == {1: 0.0, 2: 0.0}  # No pass@5 with two samples.
  assert p1["status_counts"] == {"passed": 2, "failed": 1, "error": 1, "syntax_error": 0,
                                 "timeout": 1, "killed": 0}
  overall = scores["overall"]
  assert overall["pass_at_k"] == pytest.approx({1: 0.2, 2: 0.35, 5: 1.0})
  assert overall["problems_at_k"] == {1: 2, 2: 2, 5: 1}
  assert (overall["problems"], overall["samples"], overall["passed"]) == (2, 7, 2)
  assert overall["pass_rate"] == pytest.approx(2 / 7)
  assert overall["status_counts"] == {"passed": 2, "failed": 1, "error": 1, "syntax_error": 1,
                                      "timeout": 1, "killed": 1}


def test_problem_of_takes_everything_before_the_last_slash():
  assert problem_of("mbpp/11/3") == "mbpp/11"
  assert problem_of("single") == "single"


def test_status_counts_take_the_callers_statuses_and_refuse_unknown_ones():
  results = [Result("p/0", "passed", True, 1, 1, "", 0.0),
             Result("p/1", "invalid_prediction", False, 0, 1, "not a value", 0.0)]
  with pytest.raises(ValueError, match="unknown status.*invalid_prediction"):
    score(results, ks=(1,))
  counts = score(results, ks=(1,), statuses=(*records.STATUSES, "invalid_prediction"))
  assert counts["overall"]["status_counts"]["invalid_prediction"] == 1
  assert counts["overall"]["pass_rate"] == 0.5
