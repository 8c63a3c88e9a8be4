"""Samples files written by other systems: `{"task_id": int, "completion": str}` per line.

A completion is the text that would follow the prompt (for synthesis: the code after
`[BEGIN]`); anything from `[DONE]` on is ignored when it is scored. Several lines with the
same task id are several samples of that problem, kept in file order. MBPP execution
prediction has one problem per test assert, so its lines also need `"test_index": int`.

Everything is checked before anything runs, because a bad line found after an hour of
execution wastes the hour: the first malformed line or unknown task id raises
SamplesFileError naming the file and line.
"""
import collections
import json
from typing import Any, Sequence


class SamplesFileError(ValueError):
  """A samples file that cannot be scored as it stands."""


def problem_key(task: str, task_id: int, test_index: int | None = None) -> tuple[int, ...]:
  """What names one scored problem within a task: the task id, plus the test for execution."""
  return (task_id, test_index) if task == "mbpp_execution" else (task_id,)


def _example_key(example: dict[str, Any]) -> tuple[int, ...]:
  return problem_key(example["task"], example["task_id"], example.get("test_index"))


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not an id.


def decode_line(raw: bytes, where: str) -> str:
  """One line of a file read as bytes (so that a bad byte is reported with its line)."""
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise SamplesFileError(
        f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at position {e.start + 1} "
        "of the line); write the file as UTF-8") from None


def parse_json(text: str, where: str) -> Any:
  """json.loads with its failures as SamplesFileError naming `where` (file:line)."""
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise SamplesFileError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
  except RecursionError:  # the parser recurses once per nesting level
    raise SamplesFileError(f"{where}: JSON nested too deeply to parse (a sample is an object "
                           "of a few strings and numbers)") from None


def json_object(line: str, where: str) -> dict[str, Any]:
  """One JSON-lines record, which must be an object; `where` (file:line) names it otherwise."""
  record = parse_json(line, where)
  if not isinstance(record, dict):
    raise SamplesFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
  return record


def _parse_line(line: str, where: str, task: str) -> tuple[tuple[int, ...], str]:
  record = json_object(line, where)
  if not _is_int(record.get("task_id")):
    raise SamplesFileError(f"{where}: 'task_id' must be an integer, got "
                           f"{record.get('task_id')!r}")
  if not isinstance(record.get("completion"), str):
    raise SamplesFileError(f"{where}: 'completion' must be a string, got "
                           f"{type(record.get('completion')).__name__}")
  test_index = None
  if task == "mbpp_execution":
    test_index = record.get("test_index")
    if not _is_int(test_index):
      raise SamplesFileError(f"{where}: mbpp_execution samples need an integer 'test_index' "
                             f"(which test assert of the task), got {test_index!r}")
  return problem_key(task, record["task_id"], test_index), record["completion"]


def read_samples_file(path: str, examples: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
  """Completions by example id, validated against `examples` (one task, one split).

  Args:
    path: the JSONL samples file.
    examples: from data.tasks.load_task_examples; the task ids a line may name.

  Returns:
    {example id: [completion, ...]} in file order, for the examples that have samples.

  Raises:
    SamplesFileError: on the first malformed line or unknown task id, or an empty file.
  """
  if not examples:
    raise SamplesFileError("no examples to score samples against")
  task = examples[0]["task"]
  id_by_key = {_example_key(e): e["id"] for e in examples}
  completions: dict[str, list[str]] = collections.defaultdict(list)
  with open(path, "rb") as f:  # decoded line by line, so a bad byte is reported with its line
    for number, raw in enumerate(f, 1):
      where = f"{path}:{number}"
      line = decode_line(raw, where)
      if not line.strip():
        continue
      key, completion = _parse_line(line, where, task)
      if key not in id_by_key:
        known = sorted(k[0] for k in id_by_key)
        name = "task_id %d test_index %d" % key if len(key) == 2 else f"task_id {key[0]}"
        raise SamplesFileError(f"{where}: unknown {name}: not a problem of {task} "
                               f"(task ids {known[0]}..{known[-1]}, {len(id_by_key)} problems)")
      completions[id_by_key[key]].append(completion)
  if not completions:
    raise SamplesFileError(f"{path}: no samples")
  return dict(completions)
