"""TFDS builder `python_code_corpus`: the Python files of a local directory, for pretraining.

By default the source is the running interpreter's standard library, so every machine has
a code corpus without downloading anything. Point `source_dir` at any tree of `.py` files
to use your own code instead; each source directory gets its own builder config (and so its
own prepared copy under `data_dir`).

Skipped: test suites (any path component named `test`, `tests` or `idle_test`), installed
packages (`site-packages`, `dist-packages`), byte-code caches, files that are not valid
UTF-8, empty files and files larger than `max_file_bytes`.

The train/validation split is a pure function of each file's path relative to the source
directory (SHA-256 of the POSIX path), so it is the same on every machine and does not move
when files are added or removed elsewhere. (Exception, for tiny trees where the hash picks
no validation file: see `validation_paths`.)

Features: `path` (relative POSIX path, text) and `text` (file contents, text).
`load_code_corpus` returns records in the task shape {"prompt": "", "target": text} that the
input pipeline consumes; pretraining puts the whole file under the loss.
"""

from collections.abc import Iterable, Iterator, Sequence
import dataclasses
import hashlib
import os
import pathlib
import sys
import sysconfig
from typing import Any

import tensorflow_datasets as tfds

from data.source_files import DatasetFileError

_SKIPPED_DIR_NAMES = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)
_DEFAULT_MAX_FILE_BYTES = 200_000
# Percent of files, by path hash, that form the validation split.
_DEFAULT_VALIDATION_PERCENT = 2


def stdlib_dir() -> pathlib.Path:
  """The running interpreter's standard library directory."""
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def _path_hash(relative_path: str) -> int:
  digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big")


def is_validation_path(relative_path: str, validation_percent: int) -> bool:
  """Whether a file's hash puts it in the validation split; stable across machines."""
  return _path_hash(relative_path) % 100 < validation_percent


def validation_paths(relative_paths: Iterable[str], validation_percent: int) -> set[str]:
  """The validation files among `relative_paths`: those `is_validation_path` selects.

  TFDS cannot write an empty split, so when the hash selects no file of a small tree (and
  there are at least two files), the one with the smallest hash becomes the validation
  split: still a pure function of the set of paths.
  """
  relative_paths = list(relative_paths)
  selected = {p for p in relative_paths if is_validation_path(p, validation_percent)}
  if not selected and len(relative_paths) >= 2 and validation_percent > 0:
    selected = {min(relative_paths, key=_path_hash)}
  return selected


def iter_source_files(
    source_dir: str | os.PathLike[str], max_file_bytes: int = _DEFAULT_MAX_FILE_BYTES
) -> Iterator[tuple[str, str]]:
  """Yields (relative POSIX path, text) of the usable `.py` files under `source_dir`, sorted."""
  root = pathlib.Path(source_dir)
  for path in sorted(root.rglob("*.py")):
    relative = path.relative_to(root)
    if _SKIPPED_DIR_NAMES.intersection(relative.parts[:-1]) or not path.is_file():
      continue
    size = path.stat().st_size
    if size == 0 or size > max_file_bytes:
      continue
    try:
      text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
      continue
    yield relative.as_posix(), text


@dataclasses.dataclass
class CodeCorpusConfig(tfds.core.BuilderConfig):
  """Which directory to read; None means the running interpreter's standard library."""

  source_dir: str | None = None
  max_file_bytes: int = _DEFAULT_MAX_FILE_BYTES
  validation_percent: int = _DEFAULT_VALIDATION_PERCENT


def _stdlib_config_name() -> str:
  # Different Python versions ship different standard libraries.
  return f"stdlib_py{sys.version_info.major}{sys.version_info.minor}"


def config_for_source_dir(source_dir: str | os.PathLike[str] | None) -> CodeCorpusConfig:
  """A builder config whose name identifies `source_dir` (None: the standard library)."""
  if source_dir is None:
    return CodeCorpusConfig(name=_stdlib_config_name(), description="Python stdlib.")
  absolute = os.path.abspath(os.fspath(source_dir))
  path_hash = hashlib.sha256(absolute.encode("utf-8")).hexdigest()[:12]
  return CodeCorpusConfig(
      name=f"dir_{path_hash}", description=f"Python files under {absolute}.",
      source_dir=absolute,
  )


