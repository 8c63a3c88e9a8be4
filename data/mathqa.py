"""MathQA-Python (Austin et al. 2021) as a TFDS builder writing array_record.

Converts the official MathQA release (Amini et al. 2019) with `data.mathqa_convert`:
splits `train`, `validation`, `test` and `challenge_test` come from MathQA's `train.json`,
`dev.json`, `test.json` and `challenge_test.json`. Configs:
  * `python`: all four splits (needs `train.json`).
  * `python_eval_splits`: validation, test and challenge_test only, for places (like this
    project's CI) that have the evaluation files but not the 23 MB `train.json`.
  * `trax`, `trax_eval_splits`: the same splits converted the way trax's generator did it
    (`compat="trax"`, data/mathqa_trax.py), which made the paper's data: its programs and
    drops, and the paper's split sizes (validation 2,822, test 1,883).

Raw files are read from `manual_dir` when present (`../shared/data/mathqa/raw`, which lacks
`train.json`) and otherwise taken from the official `MathQA.zip`; every raw file is checked
against a pinned digest before use.
"""
import json
import pathlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data import mathqa_convert
from data import source_files
from data import tfds_builders

ARCHIVE_URL = "https://math-qa.github.io/data/MathQA.zip"
RAW_FILES = {
    # Upstream publishes no checksum of train.json, but both public git copies of it are
    # the same blob, so its `git hash-object` pins the bytes.
    "train": source_files.SourceFile(
        name="train.json", url=ARCHIVE_URL,
        git_blob_sha1="76a236ea303f50cfb24042806c3269268990d0ff"),
    "validation": source_files.SourceFile(
        name="dev.json", url=ARCHIVE_URL,
        sha256="aeca12424fc8f32d0e35c09b7738986a446c12f110c8071f3cc8913712f04bf3"),
    "test": source_files.SourceFile(
        name="test.json", url=ARCHIVE_URL,
        sha256="dfe7bc4691caf26842ccd4cf14e8f978327bab4f2989e0b076a4e6b38a9371d1"),
    "challenge_test": source_files.SourceFile(
        name="challenge_test.json", url=ARCHIVE_URL,
        sha256="76cfe1091d19c61a95abc8cca23dfde9e1690bdb6a0b42a35453193483253579"),
}
# Published sizes of the paper's MathQA-Python; the `trax` configs reproduce them (tests).
PAPER_SPLIT_SIZES = {"train": 19209, "validation": 2822, "test": 1883}

_TEXT_FIELDS = ("problem", "text", "program", "options", "correct", "linear_formula",
                "annotated_formula", "rationale", "category")


def read_raw_file(path: pathlib.Path | str) -> list[dict[str, Any]]:
  try:
    raw = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise source_files.DatasetFileError(
        f"{path}: malformed JSON ({e}). Replace it with the file from {ARCHIVE_URL}.") from e
  if not isinstance(raw, list):
    raise source_files.DatasetFileError(f"{path}: expected a JSON list of problems")
  return raw


def convert_raw_file(path: pathlib.Path | str, *, relative_tolerance: float =
                     mathqa_convert.DEFAULT_RELATIVE_TOLERANCE, compat: str = "faithful"
                     ) -> mathqa_convert.ConversionResult:
  mathqa_convert.check_compat(compat)  # a caller's error, not the file's (below).
  try:
    return mathqa_convert.convert_split(read_raw_file(path),
                                        relative_tolerance=relative_tolerance,
                                        where=str(path), compat=compat)
  except ValueError as e:
    raise source_files.DatasetFileError(str(e)) from e


class MathqaPythonConfig(tfds.core.BuilderConfig):
  """Which raw splits to convert, and how (a mathqa_convert.COMPAT_MODES entry)."""

  def __init__(self, *, splits: tuple[str, ...], compat: str = "faithful", **kwargs):
    super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
    self.splits = splits
    self.compat = compat


_ALL_SPLITS = ("train", "validation", "test", "challenge_test")
_EVAL_SPLITS = ("validation", "test", "challenge_test")
# TFDS config per (compat, whether train.json is needed).
CONFIG_NAMES = {("faithful", True): "python", ("faithful", False): "python_eval_splits",
                ("trax", True): "trax", ("trax", False): "trax_eval_splits"}


