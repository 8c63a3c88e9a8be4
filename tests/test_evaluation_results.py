"""results.json and report.md from scored records, without the sandbox."""
import json
import math
import re

import pytest

from evaluation import read_results, summarize, write_report, write_results
from evaluation.results import curve_ks

SHA = "ab" * 32


def _example(task_id: int, challenge: bool = False) -> dict:
  return {"task": "mbpp_synthesis", "task_id": task_id, "id": f"mbpp/{task_id}",
          "prompt_template_sha256": SHA, "test_list": ["assert True"],
          "challenge_test_list": ["assert True"] if challenge else []}


def _records(example: dict, statuses: list[str], challenge: list[bool] | None = None) -> list:
  records = []
  for i, status in enumerate(statuses):
    record = {"id": example["id"], "task": example["task"], "task_id": example["task_id"],
              "sample_index": i, "num_samples": len(statuses), "status": status,
              "passed": status == "passed", "error": "", "tests_passed": 0, "tests_total": 1,
              "duration_s": 0.01}
    if challenge is not None:
      record.update(challenge_status="passed" if challenge[i] else "failed",
                    challenge_passed=challenge[i], challenge_error="")
    records.append(record)
  return records


def _by_hand(n: int, c: int, k: int) -> float:
  return 1 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_only_for_k_every_problem_reaches():
  examples = [_example(11, challenge=True), _example(12), _example(13)]
  records = {
      "mbpp/11": _records(examples[0], ["passed", "failed", "syntax_error", "passed"],
                          challenge=[True, False, False, False]),
      "mbpp/12": _records(examples[1], ["timeout", "error", "failed"]),
      # mbpp/13 has no samples: unscored, not a zero.
  }
  results = summarize(examples, records, meta={"model": "1b", "split": "test"}, ks=(1, 2, 3, 10))
  assert results["pass_at_k"] == pytest.approx(
      {"1": (_by_hand(4, 2, 1) + 0) / 2, "2": _by_hand(4, 2, 2) / 2, "3": _by_hand(4, 2, 3) / 2})
  assert list(results["pass_at_k_curve"]) == ["1", "2", "3"]
  assert results["per_problem"] == [
      {"id": "mbpp/11", "task_id": 11, "n": 4, "c": 2, "challenge_n": 4, "challenge_c": 1},
      {"id": "mbpp/12", "task_id": 12, "n": 3, "c": 0}]
  assert (results["num_problems"], results["num_samples"], results["num_examples"],
          results["unscored_problems"]) == (2, 7, 3, 1)
  assert results["samples_per_problem"] == {"min": 3, "max": 4}
  assert results["pass_rate"] == pytest.approx(2 / 7)
  assert results["problems_solved"] == 0.5
  assert results["status_counts"] == {"passed": 2, "failed": 2, "error": 1, "syntax_error": 1,
                                      "timeout": 1, "killed": 0, "invalid_prediction": 0,
                                      "prompt_too_long": 0}
  challenge = results["challenge"]
  assert (challenge["num_problems"], challenge["num_samples"]) == (1, 4)
  assert challenge["pass_at_k"] == pytest.approx({"1": 0.25, "2": 0.5, "3": 0.75})
  assert results["meta"] == {"model": "1b", "objective": "unknown", "split": "test",
                             "samples_source": "unknown", "task": "mbpp_synthesis",
                             "prompt_template_sha256": SHA}


def test_curve_grid():
  assert curve_ks(1) == [1]
  assert curve_ks(7) == [1, 2, 3, 5, 7]
  assert curve_ks(80) == [1, 2, 3, 5, 10, 20, 30, 50, 80]
  assert curve_ks(200) == [1, 2, 3, 5, 10, 20, 30, 50, 100, 200]


def test_results_round_trip_and_report_references_its_plots(tmp_path):
  examples = [_example(i) for i in range(11, 21)]
  records = {e["id"]: _records(e, ["passed"] * (i % 3) + ["failed"] * (10 - i % 3))
             for i, e in enumerate(examples)}
  results = summarize(examples, records, meta={"model": "tiny", "objective": "few-shot",
                                               "split": "test"})
  # 9 of 100 samples pass; 6 of 10 problems have one (pass@10 = 1 there, 0 elsewhere).
  assert results["pass_at_k"] == pytest.approx({"1": 0.09, "10": 0.6})  # No pass@80.
  write_results(str(tmp_path), results)
  assert read_results(str(tmp_path)) == json.loads((tmp_path / "results.json").read_text())
  assert read_results(str(tmp_path / "results.json")) == results
  with open(write_report(str(tmp_path), results)) as f:
    markdown = f.read()
  assert "| pass@1 | 9.00% |" in markdown and "| pass@10 | 60.00% |" in markdown
  plots = re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown)
  assert plots == ["pass_at_k.png", "status_counts.png"]
  for png in plots:
    assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
  (tmp_path / "bad.json").write_text('{"pass_at_k": {}}')
  with pytest.raises(ValueError, match="missing"):
    read_results(str(tmp_path / "bad.json"))
