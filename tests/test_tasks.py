"""The task registry: examples for training/eval, and completions -> sandbox requests.

Requests are checked by running them, like the project's sandbox would, in a separate
Python process (a minimal stand-in here, so that data/ tests do not depend on execution/).
"""
import json
import subprocess
import sys

import pytest

from data import tasks
from tests.test_prompts import GOLDEN_TASK_11

# Runs each request as program, then setup, then tests, in a fresh namespace; prints
# {id: true | "ExceptionName"}.
_RUNNER = r"""
import json, signal, sys
def timeout(*_):
  raise TimeoutError()
signal.signal(signal.SIGALRM, timeout)
results = {}
for request in json.load(sys.stdin):
  namespace = {"__name__": "__main__"}
  signal.alarm(10)
  try:
    exec(request["program"], namespace)
    exec(request["setup"], namespace)
    for test in request["tests"]:
      exec(test, namespace)
    results[request["id"]] = True
  except BaseException as e:
    results[request["id"]] = type(e).__name__
  finally:
    signal.alarm(0)
print(json.dumps(results))
"""
# Task 123's reference solution (amicable numbers below 10,000) needs ~10 s.
_SLOW_TASK_IDS = {123}


def _run(requests: list[dict]) -> dict[str, object]:
  out = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(requests),
                       capture_output=True, text=True, check=True, timeout=600)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _examples(task, split, dirs, **options):
  return tasks.load_task_examples(task, split, data_dir=dirs["data_dir"],
                                  manual_dir=dirs["manual_dir"], **options)


def test_synthesis_examples(mbpp_dirs):  # noqa: F811
  examples = _examples("mbpp_synthesis", "test", mbpp_dirs)
  assert len(examples) == 500 and examples[0]["task_id"] == 11
  assert examples[0]["prompt"] == GOLDEN_TASK_11
  for e in examples:
    assert e["prompt"].endswith("[BEGIN]\n") and e["prompt"].count("[BEGIN]") == 4
    assert e["target"].endswith("\n[DONE]") and e["target"].count("[DONE]") == 1
  assert len({e["prompt_template_sha256"] for e in examples}) == 1


def test_finetuning_split_has_no_shots_by_default(mbpp_dirs):  # noqa: F811
  examples = _examples("mbpp_synthesis", "train", mbpp_dirs)
  assert len(examples) == 374
  assert all(e["prompt"].count("[BEGIN]") == 1 for e in examples)
  assert examples[0]["prompt"].startswith(
      "You are an expert Python programmer, and here is your task: ")
  three_shot = _examples("mbpp_synthesis", "train", mbpp_dirs, num_shots=3)
  assert three_shot[0]["prompt"].endswith(examples[0]["prompt"])
  assert three_shot[0]["prompt_template_sha256"] != examples[0]["prompt_template_sha256"]


def test_unknown_task_or_option_is_refused(mbpp_dirs):  # noqa: F811
  with pytest.raises(ValueError, match="unknown task"):
    _examples("apps", "test", mbpp_dirs)
  with pytest.raises(TypeError, match="num_test_shown"):
    _examples("mbpp_synthesis", "test", mbpp_dirs, num_test_shown=1)


def test_reference_solutions_pass_through_the_scorer(mbpp_dirs):  # noqa: F811
  examples = [e for split in ("prompt", "test", "validation", "train")
              for e in _examples("mbpp_synthesis", split, mbpp_dirs)
              if e["task_id"] not in _SLOW_TASK_IDS]
  # A completion is the target plus whatever the model babbles after [DONE].
  requests = [tasks.execution_request(e, e["target"] + "\nYou are an expert")
              for e in examples]
  assert all(r["program"] == e["target"][:-len("[DONE]")]
             for r, e in zip(requests, examples))
  results = _run(requests)
  assert {k: v for k, v in results.items() if v is not True} == {}
  assert len(results) == 973
  challenge = [tasks.execution_request(e, e["target"], challenge=True)
               for e in examples if e["challenge_test_list"]]
  assert len(challenge) == 11 and sum(len(r["tests"]) for r in challenge) == 16
  assert all(v is True for v in _run(challenge).values())