class MathqaPython(tfds_builders.OwnCodePath, tfds.core.GeneratorBasedBuilder):
  """MathQA problems with straight-line Python programs that compute their answers."""

  BUILDER_CONFIGS = [
      MathqaPythonConfig(name="python", splits=_ALL_SPLITS,
                         description="All splits; needs train.json."),
      MathqaPythonConfig(name="python_eval_splits", splits=_EVAL_SPLITS,
                         description="Evaluation splits only; train.json not needed."),
      MathqaPythonConfig(name="trax", splits=_ALL_SPLITS, compat="trax",
                         description="All splits as trax made them (the paper's data); "
                                     "needs train.json."),
      MathqaPythonConfig(name="trax_eval_splits", splits=_EVAL_SPLITS, compat="trax",
                         description="Evaluation splits as trax made them (the paper's "
                                     "data); train.json not needed."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Optional. Extract {ARCHIVE_URL} (train.json, dev.json, test.json, "
      "challenge_test.json) into the manual directory to build offline.")

  def _info(self) -> tfds.core.DatasetInfo:
    features = {f: tfds.features.Text() for f in _TEXT_FIELDS}
    features.update({
        "source_index": np.int32,  # position in the raw MathQA file: a stable id.
        "numbers": tfds.features.Sequence(np.float64),
        "answer": np.float64,  # value of the correct option.
        "program_answer": np.float64,  # what the program computes (within tolerance).
    })
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict(features),
        homepage="https://math-qa.github.io/",
        citation="Amini et al. 2019, MathQA; Austin et al. 2021, Program Synthesis with "
                 "Large Language Models.")

  def _raw_paths(self, dl_manager: tfds.download.DownloadManager
                 ) -> dict[str, pathlib.Path]:
    manual_dir = tfds_builders.manual_dir(dl_manager)
    paths = {s: source_files.find_local(manual_dir, RAW_FILES[s].name)
             for s in self.builder_config.splits}
    missing = [RAW_FILES[s].name for s, p in paths.items() if p is None]
    if missing:
      hint = (f"put the extracted MathQA files in a directory and pass it as manual_dir "
              f"(train.json must have git blob id {RAW_FILES['train'].git_blob_sha1}; "
              "check with `git hash-object train.json`), or build config "
              f"'{CONFIG_NAMES[(self.builder_config.compat, False)]}', which needs no "
              "train.json")
      extracted = source_files.download_or_fail(
          lambda url: dl_manager.extract(
              source_files.fetch_once(url, dl_manager.download_dir)), ARCHIVE_URL,
          f"{', '.join(missing)} (looked in manual_dir={manual_dir})", hint)
      for split, path in paths.items():
        if path is None:
          paths[split] = source_files.find_local(extracted, RAW_FILES[split].name)
          if paths[split] is None:
            raise source_files.DatasetFileError(
                f"{RAW_FILES[split].name} is in neither {manual_dir} nor {ARCHIVE_URL}.")
    return {s: source_files.verify(p, RAW_FILES[s]) for s, p in paths.items()}

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    return {split: self._generate_examples(path)
            for split, path in self._raw_paths(dl_manager).items()}

  def _generate_examples(self, path: pathlib.Path
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    result = convert_raw_file(path, compat=self.builder_config.compat)
    for problem in result.problems:
      yield problem["source_index"], problem


def load(split: str, *, compat: str = "faithful", config: str | None = None,
         data_dir: str | None = None, manual_dir: str | None = None
         ) -> list[dict[str, Any]]:
  """Builds (once) and reads one split as plain dicts ordered by `source_index`.

  Args:
    split: "train", "validation", "test" or "challenge_test".
    compat: "faithful" (operations as MathQA means them) or "trax" (the paper's data, as
      trax's generator made it); see data/mathqa_convert.py.
    config: a TFDS config name; None picks the one of `compat` with train.json for train
      ("python", "trax") and the one without otherwise ("python_eval_splits",
      "trax_eval_splits"), so that evaluation never needs train.json.
    data_dir: TFDS data directory (None: TFDS's default).
    manual_dir: directory with the extracted MathQA files; None downloads MathQA.zip.
  """
  if split not in RAW_FILES:
    raise ValueError(f"unknown MathQA split {split!r}; expected one of {list(RAW_FILES)}")
  mathqa_convert.check_compat(compat)
  if config is None:
    config = CONFIG_NAMES[(compat, split == "train")]
  builder = MathqaPython(config=config, data_dir=data_dir, file_format="array_record")
  return tfds_builders.read_split(builder, split, manual_dir, lambda r: r["source_index"])