class PythonCodeCorpus(tfds.core.GeneratorBasedBuilder):
  """Python source files of a local directory (default: the standard library)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [config_for_source_dir(None)]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    # TFDS 4.9.10 locates a builder's package files (url checksums) through the
    # `importlib_resources` backport, which it only installs for Python < 3.9, so any builder
    # defined in a package fails on import. This builder downloads nothing and needs no
    # checksums file, so it has no code path to look up.
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly, not dataset_info_from_configs: the latter looks for metadata
    # files (citations, tags) next to this module, which a builder living in a code package
    # does not have.
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(
            {"path": tfds.features.Text(), "text": tfds.features.Text()}
        ),
    )

  def _source_dir(self) -> pathlib.Path:
    config: CodeCorpusConfig = self.builder_config
    return pathlib.Path(config.source_dir) if config.source_dir else stdlib_dir()

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    del dl_manager  # Everything is local.
    source_dir = self._source_dir()
    if not source_dir.is_dir():
      raise DatasetFileError(f"code corpus source directory {source_dir} does not exist (or "
                             "is not a directory): point --config.data.source_dir at a "
                             "directory of Python files, or leave it empty for the standard "
                             "library")
    config: CodeCorpusConfig = self.builder_config
    # A first pass (reading every file, since only readable files count) fixes the split.
    relative_paths = [p for p, _ in iter_source_files(source_dir, config.max_file_bytes)]
    validation = validation_paths(relative_paths, config.validation_percent)
    if not validation or len(validation) == len(relative_paths):
      # TFDS cannot write an empty split (its error is a 100-line trace ending in "No
      # examples were yielded").
      raise DatasetFileError(
          f"code corpus source directory {source_dir} has {len(relative_paths)} usable .py "
          f"files (non-empty, UTF-8, at most {config.max_file_bytes} bytes, outside "
          f"{'/'.join(sorted(_SKIPPED_DIR_NAMES))}); the train and validation splits need at "
          "least 2: point --config.data.source_dir at a directory of Python files")
    return {
        "train": self._generate_examples(source_dir, validation, in_validation=False),
        "validation": self._generate_examples(source_dir, validation, in_validation=True),
    }

  def _generate_examples(
      self, source_dir: pathlib.Path, validation: set[str], in_validation: bool
  ) -> Iterator[tuple[str, dict[str, str]]]:
    config: CodeCorpusConfig = self.builder_config
    for relative_path, text in iter_source_files(source_dir, config.max_file_bytes):
      if (relative_path in validation) == in_validation:
        yield relative_path, {"path": relative_path, "text": text}


class CodeCorpusSource(Sequence):
  """Random-access records {"prompt": "", "target": file text, "path": relative path}.

  Wraps a TFDS array_record data source, decoding its bytes to str; picklable, so grain
  worker processes can use it.
  """

  def __init__(self, data_source: Sequence[dict[str, Any]]):
    self._data_source = data_source

  def __len__(self) -> int:
    return len(self._data_source)

  def __getitem__(self, index: int) -> dict[str, str]:  # type: ignore[override]
    if not 0 <= index < len(self):
      raise IndexError(index)
    record = self._data_source[index]
    return {
        "prompt": "",
        "target": _as_str(record["text"]),
        "path": _as_str(record["path"]),
    }


def _as_str(value: bytes | str) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else value


def code_corpus_builder(
    data_dir: str | os.PathLike[str] | None = None,
    source_dir: str | os.PathLike[str] | None = None,
) -> PythonCodeCorpus:
  """The builder for `source_dir` (None: the standard library), writing under `data_dir`.

  `data_dir` None means TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
  """
  # The predefined stdlib config must be named, not rebuilt: TFDS rejects a new config
  # object that shares a predefined one's name.
  config = config_for_source_dir(source_dir)
  return PythonCodeCorpus(
      data_dir=None if data_dir is None else os.fspath(data_dir),
      config=config.name if source_dir is None else config,
      file_format="array_record",
  )


def load_code_corpus(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    source_dir: str | os.PathLike[str] | None = None,
) -> CodeCorpusSource:
  """Prepares the corpus if needed and returns `split` ("train"/"validation") as records.

  Preparing the whole standard library takes well under a minute; later calls reuse it.
  """
  builder = code_corpus_builder(data_dir, source_dir)
  builder.download_and_prepare()
  return CodeCorpusSource(builder.as_data_source(split=split))
