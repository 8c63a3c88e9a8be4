"""Other harnesses' MBPP outputs (evaluation/sample_formats.py), scored as those harnesses
assemble their programs: files built per each format from MBPP's reference solutions score
pass@1 = 1, broken ones 0; config.pass_at_k and meta.num_samples follow the file."""
import json

import pytest

from configs import eval_synthesis
from data import mbpp
from evaluation import load_scored, sample_formats
from evaluation.runner import run_eval
from evaluation.sample_formats import SamplesFileError, detect_format, read_samples

_NUM_PROBLEMS = 4  # Scored problems (task ids 11..14); the files cover the whole test split.


@pytest.fixture(scope="module")
def problems(mbpp_dirs) -> list[dict]:
  """MBPP's test split as the harnesses' datasets hold it (full records, task ids 11..510)."""
  return mbpp.load("test", **mbpp_dirs)


def _config(mbpp_dirs, samples_path, **overrides):
  config = eval_synthesis.get_config()
  config.data.manual_dir = mbpp_dirs["manual_dir"]
  config.data.data_dir = mbpp_dirs["data_dir"]
  config.samples_path = str(samples_path)
  config.max_problems = _NUM_PROBLEMS
  config.sandbox.workers = 2
  config.update(overrides)
  return config


def _prompt(problem) -> str:  # bigcode's MBPP get_prompt / EvalPlus's MBPP+ prompt shape.
  return f'"""\n{problem["text"]}\n{problem["test_list"][0]}\n"""\n'


_BROKEN = "def nothing():\n  return None\n"  # Defines none of the tested functions.


def _bigcode(problems, path, broken=False):
  generations = [[_prompt(p) + (_BROKEN if broken else p["code"])] * 2 for p in problems]
  path.write_text(json.dumps(generations))
  return path


def _evalplus(problems, path, broken=False):
  lines = [{"task_id": "Mbpp/2", "solution": "print('a train problem: skipped')"}]
  for p in problems:
    code = _BROKEN if broken else p["code"]
    lines.append({"task_id": f"Mbpp/{p['task_id']}", "solution": code})
    lines.append({"task_id": f"Mbpp/{p['task_id']}", "completion": code})
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  return path


def _lm_eval(problems, path, broken=False):
  lines = []
  for doc_id, p in enumerate(problems):
    code = _BROKEN if broken else p["code"]
    lines.append({"doc_id": doc_id, "doc": p, "target": "\n".join(p["test_list"]),
                  "arguments": {"gen_args_0": {"arg_0": "...[BEGIN]\n"}},
                  "resps": [[code, "never scored: take_first kept the first"]],
                  "filtered_resps": [code], "filter": "none", "metrics": ["pass_at_1"]})
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  return path


_WRITERS = {"bigcode": _bigcode, "evalplus": _evalplus, "lm_eval": _lm_eval}
_SAMPLES_PER_PROBLEM = {"bigcode": 2, "evalplus": 2, "lm_eval": 1}


@pytest.mark.parametrize("name", sorted(_WRITERS))
def test_reference_solutions_pass_and_broken_ones_fail(name, problems, mbpp_dirs, tmp_path):
  good = _WRITERS[name](problems, tmp_path / f"{name}-good")
  bad = _WRITERS[name](problems, tmp_path / f"{name}-bad", broken=True)
  assert detect_format(str(good)) == name
  results = run_eval(_config(mbpp_dirs, good), str(tmp_path / "good"))
  assert results["pass_at_k"] == {"1": 1.0}
  n = _SAMPLES_PER_PROBLEM[name]
  assert [(p["task_id"], p["n"]) for p in results["per_problem"]] == [
      (t, n) for t in range(11, 11 + _NUM_PROBLEMS)]
  assert results["meta"]["samples_format"] == name and results["meta"]["num_samples"] == n
  # Named explicitly instead of detected: the same reading.
  results = run_eval(_config(mbpp_dirs, bad, samples_format=name), str(tmp_path / "bad"))
  assert results["pass_at_k"] == {"1": 0.0}
  assert results["status_counts"]["error"] == n * _NUM_PROBLEMS  # NameError in the tests.


