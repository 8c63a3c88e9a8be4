"""Feedback repair: the dialog each round, which sample is shown, solved rate by round, resume."""
import json
import os

import pytest

from data.tasks import load_task_examples
from evaluation import repair
from evaluation.scoring import score_completions
from execution import SandboxConfig
from tests.scripted_sampler import ScriptedSampler

_WRONG = "def nothing():\n  return None\n"


def _record(status, error, tests_passed=0, index=0, completion="def f(x):\n  return x\n"):
  return {"status": status, "error": error, "tests_passed": tests_passed,
          "sample_index": index, "completion": completion, "passed": False}


_EXAMPLE = {"id": "mbpp/1", "prompt": "You are ... task.\n[BEGIN]\n",
            "test_list": ["assert f(1) == 1", "assert f(2) == 3 "]}


def test_dialog_appends_the_program_and_the_failing_test():
  record = _record("failed", "test 1: AssertionError", tests_passed=1,
                   completion="def f(x):\n  return x\n[DONE]\nmore")
  assert repair.repair_prompt(_EXAMPLE, record) == (
      "You are ... task.\n[BEGIN]\n"
      "def f(x):\n  return x\n[DONE]\n"
      "Feedback: the code fails the test `assert f(2) == 3` (AssertionError). "
      "Please fix the code.\n[BEGIN]\n")


@pytest.mark.parametrize("status,error,expected", [
    ("error", "test 0: ZeroDivisionError: division by zero",
     "the test `assert f(1) == 1` raised ZeroDivisionError: division by zero."),
    ("syntax_error", "SyntaxError: expected ':' (program.py, line 1)",
     "the code does not parse: SyntaxError: expected ':' (program.py, line 1)."),
    ("error", "NameError: name 'g' is not defined",
     "the code raised NameError: name 'g' is not defined."),
    ("timeout", "", "the code did not finish within the time limit."),
    ("killed", "MemoryError", "the code was killed (MemoryError)."),
])
def test_feedback_names_what_went_wrong(status, error, expected):
  assert repair.describe_failure(_EXAMPLE, _record(status, error)) == expected


def test_the_sample_shown_is_the_one_closest_to_passing():
  records = [_record("error", "x", 0, 0), _record("failed", "test 2: A", 2, 1),
             _record("failed", "test 2: B", 2, 2), _record("failed", "test 1: C", 1, 3)]
  assert repair.best_failure(records)["sample_index"] == 1


def test_only_synthesis_can_be_repaired(tmp_path):
  with pytest.raises(ValueError, match="feedback repair needs failing tests"):
    repair.run_repair(ScriptedSampler(lambda p, s: ""), [{"task": "mathqa", "id": "m"}], {},
                      str(tmp_path), rounds=1, num_samples=1, meta={})


def test_solved_rate_by_round_and_resume(mbpp_dirs, tmp_path):
  # Problem i is answered correctly once its dialog holds `fixed_after[i]` feedback turns.
  examples = load_task_examples("mbpp_synthesis", "test", num_shots=0, **{
      k: mbpp_dirs[k] for k in ("data_dir", "manual_dir")})[:4]
  code = {e["task_id"]: json.loads(line)["code"]
          for line in open(os.path.join(mbpp_dirs["manual_dir"], "mbpp.jsonl"))
          for e in examples if json.loads(line)["task_id"] == e["task_id"]}
  fixed_after = dict(zip([e["task_id"] for e in examples], [0, 1, 2, None]))

  def answer(prompt, _):
    example = next(e for e in examples if prompt.startswith(e["prompt"]))
    rounds = fixed_after[example["task_id"]]
    turns = prompt.count("\nFeedback: ")
    return code[example["task_id"]] if rounds is not None and turns >= rounds else _WRONG

  sandbox = SandboxConfig(workers=2)
  round0 = score_completions(examples, {e["id"]: [answer(e["prompt"], None)] * 2
                                        for e in examples},
                             repair.round_dir(str(tmp_path), 0), sandbox)
  sampler = ScriptedSampler(answer, seed=7)
  summary = repair.run_repair(sampler, examples, round0, str(tmp_path), rounds=3,
                              num_samples=2, meta={"model": "scripted"}, sandbox_config=sandbox)
  assert [(r["attempted"], r["solved_this_round"], r["solved_total"]) for r in
          summary["rounds"]] == [(4, 1, 1), (3, 1, 2), (2, 1, 3), (1, 0, 3)]
  assert [r["solved_rate"] for r in summary["rounds"]] == [0.25, 0.5, 0.75, 0.75]
  ids = [e["id"] for e in examples]
  assert summary["solved_in_round"] == dict(zip(ids, [0, 1, 2, None]))
  assert sampler.seed == 7 and len({seed for _, seed, _, _ in sampler.calls}) == 3
  # The last unsolved problem's dialog holds three turns, each naming its first failing test.
  with open(os.path.join(repair.round_dir(str(tmp_path), 3), repair.DIALOGS_FILE)) as f:
    (dialog,) = [json.loads(line) for line in f]
  assert dialog["id"] == ids[3] and dialog["prompt"].count("\nFeedback: ") == 3
  test0 = examples[3]["test_list"][0].strip()
  assert f"Feedback: the test `{test0}` raised NameError" in dialog["prompt"]
  for name in (repair.REPAIR_FILE, repair.REPAIR_REPORT, repair.REPAIR_PLOT):
    assert os.path.exists(os.path.join(tmp_path, name))
  # Rerunning finds every round scored: nothing is sampled again, the summary is the same.
  calls = len(sampler.calls)
  again = repair.run_repair(sampler, examples, round0, str(tmp_path), rounds=3, num_samples=2,
                            meta={"model": "scripted"}, sandbox_config=sandbox)
  assert len(sampler.calls) == calls and again["rounds"] == summary["rounds"]