def test_sanitized_reference_solutions_pass_with_their_imports(mbpp_dirs):  # noqa: F811
  examples = [e for split in ("prompt", "test", "validation", "train")
              for e in _examples("mbpp_synthesis", split, mbpp_dirs,
                                 mbpp_config="sanitized")]
  assert len(examples) == 427
  assert sum(1 for e in examples if e["test_setup"].startswith("import")) == 13
  results = _run([tasks.execution_request(e, e["target"]) for e in examples])
  assert len(results) == 427 and all(v is True for v in results.values())


def test_wrong_solution_fails_and_setup_runs_after_program(mbpp_dirs):  # noqa: F811
  by_id = {e["task_id"]: e for e in _examples("mbpp_synthesis", "test", mbpp_dirs)}
  wrong = tasks.execution_request(by_id[11], "def remove_Occ(s, ch):\n  return s\n[DONE]")
  tree = tasks.execution_request(by_id[367], by_id[367]["target"])
  assert "Node(" in tree["setup"]  # uses the class the program defines.
  assert _run([wrong, tree]) == {"mbpp/11": "AssertionError", "mbpp/367": True}


def test_execution_examples_and_scoring(mbpp_dirs):  # noqa: F811
  examples = _examples("mbpp_execution", "test", mbpp_dirs, variant="code_tests")
  assert len(examples) == 1500
  assert all(e["prompt"].endswith(f"assert {e['call']} == ") for e in examples)
  right = [tasks.execution_request(e, e["target"]) for e in examples
           if e["task_id"] not in _SLOW_TASK_IDS]
  results = _run(right)
  # Task 414's asserts write False/True for a returned 0/1: right only by Python's loose ==.
  assert len(results) == 1497
  assert {k for k, v in results.items() if v is not True} == {
      "mbpp/414/0", "mbpp/414/1", "mbpp/414/2"}
  # A differently spelled but equal value is right; another value is wrong; what is not a
  # value is refused before anything runs.
  e = next(x for x in examples if x["expected"].startswith("[") and ", " in x["expected"])
  unspaced = e["expected"].replace(", ", ",")
  respaced = tasks.execution_request(e, unspaced + "\n[DONE]")
  wrong = dict(tasks.execution_request(e, "[]"), id="wrong")
  assert f"__predicted__ = (\n{unspaced}\n)\n" in respaced["tests"][0]
  assert _run([respaced, wrong]) == {e["id"]: True, "wrong": "AssertionError"}
  with pytest.raises(tasks.InvalidPrediction, match="not a literal value"):
    tasks.execution_request(e, "object()")


def test_mathqa_examples_and_scoring(mathqa_dirs):  # noqa: F811
  examples = tasks.load_task_examples("mathqa", "validation", **mathqa_dirs)
  assert len(examples) == 2839
  assert examples[0]["prompt"].startswith("# a multiple choice test")
  assert examples[0]["target"] == "n0 = 4.0\nn1 = 5.0\nanswer = n1 ** n0\n[DONE]"
  requests = [tasks.execution_request(e, e["target"]) for e in examples]
  assert all(v is True for v in _run(requests).values())
  off_by_two_percent = tasks.execution_request(
      examples[0], "answer = 625.0 * 1.02\n[DONE]")
  within_one_percent = dict(tasks.execution_request(
      examples[0], "answer = 625.0 * 1.009\n"), id="close")
  assert _run([off_by_two_percent, within_one_percent]) == {
      examples[0]["id"]: "AssertionError", "close": True}


def test_predicted_value_takes_first_line_before_done():
  assert tasks.predicted_value(' "bcd"\n[DONE]\nassert f(1) == 2') == '"bcd"'
  assert tasks.predicted_value("[DONE]") == ""