def test_programs_are_assembled_as_each_harness_does(problems, mbpp_dirs, tmp_path):
  examples = [{"task": "mbpp_synthesis", "id": f"mbpp/{p['task_id']}", "text": p["text"],
               **p} for p in problems[:2]]
  first = problems[0]
  programs, meta = read_samples(str(_bigcode(problems, tmp_path / "b.json")), examples)
  assert programs["mbpp/11"] == [_prompt(first) + first["code"]] * 2
  assert meta == {"samples_format": "bigcode", "samples_skipped": 498}
  programs, meta = read_samples(str(_evalplus(problems, tmp_path / "e.jsonl")), examples)
  # "solution" as it is; "completion" after the docstring prompt.
  assert programs["mbpp/11"] == [first["code"], _prompt(first) + first["code"]]
  assert meta == {"samples_format": "evalplus", "samples_skipped": 499}  # Mbpp/2, 13..510.
  programs, meta = read_samples(str(_lm_eval(problems, tmp_path / "l.jsonl")), examples)
  assert programs["mbpp/11"] == [first["code"]]  # filtered_resps, not every resp.
  # What ran is recorded per sample.
  run_eval(_config(mbpp_dirs, tmp_path / "e.jsonl", max_problems=1), str(tmp_path / "run"))
  scored = load_scored(str(tmp_path / "run"))["mbpp/11"]
  assert [r["program"] for r in scored] == [first["code"], _prompt(first) + first["code"]]


@pytest.mark.parametrize("content, message", [
    ('{"task_id": "Mbpp/x", "solution": "a"}\n', r"f:1: 'task_id' must be \"Mbpp/N\""),
    ('{"task_id": "Mbpp/11"}\n', r"f:1: needs 'solution' or 'completion'"),
    ('{"task_id": "Mbpp/11", "solution": 3}\n', r"f:1: expected a program"),
    ('{"task_id": "Mbpp/9999", "solution": "a"}\n', r"f:1: 9999 is not an MBPP task id"),
    ('[["a"], "b"]', r"f\[1\]: expected a list of generations"),
    ('{"doc": {"task_id": 11}, "filtered_resps": ["a"], "filter": "none"}\n'
     '{"doc": {"task_id": 11}, "filtered_resps": ["a"], "filter": "other"}\n',
     r"f:2: more than one lm-eval filter"),
    ('{"something": 1}\n', r"cannot tell its format.*--config.samples_format"),
])
def test_bad_files_name_file_and_line(problems, tmp_path, content, message):
  examples = [{"task": "mbpp_synthesis", "id": f"mbpp/{p['task_id']}", **p}
              for p in problems[:2]]
  path = tmp_path / "f"
  path.write_text(content)
  with pytest.raises(SamplesFileError, match=message):
    read_samples(str(path), examples)


def test_foreign_formats_are_synthesis_only(tmp_path):
  path = _evalplus([], tmp_path / "e.jsonl")
  with pytest.raises(SamplesFileError, match="read for task.s. mbpp_synthesis, humaneval, "
                                             ".*; config.task is 'mbpp_execution'"):
    read_samples(str(path), [{"task": "mbpp_execution", "task_id": 11, "id": "x"}])
  with pytest.raises(SamplesFileError, match="unknown samples_format 'humaneval'"):
    read_samples(str(path), [], "humaneval")
  assert sample_formats.FORMATS == ("ours", "bigcode", "evalplus", "lm_eval", "human_eval")


def test_pass_at_k_and_num_samples_follow_the_config_and_the_file(problems, mbpp_dirs,
                                                                  tmp_path):
  path = tmp_path / "ours.jsonl"
  with open(path, "w") as f:
    for p in problems[:_NUM_PROBLEMS]:
      for completion in (p["code"], "return", "return"):
        f.write(json.dumps({"task_id": p["task_id"], "completion": completion}) + "\n")
  results = run_eval(_config(mbpp_dirs, path, pass_at_k=(1, 2, 3, 10)), str(tmp_path / "r"))
  assert results["pass_at_k"] == pytest.approx({"1": 1 / 3, "2": 2 / 3, "3": 1.0})
  assert results["meta"]["num_samples"] == 3 and results["meta"]["samples_format"] == "ours"
  with pytest.raises(ValueError, match="config.pass_at_k must be positive integers"):
    run_eval(_config(mbpp_dirs, path, pass_at_k=(0, 1)), str(tmp_path / "r2"))
