"""Feedback repair: the dialog each round, which sample is shown, the returned value in the
feedback, the control arm beside the feedback arm, solved by round, resume."""
import collections
import json
import os

import pytest

from data.tasks import load_task_examples
from evaluation import repair, repair_probe
from evaluation.scorer import score_completions
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
  assert repair.repair_prompt(_EXAMPLE, record, returned="2").endswith(
      "Feedback: the code fails the test `assert f(2) == 3`: `f(2)` returned `2`, expected "
      "`3`. Please fix the code.\n[BEGIN]\n")


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


@pytest.mark.parametrize("test,expected", [
    ("assert f(2) == 3", ("f(2)", "3")),
    ('assert remove_Occ("hello","l") == "heo" ', ('remove_Occ("hello","l")', '"heo"')),
    ("assert sort_matrix([[1, 2], [0, 1]])==[[0, 1], [1, 2]]",
     ("sort_matrix([[1, 2], [0, 1]])", "[[0, 1], [1, 2]]")),
    ("assert set(f(1)) == {1, 2}, 'message'", ("set(f(1))", "{1, 2}")),
    ("assert f(\n  1) == 2", ("f(1)", "2")),
    ("assert f(1)", None), ("assert f(1) != 2", None), ("assert f(1) == 2 == g(1)", None),
    ("assert f(1) is None", None), ("x = f(1) == 2", None), ("assert f(1) == 2; g()", None),
    ("assert f(1 == 2", None),
])
def test_equality_asserts_are_recognised(test, expected):
  found = repair_probe.equality_assert(test)
  assert (found and (found.call, found.expected)) == expected


def _synthetic(task_id, test_list, setup=""):
  return {"id": f"mbpp/{task_id}", "task": "mbpp_synthesis", "task_id": task_id,
          "prompt": f"Problem {task_id}.\n[BEGIN]\n", "prompt_template_sha256": "0" * 64,
          "test_list": test_list, "challenge_test_list": [], "test_setup": setup}


def test_feedback_says_what_the_call_returned(tmp_path, monkeypatch):
  """Every fed-back sample is scored in the real sandbox; those failing an equality assert
  are probed, all in one sandbox run, for what the failing call returned."""
  examples = [
      _synthetic(1, ["assert f(1) == 1", "assert f(2) == 3"]),
      # The tests before the failing one run first in the probe, leaving their state.
      _synthetic(2, ["assert add(1) == 1", "assert add(2) == 3", "assert add(0) == 0"]),
      _synthetic(3, ["assert g(3) == 9"], setup="OFFSET = 5"),
      _synthetic(4, ["assert long(3) == []"]),
      _synthetic(5, ["assert h(1) == 2"]),  # h raises its own AssertionError: no value
      _synthetic(6, ["assert is_odd(2)"]),  # not an equality: today's line
      _synthetic(7, ["assert k(1) == 1"]),  # an error, not a failed assert: not probed
  ]
  completions = {
      "mbpp/1": ["def f(x):\n  return x * x\n"],
      "mbpp/2": ["total = []\ndef add(x):\n  total.append(x)\n  return sum(total)\n"],
      "mbpp/3": ["def g(x):\n  return x * x + OFFSET\n"],
      "mbpp/4": ["def long(n):\n  return list(range(1000))\n"],
      "mbpp/5": ["def h(x):\n  assert x > 1\n  return x\n"],
      "mbpp/6": ["def is_odd(x):\n  return True if x == 3 else False\n"],
      "mbpp/7": ["def k(x):\n  return 1 / 0\n"],
  }
  sandbox = SandboxConfig(workers=2)
  records = score_completions(examples, completions, str(tmp_path), sandbox)
  assert [records[e["id"]][0]["status"] for e in examples] == ["failed"] * 6 + ["error"]
  runs = []
  real = repair_probe.run_programs
  monkeypatch.setattr(repair_probe, "run_programs",
                      lambda jobs, config: runs.append(len(jobs)) or real(jobs, config))
  dialogs = repair.next_round(examples, records, sandbox)
  assert runs == [5]  # Examples 1-5 fail an equality assert; one sandbox run for all five.
  feedback = [d["prompt"].split("Feedback: ")[1].split(" Please fix")[0] for d in dialogs]
  assert feedback == [
      "the code fails the test `assert f(2) == 3`: `f(2)` returned `4`, expected `3`.",
      # add(0) alone would return 0; after the passing tests it returns 3, as in the test.
      "the code fails the test `assert add(0) == 0`: `add(0)` returned `3`, expected `0`.",
      "the code fails the test `assert g(3) == 9`: `g(3)` returned `14`, expected `9`.",
      "the code fails the test `assert long(3) == []`: `long(3)` returned "
      f"`{repr(list(range(1000)))[:repair_probe.VALUE_CAP]}...`, expected `[]`.",
      "the code fails the test `assert h(1) == 2` (AssertionError).",
      "the code fails the test `assert is_odd(2)` (AssertionError).",
      "the test `assert k(1) == 1` raised ZeroDivisionError: division by zero.",
  ]
  # Stored dialogs are taken as they are: nothing is probed for them.
  known = {d["id"]: d["prompt"] for d in dialogs}
  assert repair.next_round(examples, records, sandbox, known) == dialogs and runs == [5]


