"""scripts/compare.py: several eval workdirs -> one table (markdown, CSV, JSONL) and plots."""
import csv
import json
import os
import subprocess
import sys

import pytest

from evaluation import compare, write_results
from tests.conftest import REPO_ROOT


def _fake_run(workdir, model: str, objective: str, task: str, pass_at_k: dict,
              challenge: dict | None = None, num_params: int | None = None) -> None:
  meta = {"model": model, "objective": objective, "task": task, "split": "test"}
  if num_params:
    meta["num_params"] = num_params
  n = 80 if "80" in pass_at_k else 10 if "10" in pass_at_k else 1
  write_results(str(workdir), {
      "meta": meta, "pass_at_k": pass_at_k, "pass_rate": pass_at_k["1"],
      "per_problem": [{"id": f"mbpp/{i}", "task_id": i, "n": n, "c": 0} for i in range(3)],
      "samples_per_problem": {"min": n, "max": n},
      "challenge": {"pass_at_k": challenge} if challenge else None})


@pytest.fixture
def runs(tmp_path):
  _fake_run(tmp_path / "runs" / "syn-1b", "1b", "few-shot", "mbpp_synthesis",
            {"1": 0.125, "10": 0.25, "80": 0.5}, challenge={"1": 0.0625})
  _fake_run(tmp_path / "runs" / "syn-244m", "244m", "few-shot", "mbpp_synthesis",
            {"1": 0.0625, "10": 0.1875})
  _fake_run(tmp_path / "runs" / "sweep" / "exe-tiny", "tiny", "finetuned-execution",
            "mbpp_execution", {"1": 0.375}, num_params=2_000_000)
  return tmp_path / "runs"


EXPECTED_CSV = [
    # Execution sorts before synthesis; within a task by objective, then size (244m < 1b).
    {"run": "sweep/exe-tiny", "model": "tiny", "num_params": "2000000",
     "objective": "finetuned-execution", "task": "mbpp_execution", "split": "test",
     "problems": "3", "samples_per_problem": "1", "pass@1": "0.375", "pass@10": "",
     "pass@80": "", "pass_rate": "0.375", "challenge_pass@1": ""},
    {"run": "syn-244m", "model": "244m", "num_params": "", "objective": "few-shot",
     "task": "mbpp_synthesis", "split": "test", "problems": "3", "samples_per_problem": "10",
     "pass@1": "0.0625", "pass@10": "0.1875", "pass@80": "", "pass_rate": "0.0625",
     "challenge_pass@1": ""},
    {"run": "syn-1b", "model": "1b", "num_params": "", "objective": "few-shot",
     "task": "mbpp_synthesis", "split": "test", "problems": "3", "samples_per_problem": "80",
     "pass@1": "0.125", "pass@10": "0.25", "pass@80": "0.5", "pass_rate": "0.125",
     "challenge_pass@1": "0.0625"},
]


def test_compare_script_writes_table_and_plots(runs, tmp_path):
  out = tmp_path / "out"
  dirs = [str(runs / "syn-1b"), str(runs / "sweep"), str(runs / "syn-244m")]
  done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "compare.py"), *dirs,
                         "--out_dir", str(out)], capture_output=True, text=True, cwd=runs,
                        timeout=120, check=True)
  with open(out / "compare.csv") as f:
    assert list(csv.DictReader(f)) == EXPECTED_CSV
  table = done.stdout.splitlines()
  assert table[0] == ("| run | model | num_params | objective | task | split | problems | "
                      "samples_per_problem | pass@1 (%) | pass@10 (%) | pass@80 (%) | "
                      "pass_rate (%) | challenge_pass@1 (%) |")
  assert table[2:] == [
      "| sweep/exe-tiny | tiny | 2000000 | finetuned-execution | mbpp_execution | test | 3 | 1 | "
      "37.50 |  |  | 37.50 |  |",
      "| syn-244m | 244m |  | few-shot | mbpp_synthesis | test | 3 | 10 | 6.25 | 18.75 |  | "
      "6.25 |  |",
      "| syn-1b | 1b |  | few-shot | mbpp_synthesis | test | 3 | 80 | 12.50 | 25.00 | 50.00 | "
      "12.50 | 6.25 |"]
  assert (out / "compare.md").read_text() == done.stdout
  jsonl = [json.loads(line) for line in (out / "compare.jsonl").read_text().splitlines()]
  assert [(r["run"], r["pass@1"]) for r in jsonl] == [
      ("sweep/exe-tiny", 0.375), ("syn-244m", 0.0625), ("syn-1b", 0.125)]
  for task in ("mbpp_execution", "mbpp_synthesis"):
    assert (out / f"compare_{task}.png").read_bytes()[:4] == b"\x89PNG"


def test_a_folder_is_searched_for_runs(runs):
  rows = compare.gather([str(runs)])
  assert [r["run"] for r in rows] == [os.path.relpath(runs / name)
                                      for name in ("sweep/exe-tiny", "syn-244m", "syn-1b")]


def test_model_sizes_order_numerically():
  sizes = [compare.model_size({"model": m}) for m in ("244m", "1b", "8B", "137b", "tiny")]
  assert sizes == [244e6, 1e9, 8e9, 137e9, float("inf")]
  assert compare.model_size({"model": "tiny", "num_params": 2_000_000}) == 2e6


def test_compare_script_fails_cleanly_without_results(tmp_path):
  done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "compare.py"),
                         str(tmp_path)], capture_output=True, text=True, timeout=120)
  assert done.returncode == 2 and "no results.json in or below" in done.stderr
