"""MBPP (Austin et al. 2021) as a TFDS builder writing array_record, plus a plain loader.

Two configs:
  * `full`: the 974 problems of `mbpp.jsonl`, every field kept (`text`, `code`,
    `test_list`, `test_setup_code`, `challenge_test_list`).
  * `sanitized`: the 427 hand-checked problems of `sanitized-mbpp.json` (`prompt`, `code`,
    `test_list`, `test_imports`, `source_file`).

Both are split by task id exactly as the paper and the dataset card use them:
`prompt` 1-10, `test` 11-510, `validation` 511-600, `train` 601-974 (sanitized: whichever of
its problems fall in each range: 7 / 257 / 43 / 120).

The source files are read from `manual_dir` when they are there (tests and CI use
`../shared/data/mbpp`) and downloaded from the pinned google-research commit otherwise; in
both cases their sha256 must match, because upstream has revised the file (tasks 341, 596
and 642 changed) and a different revision changes the scores.
"""
import json
import pathlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data import source_files
from data import tfds_builders

# The commit the shared copies were verified against (see shared/data/README.md).
_UPSTREAM = ("https://raw.githubusercontent.com/google-research/google-research/"
             "30adf0ec5f35f9609c2f1d896005e184195d9146/mbpp/")
FULL_FILE = source_files.SourceFile(
    name="mbpp.jsonl", url=_UPSTREAM + "mbpp.jsonl",
    sha256="ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f")
SANITIZED_FILE = source_files.SourceFile(
    name="sanitized-mbpp.json", url=_UPSTREAM + "sanitized-mbpp.json",
    sha256="ca95deaa9a01ef0a6f439f88bcf0dd3db3563d22f22aad6cae04ebb9a8d8c8e9")

# Inclusive task-id ranges of each split.
SPLIT_TASK_IDS: dict[str, tuple[int, int]] = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}

FULL_FIELDS = ("task_id", "text", "code", "test_list", "test_setup_code",
               "challenge_test_list")
SANITIZED_FIELDS = ("task_id", "prompt", "code", "test_list", "test_imports",
                    "source_file")
_LIST_FIELDS = ("test_list", "challenge_test_list", "test_imports")


def split_of_task_id(task_id: int) -> str:
  for split, (first, last) in SPLIT_TASK_IDS.items():
    if first <= task_id <= last:
      return split
  raise ValueError(f"MBPP task id {task_id} is outside 1..974")


def _check_record(record: Any, fields: tuple[str, ...], where: str) -> dict[str, Any]:
  if not isinstance(record, dict):
    raise source_files.DatasetFileError(f"{where}: expected a JSON object, got "
                                        f"{type(record).__name__}")
  missing = [f for f in fields if f not in record]
  if missing:
    raise source_files.DatasetFileError(
        f"{where}: missing field(s) {missing}; the file is not an official MBPP file. "
        "Replace it with the official one.")
  for f in fields:
    want = int if f == "task_id" else list if f in _LIST_FIELDS else str
    if not isinstance(record[f], want):
      raise source_files.DatasetFileError(
          f"{where}: field {f!r} should be {want.__name__}, got {type(record[f]).__name__}")
  return {f: record[f] for f in fields}


def read_full_file(path: pathlib.Path | str) -> list[dict[str, Any]]:
  """Parses `mbpp.jsonl` (one JSON object per line) into records with FULL_FIELDS."""
  records = []
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      where = f"{path}:{line_number}"
      try:
        raw = json.loads(line)
      except json.JSONDecodeError as e:
        raise source_files.DatasetFileError(
            f"{where}: malformed JSON line ({e}). Replace the file with the official "
            f"{FULL_FILE.url}") from e
      records.append(_check_record(raw, FULL_FIELDS, where))
  return records


def read_sanitized_file(path: pathlib.Path | str) -> list[dict[str, Any]]:
  """Parses `sanitized-mbpp.json` (one JSON list) into records with SANITIZED_FIELDS."""
  try:
    raw = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise source_files.DatasetFileError(
        f"{path}: malformed JSON ({e}). Replace the file with the official "
        f"{SANITIZED_FILE.url}") from e
  if not isinstance(raw, list):
    raise source_files.DatasetFileError(f"{path}: expected a JSON list of problems")
  return [_check_record(r, SANITIZED_FIELDS, f"{path}[{i}]") for i, r in enumerate(raw)]


class MbppConfig(tfds.core.BuilderConfig):
  """`full` or `sanitized`."""

  def __init__(self, *, source: source_files.SourceFile, fields: tuple[str, ...],
               **kwargs):
    super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
    self.source = source
    self.fields = fields


class Mbpp(tfds_builders.OwnCodePath, tfds.core.GeneratorBasedBuilder):
  """Mostly Basic Python Problems, split by task id as in the paper."""

  BUILDER_CONFIGS = [
      MbppConfig(name="full", source=FULL_FILE, fields=FULL_FIELDS,
                 description="All 974 problems of mbpp.jsonl."),
      MbppConfig(name="sanitized", source=SANITIZED_FILE, fields=SANITIZED_FIELDS,
                 description="The 427 problems of sanitized-mbpp.json."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Put the official mbpp.jsonl and/or sanitized-mbpp.json (from "
      f"{_UPSTREAM}) in the manual directory to build offline; otherwise they are "
      "downloaded.")

  def _info(self) -> tfds.core.DatasetInfo:
    features = {}
    for field in self.builder_config.fields:
      if field == "task_id":
        features[field] = np.int32
      elif field in _LIST_FIELDS:
        features[field] = tfds.features.Sequence(tfds.features.Text())
      else:
        features[field] = tfds.features.Text()
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(features),
        homepage="https://github.com/google-research/google-research/tree/master/mbpp",
        citation="Austin et al. 2021, Program Synthesis with Large Language Models.",
        license="CC BY 4.0",
    )

  def _source_path(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    source = self.builder_config.source
    local = source_files.find_local(tfds_builders.manual_dir(dl_manager), source.name)
    if local is None:
      local = source_files.download_or_fail(
          lambda url: source_files.fetch_once(url, dl_manager.download_dir), source.url,
          source.name,
          f"put the official {source.name} in a directory (e.g. ../shared/data/mbpp) "
          "and pass it as manual_dir (train.py / eval.py: --config.data.manual_dir=DIR)")
    return source_files.verify(local, source)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    path = self._source_path(dl_manager)
    if self.builder_config.name == "full":
      records = read_full_file(path)
    else:
      records = read_sanitized_file(path)
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLIT_TASK_IDS}
    for record in records:
      by_split[split_of_task_id(record["task_id"])].append(record)
    return {split: self._generate_examples(rs) for split, rs in by_split.items()}

  def _generate_examples(self, records: list[dict[str, Any]]
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    for record in records:
      yield record["task_id"], record


def load(split: str, *, config: str = "full", data_dir: str | None = None,
         manual_dir: str | None = None) -> list[dict[str, Any]]:
  """Builds (once) and reads one split as plain Python dicts, ordered by task id.

  Args:
    split: "prompt", "test", "validation" or "train".
    config: "full" or "sanitized".
    data_dir: TFDS data directory (None: TFDS's default).
    manual_dir: directory holding the official file(s); None downloads them.
  """
  if split not in SPLIT_TASK_IDS:
    raise ValueError(f"unknown MBPP split {split!r}; expected one of {list(SPLIT_TASK_IDS)}")
  builder = Mbpp(config=config, data_dir=data_dir, file_format="array_record")
  return tfds_builders.read_split(builder, split, manual_dir, lambda r: r["task_id"])