def test_only_synthesis_can_be_repaired(tmp_path):
  with pytest.raises(ValueError, match="feedback repair needs failing tests"):
    repair.run_repair(ScriptedSampler(lambda p, s: ""), [{"task": "mathqa", "id": "m"}], {},
                      str(tmp_path), rounds=1, num_samples=1, meta={})


def _mbpp(mbpp_dirs, count):
  examples = load_task_examples("mbpp_synthesis", "test", num_shots=0, **{
      k: mbpp_dirs[k] for k in ("data_dir", "manual_dir")})[:count]
  with open(os.path.join(mbpp_dirs["manual_dir"], "mbpp.jsonl")) as f:
    code = {p["task_id"]: p["code"] for p in map(json.loads, f)}
  return examples, code


def test_feedback_and_control_arms_by_round_and_resume(mbpp_dirs, tmp_path, monkeypatch):
  # Problems 11-14. With feedback, problem i is answered correctly once its dialog holds
  # `fixed_after[i]` feedback turns; asked the original prompt again (control), once it has
  # been asked in `control_after[i]` control rounds ("lucky draws").
  examples, code = _mbpp(mbpp_dirs, 4)
  ids = [e["id"] for e in examples]
  fixed_after = {11: 0, 12: 1, 13: 2, 14: None}
  control_after = {11: 0, 12: 3, 13: None, 14: 2}
  # 14's wrong program fails `assert find_Volume(10,8,6) == 240` by returning 480.
  wrong = {11: _WRONG, 12: _WRONG, 13: _WRONG,
           14: "def find_Volume(l, b, h):\n  return l * b * h\n"}
  num_samples = 2
  draws = collections.Counter()
  asked = []  # (seed, task id, prompt) of every sample drawn

  def answer(prompt, sampler):
    example = next(e for e in examples if prompt.startswith(e["prompt"]))
    task_id = example["task_id"]
    asked.append((sampler.seed, task_id, prompt))
    if prompt == example["prompt"]:
      draws[task_id] += 1
      rounds, done = control_after[task_id], -(-draws[task_id] // num_samples)
    else:
      rounds, done = fixed_after[task_id], prompt.count("\nFeedback: ")
    return code[task_id] if rounds is not None and done >= rounds else wrong[task_id]

  sandbox = SandboxConfig(workers=2)
  round0 = score_completions(
      examples, {e["id"]: [code[e["task_id"]] if fixed_after[e["task_id"]] == 0
                           else wrong[e["task_id"]]] * num_samples for e in examples},
      repair.round_dir(str(tmp_path), 0), sandbox)
  sampler = ScriptedSampler(answer, seed=7)
  meta = {"model": "scripted", "config": {"seed": 7, "num_samples": num_samples}}
  summary = repair.run_repair(sampler, examples, round0, str(tmp_path), rounds=3,
                              num_samples=num_samples, meta=meta, sandbox_config=sandbox)

  def curve(arm, *keys):
    return [tuple(r[arm][k] for k in keys) for r in summary["rounds"]]

  assert curve("feedback", "attempted", "solved_this_round", "solved_total", "samples") == [
      (4, 1, 1, 8), (3, 1, 2, 6), (2, 1, 3, 4), (1, 0, 3, 2)]
  assert curve("control", "attempted", "solved_this_round", "solved_total", "samples") == [
      (4, 1, 1, 8), (3, 0, 1, 6), (3, 1, 2, 6), (2, 1, 3, 4)]
  assert [r["gain"] for r in summary["rounds"]] == [0, 1, 1, 0]
  assert [r["gain_rate"] for r in summary["rounds"]] == [0, 0.25, 0.25, 0]
  assert curve("feedback", "solved_rate") == [(0.25,), (0.5,), (0.75,), (0.75,)]
  assert summary["solved_in_round"] == {"feedback": dict(zip(ids, [0, 1, 2, None])),
                                        "control": dict(zip(ids, [0, 3, None, 2]))}

  # Every round of each arm has its own seed; the control arm asks only original prompts,
  # the feedback arm only dialogs; each draws num_samples per problem it has not solved.
  by_seed = {}
  for seed, task_id, prompt in asked:
    by_seed.setdefault(seed, []).append((task_id, prompt))
  assert len(by_seed) == 6 and 7 not in by_seed and sampler.seed == 7
  original = {e["prompt"] for e in examples}
  arms = {"control": [], "feedback": []}
  for seed, drawn in by_seed.items():
    is_control = [p in original for _, p in drawn]
    assert len(set(is_control)) == 1
    counts = collections.Counter(t for t, _ in drawn)
    assert set(counts.values()) == {num_samples}
    arms["control" if is_control[0] else "feedback"].append(sorted(counts))
  assert arms == {"feedback": [[12, 13, 14], [13, 14], [14]],
                  "control": [[12, 13, 14], [12, 13, 14], [12, 13]]}
  assert all("\nFeedback: " in p for _, _, p in asked if p not in original)

  # The last unsolved problem's dialog holds three turns, each with what its call returned.
  with open(os.path.join(repair.round_dir(str(tmp_path), 3), repair.DIALOGS_FILE)) as f:
    (dialog,) = [json.loads(line) for line in f]
  assert dialog["id"] == ids[3] and dialog["prompt"].count(
      "\nFeedback: the code fails the test `assert find_Volume(10,8,6) == 240`: "
      "`find_Volume(10,8,6)` returned `480`, expected `240`. Please fix the code.\n") == 3
  with open(os.path.join(repair.round_dir(str(tmp_path), 1), repair.DIALOGS_FILE)) as f:
    first = {d["id"]: d["prompt"] for d in map(json.loads, f)}
  test0 = examples[2]["test_list"][0].strip()
  assert f"Feedback: the test `{test0}` raised NameError" in first[ids[2]]
  # Each round's results.json records the seed its samples were drawn with (in its config
  # too), and its own throughput and prompt fit, not round 0's.
  for arm in ("feedback", "control"):
    for index in (1, 2, 3):
      directory = repair.round_dir(str(tmp_path), index, arm)
      with open(os.path.join(directory, "results.json")) as f:
        results = json.load(f)
      recorded = results["meta"]
      assert (recorded["repair_round"], recorded["repair_arm"]) == (index, arm)
      seed = recorded["seed"]
      assert seed != 7 and recorded["config"] == {"seed": seed, "num_samples": num_samples}
      assert summary["rounds"][index][arm]["seed"] == seed
      drawn = collections.Counter(t for t, _ in by_seed[seed])
      assert drawn == {p["task_id"]: num_samples for p in results["per_problem"]}
      # Every dialog fits here (tests/test_prompt_fit.py has one that loses a shot).
      assert results["prompt_fit"] == {"shots_dropped": {}, "prompt_too_long": []}
      assert 0 < recorded["throughput"]["programs_executed"] <= results["num_samples"]
  assert summary["rounds"][0]["feedback"]["seed"] == 7
  for name in (repair.REPAIR_FILE, repair.REPAIR_REPORT, repair.REPAIR_PLOT):
    assert os.path.exists(os.path.join(tmp_path, name))
  table = (tmp_path / repair.REPAIR_REPORT).read_text()
  assert "| 2 | 2 | 3 (75.00%) | 3 | 2 (50.00%) | +1 (+25.00 pp) |" in table

  # Rerunning finds every round of both arms scored and every dialog stored: nothing is
  # sampled or probed again, and the summary is the same.
  calls = len(sampler.calls)
  monkeypatch.setattr(repair_probe, "run_programs", lambda *a: pytest.fail("probed again"))
  again = repair.run_repair(sampler, examples, round0, str(tmp_path), rounds=3,
                            num_samples=num_samples, meta=meta, sandbox_config=sandbox)
  assert len(sampler.calls) == calls and again == summary
  # Without the control arm the same workdir gives the feedback curve alone.
  alone = repair.run_repair(sampler, examples, round0, str(tmp_path), rounds=3,
                            num_samples=num_samples, meta=meta, sandbox_config=sandbox,
                            control=False)
  assert len(sampler.calls) == calls and alone["control"] is False
  assert [r["feedback"] for r in alone["rounds"]] == [r["feedback"] for r in summary["rounds"]]
  assert {(r["control"], r["gain"]) for r in alone["rounds"]} == {(None, None)}
  assert "No control arm was run" in (tmp_path / repair.REPAIR_REPORT).read_text()
