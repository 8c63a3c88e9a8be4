"""The prompt formats of Austin et al. 2021, rendered exactly, plus a CLI to inspect them.

Three tasks, each a pure function of dataset records and a frozen options object:

* Synthesis (the paper's format). One example is
    `You are an expert Python programmer, and here is your task: {text} Your code should
    pass these tests:\\n\\n{tests}\\n[BEGIN]\\n{code}\\n[DONE]`
  with the tests one per line. A prompt is `num_shots` solved examples (task ids 2, 3, 4
  by default, or a seeded draw from the prompt split), each followed by `shot_separator`
  (default `\\n\\n`, so shots are separated by `[DONE]\\n\\n`), then the query example cut
  right after `[BEGIN]\\n`. The model's completion is cut at `[DONE]`. With
  `num_tests_shown=0` the sentence about tests is left out: `...task: {text}\\n[BEGIN]\\n`.
  The default prompt of every MBPP test problem is byte for byte the prompt of
  lm-evaluation-harness's `mbpp` task (tests/test_lm_eval_parity.py checks all 500).
* Execution prediction (our format; the paper shows none). One example is
    `# {text}\\n` (variants with the description), `[BEGIN]\\n{code}\\n[DONE]\\n`,
    the problem's other tests as worked examples, one `assert ...` per line (variants with
    tests), then `assert {call} == ` and, as the target, `{expected}\\n[DONE]`.
* MathQA-Python (our format, after trax's `# problem n0 = ...` input): one example is
    `# {problem} n0 = 5.0 n1 = 31.1\\n` then the program and `[DONE]`.

`[DONE]` ends every target so that one stop rule serves all tasks, few-shot or finetuned.
All three tasks separate shots with DEFAULT_SHOT_SEPARATOR unless told otherwise.
`python -m data.show_prompt --task synthesis --task_id 11` prints exactly what a model sees.
"""
import dataclasses
import hashlib
import json
import random
from typing import Any, Sequence

from data import execution_examples

PAPER_SHOT_TASK_IDS = (2, 3, 4)
# What follows each shot's `[DONE]`. The paper's README does not fix it; lm-evaluation-
# harness's `mbpp` task (the public harness with the paper's prompt, the one people compare
# numbers against) uses its default few-shot delimiter "\n\n", so we do too.
DEFAULT_SHOT_SEPARATOR = "\n\n"
BEGIN, DONE = "[BEGIN]", "[DONE]"
SYNTHESIS_HEADER = "You are an expert Python programmer, and here is your task: {text}"
SYNTHESIS_TESTS = " Your code should pass these tests:\n\n{tests}"
CODE_BLOCK = BEGIN + "\n{code}\n" + DONE + "\n"
EXECUTION_DESCRIPTION = "# {text}\n"
EXECUTION_WORKED_EXAMPLE = "{assert_source}\n"
EXECUTION_QUERY = "assert {call} == "
EXECUTION_TARGET = "{expected}\n" + DONE
MATHQA_QUERY = "# {text}\n"
MATHQA_TARGET = "{program}" + DONE  # programs end with a newline.
EXECUTION_VARIANTS = ("code", "code_description", "code_tests", "code_description_tests")


@dataclasses.dataclass(frozen=True)
class SynthesisPromptOptions:
  """How a synthesis prompt is rendered; the defaults are the paper's prompt.

  Attributes:
    num_shots: solved examples before the query (paper: 3; finetuning: 0).
    shot_task_ids: which prompt-split problems are the shots, in order; used when
      `shot_seed` is None.
    shot_seed: if set, the shots are a draw of `num_shots` problems from the prompt split
      (the query excluded) with `random.Random(shot_seed)`, as in the paper's study of
      15 random prompts.
    num_tests_shown: tests shown per problem: 0, 1 or 3 (the paper's ablation).
    shot_separator: text between one shot's `[DONE]` and the next example
      (DEFAULT_SHOT_SEPARATOR, lm-evaluation-harness's).
    normalize_line_endings: turn the dataset's `\\r\\n` into `\\n` in text, code and
      tests (False keeps the bytes as published, which is the paper-faithful reading).
  """
  num_shots: int = 3
  shot_task_ids: tuple[int, ...] = PAPER_SHOT_TASK_IDS
  shot_seed: int | None = None
  num_tests_shown: int = 3
  shot_separator: str = DEFAULT_SHOT_SEPARATOR
  normalize_line_endings: bool = False

  def __post_init__(self):
    if self.num_tests_shown not in (0, 1, 3):
      raise ValueError(f"num_tests_shown must be 0, 1 or 3, got {self.num_tests_shown}")
    if self.shot_seed is None and len(self.shot_task_ids) < self.num_shots:
      raise ValueError(f"{self.num_shots} shots need as many shot_task_ids, got "
                       f"{self.shot_task_ids}")


