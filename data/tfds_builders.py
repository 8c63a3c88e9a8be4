"""What this project's TFDS builders (data/mbpp.py, data/mathqa.py) share.

* Where a builder's code lives: TFDS 4.9.10 locates a builder's package files (its url
  checksums) through the `importlib_resources` backport, which it installs only for Python
  < 3.9, so a builder defined in a package fails on import unless it names its file itself.
* Their manual directory, or None: TFDS raises AssertionError for an absent or empty one.
* Reading a split back as plain Python values (str, int, float, lists), in a stable order.
"""
import pathlib
import sys
from typing import Any, Callable

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils


class OwnCodePath:
  """Mixin for a GeneratorBasedBuilder: its code path is its module's file (see above)."""

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(sys.modules[cls.__module__].__file__)


def manual_dir(dl_manager: tfds.download.DownloadManager) -> pathlib.Path | None:
  try:
    return dl_manager.manual_dir
  except AssertionError:  # TFDS's way of saying the manual dir is absent or empty.
    return None


def decoded(value: Any) -> Any:
  """A TFDS feature value as plain Python: bytes -> str, numpy scalars/arrays -> numbers/lists."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, (list, tuple, np.ndarray)):
    return [decoded(v) for v in value]
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.floating):
    return float(value)
  return value


def read_split(builder: tfds.core.GeneratorBasedBuilder, split: str, manual_dir_path: str | None,
               order_by: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
  """Builds `builder` (once; array_record) and returns `split` as plain dicts, sorted."""
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir_path))
  source = builder.as_data_source(split=split)
  records = [{k: decoded(v) for k, v in source[i].items()} for i in range(len(source))]
  return sorted(records, key=order_by)
