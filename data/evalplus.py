"""EvalPlus's HumanEval+ (v0.1.10) and MBPP+ (v0.2.0): the released files, pinned by sha256.

Each file is read from `manual_dir` when it is there (tests and CI use `../shared/data/evalplus`)
and otherwise downloaded once from the commit of EvalPlus's release repository that holds
the released bytes (see ../shared/data/README.md) into `data_dir` (default
`~/tensorflow_datasets`)/downloads/evalplus. These are the versions evalplus 0.3.x scores
by default.

A record keeps `task_id`, `prompt`, `entry_point`, `canonical_solution`, `atol` and the inputs
(`base_input`, `plus_input`) as parsed JSON; MBPP+'s inputs are retyped (tuples, sets,
complex) inside the sandboxed reference program (data/evalplus_harness.py), as EvalPlus retypes
them after loading. The prompt is EvalPlus's direct-completion prompt, `prompt.strip() + "\\n"`
(evalplus/codegen.py), and sampled completions stop where EvalPlus's do (STOP_SEQUENCES).
"""
import gzip
import json
import os
import pathlib
from typing import Any

from data import source_files

HUMANEVAL_PLUS = source_files.SourceFile(
    name="HumanEvalPlus-v0.1.10.jsonl.gz",
    url=("https://raw.githubusercontent.com/evalplus/humanevalplus_release/"
         "200defce9e3429d28ca215b6dd061c0f7f31c18b/HumanEvalPlus.jsonl.gz"),
    sha256="272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101")
MBPP_PLUS = source_files.SourceFile(
    name="MbppPlus-v0.2.0.jsonl.gz",
    url=("https://raw.githubusercontent.com/evalplus/mbppplus_release/"
         "64fc4195b858a17cdfdb3324f0baf37939144e14/MbppPlus.jsonl.gz"),
    sha256="af43697e8791c4c149bdfd6b489d8b5412507551ac20e28a439f650b8225db63")
# task -> (file, EvalPlus's dataset name, task id prefix)
DATASETS = {"humaneval_plus": (HUMANEVAL_PLUS, "humaneval", "HumanEval/"),
            "mbpp_plus": (MBPP_PLUS, "mbpp", "Mbpp/")}
FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "atol", "base_input",
          "plus_input")
SPLITS = ("test",)
# evalplus/provider/utility.py: EOS (less the tokenizers' end tokens) plus
# extra_eos_for_direct_completion(dataset).
_COMMON_STOPS = ("\nif __name__", "\ndef main(", "\nprint(")
STOP_SEQUENCES = {"humaneval": _COMMON_STOPS + ("\ndef ", "\nclass ", "\nimport ", "\nfrom ",
                                                "\nassert "),
                  "mbpp": _COMMON_STOPS + ('\n"""', "\nassert")}


def _download_dir(data_dir: str | None) -> pathlib.Path:
  root = data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
  return pathlib.Path(root) / "downloads" / "evalplus"


def _fetch(url: str, source: source_files.SourceFile, data_dir: str | None) -> pathlib.Path:
  # The release repositories name both files without their version; keep ours.
  path = source_files.fetch_once(url, _download_dir(data_dir))
  return path.replace(path.with_name(source.name))


def source_path(source: source_files.SourceFile, data_dir: str | None = None,
                manual_dir: str | None = None) -> pathlib.Path:
  local = source_files.find_local(manual_dir, source.name)
  if local is None:
    local = source_files.find_local(_download_dir(data_dir), source.name)
  if local is None:
    local = source_files.download_or_fail(
        lambda url: _fetch(url, source, data_dir), source.url, source.name,
        f"put the official {source.name} in a directory (e.g. ../shared/data/evalplus) and "
        "pass it as manual_dir (eval.py: --config.data.manual_dir=DIR)")
  return source_files.verify(local, source)


def load(task: str, split: str = "test", *, data_dir: str | None = None,
         manual_dir: str | None = None) -> list[dict[str, Any]]:
  """The problems of `task` ("humaneval_plus" or "mbpp_plus") in task-id order."""
  if split not in SPLITS:
    raise ValueError(f"unknown {task} split {split!r}; it has only {list(SPLITS)}")
  source, dataset, prefix = DATASETS[task]
  path = source_path(source, data_dir, manual_dir)
  records = []
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      record = json.loads(line)
      missing = [k for k in FIELDS if k not in record]
      if missing or not record["task_id"].startswith(prefix):
        raise source_files.DatasetFileError(
            f"{path}:{line_number}: not a {task} record (missing {missing}); replace the file "
            f"with {source.url}")
      record = {k: record[k] for k in FIELDS}
      record["number"] = int(record["task_id"][len(prefix):])
      record["dataset"] = dataset
      records.append(record)
  return sorted(records, key=lambda r: r["number"])


def evalplus_prompt(problem: dict[str, Any]) -> str:
  """EvalPlus's direct-completion prompt (evalplus/codegen.py)."""
  return problem["prompt"].strip() + "\n"
