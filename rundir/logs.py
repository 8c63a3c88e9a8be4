"""Keeps the console for progress lines: train.py, eval.py and the scripts call
quiet_library_logs() first."""
from __future__ import annotations

import logging as py_logging

from absl import logging


class _DropLibraryInfo(py_logging.Filter):
  _NOISY = ("/orbax/", "/grain/")

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or not any(
        part in record.pathname for part in self._NOISY)


def quiet_library_logs() -> None:
  """Orbax and grain log every file rename at INFO through absl; keep the console for
  progress lines (their warnings and errors still show)."""
  logging.get_absl_handler().addFilter(_DropLibraryInfo())
