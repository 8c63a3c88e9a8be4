"""Samples files from other systems: parsed in order, every bad line caught before any run."""
import json
import os

import pytest

from data.tasks import load_task_examples
from evaluation import (SAMPLES_FILE, SamplesFileError, WorkdirMismatch, evaluate_samples_file,
                        load_scored, read_samples_file)


@pytest.fixture(scope="module")
def synthesis(mbpp_dirs) -> list[dict]:
  return load_task_examples("mbpp_synthesis", "test", **mbpp_dirs)


def _write(path, lines: list) -> str:
  with open(path, "w") as f:
    for line in lines:
      f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
  return str(path)


def test_samples_group_by_problem_in_file_order(synthesis, tmp_path):
  path = _write(tmp_path / "s.jsonl", [
      {"task_id": 12, "completion": "a"}, {"task_id": 11, "completion": "b"}, "",
      {"task_id": 12, "completion": "c", "extra": "ignored"}])
  assert read_samples_file(path, synthesis) == {"mbpp/12": ["a", "c"], "mbpp/11": ["b"]}


@pytest.mark.parametrize("bad_line, message", [
    ('{"task_id": 11, "completion": "x"', r"s\.jsonl:3: not valid JSON"),
    ('[11, "x"]', r"s\.jsonl:3: expected a JSON object, got list"),
    ('{"task_id": "11", "completion": "x"}', r"s\.jsonl:3: 'task_id' must be an integer"),
    ('{"task_id": true, "completion": "x"}', r"s\.jsonl:3: 'task_id' must be an integer"),
    ('{"task_id": 11}', r"s\.jsonl:3: 'completion' must be a string"),
    ('{"task_id": 11, "completion": null}', r"s\.jsonl:3: 'completion' must be a string"),
    ('{"task_id": 9999, "completion": "x"}', r"s\.jsonl:3: unknown task_id 9999"),
    ('{"task_id": 601, "completion": "x"}', r"s\.jsonl:3: unknown task_id 601: not a problem "
                                            r"of mbpp_synthesis \(task ids 11\.\.510"),
])
def test_bad_lines_name_the_file_and_line(synthesis, tmp_path, bad_line, message):
  path = _write(tmp_path / "s.jsonl", [{"task_id": 11, "completion": "x"}, "", bad_line])
  with pytest.raises(SamplesFileError, match=message):
    read_samples_file(path, synthesis)


def test_an_empty_file_is_an_error(synthesis, tmp_path):
  with pytest.raises(SamplesFileError, match="no samples"):
    read_samples_file(_write(tmp_path / "s.jsonl", ["", "  "]), synthesis)


def test_nothing_runs_when_the_last_line_is_bad(synthesis, tmp_path):
  lines = [{"task_id": e["task_id"], "completion": e["target"]} for e in synthesis]
  path = _write(tmp_path / "s.jsonl", lines + [{"task_id": 5000, "completion": ""}])
  workdir = tmp_path / "run"
  with pytest.raises(SamplesFileError, match=f"s.jsonl:{len(lines) + 1}: unknown task_id 5000"):
    evaluate_samples_file(path, synthesis, str(workdir))
  assert not os.path.exists(workdir / SAMPLES_FILE)


def test_execution_samples_name_the_test_assert(mbpp_dirs, tmp_path):
  examples = load_task_examples("mbpp_execution", "test", **mbpp_dirs)
  path = _write(tmp_path / "s.jsonl", [{"task_id": 11, "test_index": 2, "completion": "1"},
                                       {"task_id": 11, "test_index": 0, "completion": "2"}])
  assert read_samples_file(path, examples) == {"mbpp/11/2": ["1"], "mbpp/11/0": ["2"]}
  path = _write(tmp_path / "s.jsonl", [{"task_id": 11, "completion": "1"}])
  with pytest.raises(SamplesFileError, match=r"s\.jsonl:1: .*integer 'test_index'"):
    read_samples_file(path, examples)
  path = _write(tmp_path / "s.jsonl", [{"task_id": 11, "test_index": 7, "completion": "1"}])
  with pytest.raises(SamplesFileError, match=r"s\.jsonl:1: unknown task_id 11 test_index 7"):
    read_samples_file(path, examples)


def test_the_input_cannot_be_the_workdirs_output(synthesis, tmp_path):
  path = _write(tmp_path / SAMPLES_FILE, [{"task_id": 11, "completion": "x"}])
  with pytest.raises(SamplesFileError, match="where the scored samples go"):
    evaluate_samples_file(path, synthesis, str(tmp_path))
  with pytest.raises(WorkdirMismatch, match=f"{SAMPLES_FILE}:1: not a scored sample"):
    load_scored(str(tmp_path))