@dataclasses.dataclass(frozen=True)
class ExecutionPromptOptions:
  """How an execution-prediction prompt is rendered.

  Attributes:
    variant: one of EXECUTION_VARIANTS: code only; + the problem description; + the
      problem's other tests as worked examples; + both (the paper's four settings).
    num_shots: solved examples before the query (one per shot problem, its first test).
    shot_task_ids, shot_seed, shot_separator, normalize_line_endings: as for synthesis.
  """
  variant: str = "code"
  num_shots: int = 3
  shot_task_ids: tuple[int, ...] = PAPER_SHOT_TASK_IDS
  shot_seed: int | None = None
  shot_separator: str = DEFAULT_SHOT_SEPARATOR
  normalize_line_endings: bool = False

  def __post_init__(self):
    if self.variant not in EXECUTION_VARIANTS:
      raise ValueError(f"unknown variant {self.variant!r}; expected {EXECUTION_VARIANTS}")


@dataclasses.dataclass(frozen=True)
class MathqaPromptOptions:
  """How a MathQA-Python prompt is rendered.

  Attributes:
    num_shots: solved examples before the query (finetuning: 0).
    shot_indices: positions of the shots among the candidates the caller passes (the
      query itself removed); used when `shot_seed` is None.
    shot_seed: if set, the shots are a seeded draw from the candidates.
    shot_separator: text between one shot's `[DONE]` and the next example
      (DEFAULT_SHOT_SEPARATOR, as for synthesis).
  """
  num_shots: int = 0
  shot_indices: tuple[int, ...] = (0, 1, 2, 3)
  shot_seed: int | None = None
  shot_separator: str = DEFAULT_SHOT_SEPARATOR


PromptOptions = SynthesisPromptOptions | ExecutionPromptOptions | MathqaPromptOptions


@dataclasses.dataclass(frozen=True)
class Prompt:
  """A prompt in its parts: the rendered shots (each with its separator), then the query.

  `text` is what the model sees. `shot_ends` says where each shot ends in it, so that a
  prompt too long for a model's context can lose whole shots and never part of one
  (data/prompt_fit.py).
  """
  shots: tuple[str, ...]
  query: str

  @property
  def text(self) -> str:
    return "".join(self.shots) + self.query

  @property
  def shot_ends(self) -> tuple[int, ...]:
    ends, end = [], 0
    for shot in self.shots:
      end += len(shot)
      ends.append(end)
    return tuple(ends)


def template_fingerprint(options: PromptOptions) -> str:
  """sha256 of the template strings and options: logged per run to tell prompts apart."""
  description = {
      "kind": type(options).__name__,
      "options": dataclasses.asdict(options),
      "templates": [SYNTHESIS_HEADER, SYNTHESIS_TESTS, BEGIN, DONE, CODE_BLOCK,
                    EXECUTION_DESCRIPTION, EXECUTION_WORKED_EXAMPLE, EXECUTION_QUERY,
                    EXECUTION_TARGET, MATHQA_QUERY, MATHQA_TARGET],
  }
  return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def _normalized(text: str, normalize: bool) -> str:
  return text.replace("\r\n", "\n") if normalize else text


def problem_text(problem: dict[str, Any]) -> str:
  """The description: `text` in the full MBPP, `prompt` in the sanitized one."""
  return problem["text"] if "text" in problem else problem["prompt"]


def cut_at_done(completion: str) -> str:
  """The part of a completion before the first `[DONE]` (all of it if there is none)."""
  return completion.split(DONE, 1)[0]


def choose_shots(candidates: Sequence[dict[str, Any]], query_task_id: int | None,
                 num_shots: int, shot_task_ids: Sequence[int],
                 shot_seed: int | None) -> list[dict[str, Any]]:
  """Picks the shot problems: fixed ids, or a seeded draw; never the query itself.

  With fixed ids, a query that is one of them (tasks 2, 3, 4 of the prompt split) gets
  the others only, e.g. task 2 is prompted with tasks 3 and 4.
  """
  if num_shots == 0:
    return []
  by_id = {p["task_id"]: p for p in candidates}
  if shot_seed is None:
    ids = [i for i in shot_task_ids[:num_shots] if i != query_task_id]
    missing = [i for i in ids if i not in by_id]
    if missing:
      raise ValueError(f"shot task ids {missing} are not among the candidates "
                       f"{sorted(by_id)}")
    return [by_id[i] for i in ids]
  pool = sorted(i for i in by_id if i != query_task_id)
  if len(pool) < num_shots:
    raise ValueError(f"cannot draw {num_shots} shots from {len(pool)} problems")
  return [by_id[i] for i in random.Random(shot_seed).sample(pool, num_shots)]


# --- Synthesis ----------------------------------------------------------------------

def synthesis_query(problem: dict[str, Any], options: SynthesisPromptOptions) -> str:
  """One example up to and including `[BEGIN]\\n`."""
  norm = options.normalize_line_endings
  text = SYNTHESIS_HEADER.format(text=_normalized(problem_text(problem), norm))
  if options.num_tests_shown:
    tests = [_normalized(t, norm) for t in problem["test_list"][:options.num_tests_shown]]
    text += SYNTHESIS_TESTS.format(tests="\n".join(tests))
  return f"{text}\n{BEGIN}\n"


def synthesis_target(problem: dict[str, Any], options: SynthesisPromptOptions) -> str:
  """What the model should write after the query: the code, then `\\n[DONE]`."""
  return f"{_normalized(problem['code'], options.normalize_line_endings)}\n{DONE}"


def synthesis_prompt_parts(problem: dict[str, Any], shot_candidates: Sequence[dict[str, Any]],
                           options: SynthesisPromptOptions = SynthesisPromptOptions()) -> Prompt:
  """The few-shot prompt for `problem` in its parts; shots come from `shot_candidates`."""
  shots = choose_shots(shot_candidates, problem["task_id"], options.num_shots,
                       options.shot_task_ids, options.shot_seed)
  rendered = [synthesis_query(s, options) + synthesis_target(s, options)
              + options.shot_separator for s in shots]
  return Prompt(tuple(rendered), synthesis_query(problem, options))


def synthesis_prompt(problem: dict[str, Any], shot_candidates: Sequence[dict[str, Any]],
                     options: SynthesisPromptOptions = SynthesisPromptOptions()) -> str:
  """The full few-shot prompt for `problem`; shots come from `shot_candidates`."""
  return synthesis_prompt_parts(problem, shot_candidates, options).text


# --- Execution prediction -------------------------------------------------------------

def _execution_example(problem: dict[str, Any], case: execution_examples.ExecutionCase,
                       worked: Sequence[execution_examples.ExecutionCase],
                       options: ExecutionPromptOptions) -> str:
  """[description] code block [worked examples] query, per the variant."""
  norm = options.normalize_line_endings
  parts = []
  if "description" in options.variant:
    parts.append(EXECUTION_DESCRIPTION.format(text=_normalized(problem_text(problem), norm)))
  parts.append(CODE_BLOCK.format(code=_normalized(problem["code"], norm)))
  if "tests" in options.variant:
    parts += [EXECUTION_WORKED_EXAMPLE.format(assert_source=w.assert_source)
              for w in worked]
  parts.append(EXECUTION_QUERY.format(call=case.call))
  return "".join(parts)


def execution_target(case: execution_examples.ExecutionCase) -> str:
  return EXECUTION_TARGET.format(expected=case.expected)


def execution_query(problem: dict[str, Any], case: execution_examples.ExecutionCase,
                    options: ExecutionPromptOptions) -> str:
  """One unsolved example: the worked examples are the problem's other parsed tests."""
  cases, _ = execution_examples.cases_from_problem(problem)
  worked = [c for c in cases if c.test_index != case.test_index]
  return _execution_example(problem, case, worked, options)


def execution_prompt(problem: dict[str, Any], case: execution_examples.ExecutionCase,
                     shot_candidates: Sequence[dict[str, Any]],
                     options: ExecutionPromptOptions = ExecutionPromptOptions()) -> str:
  """Few-shot prompt asking for the value of `case.call`; each shot asks its first test."""
  return execution_prompt_parts(problem, case, shot_candidates, options).text


def execution_prompt_parts(problem: dict[str, Any], case: execution_examples.ExecutionCase,
                           shot_candidates: Sequence[dict[str, Any]],
                           options: ExecutionPromptOptions = ExecutionPromptOptions()
                           ) -> Prompt:
  """execution_prompt in its parts."""
  shots = choose_shots(shot_candidates, problem["task_id"], options.num_shots,
                       options.shot_task_ids, options.shot_seed)
  rendered = []
  for shot in shots:
    shot_cases, _ = execution_examples.cases_from_problem(shot)
    if not shot_cases:
      raise ValueError(f"shot task {shot['task_id']} has no parseable test")
    rendered.append(execution_query(shot, shot_cases[0], options)
                    + execution_target(shot_cases[0]) + options.shot_separator)
  return Prompt(tuple(rendered), execution_query(problem, case, options))


# --- MathQA-Python --------------------------------------------------------------------

def _mathqa_example(problem: dict[str, Any]) -> str:
  return MATHQA_QUERY.format(text=problem["text"])


def mathqa_target(problem: dict[str, Any]) -> str:
  """The program (which ends with a newline), then `[DONE]`."""
  return MATHQA_TARGET.format(program=problem["program"])


def mathqa_prompt(problem: dict[str, Any], shot_candidates: Sequence[dict[str, Any]] = (),
                  options: MathqaPromptOptions = MathqaPromptOptions()) -> str:
  return mathqa_prompt_parts(problem, shot_candidates, options).text


def mathqa_prompt_parts(problem: dict[str, Any], shot_candidates: Sequence[dict[str, Any]] = (),
                        options: MathqaPromptOptions = MathqaPromptOptions()) -> Prompt:
  # The query is never its own shot, even when shots come from the query's split.
  pool = [c for c in shot_candidates if c["text"] != problem["text"]]
  if options.num_shots == 0:
    shots = []
  elif options.shot_seed is None:
    shots = [pool[i] for i in options.shot_indices[:options.num_shots]]
  else:
    shots = random.Random(options.shot_seed).sample(pool, options.num_shots)
  rendered = [_mathqa_example(s) + mathqa_target(s) + options.shot_separator for s in shots]
  return Prompt(tuple(rendered), _mathqa_example(problem))
