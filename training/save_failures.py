"""A disk that fills during an asynchronous checkpoint save: one line, not hundreds.

check_free_space (training/checkpointing.py) refuses a save that cannot fit, but a disk that
another process fills while orbax writes fails half way. Then orbax's writer threads log
each failed write at ERROR with its traceback, and tensorstore callbacks that run after
orbax closed its event loop print 'Event loop is closed' traces: some 550 lines before
the main thread meets the same failure and launch/commands.run_or_fail reports it in one
line. `quiet_storage_failures()` drops exactly those records and traces: what they say
is a storage failure (rundir/workdir_lock.py storage_failure), which that line says already.
Everything else is logged and printed as before.
"""
from __future__ import annotations

import logging as std_logging
import sys
import threading
from typing import Any

from rundir import workdir_lock

_installed = False
# Set once a storage failure was dropped: the traces that follow it are its aftermath.
_failed = threading.Event()


def _storage_failure(error: BaseException | None) -> bool:
  return error is not None and workdir_lock.storage_failure(error) is not None


def _is_aftermath(error: BaseException) -> bool:
  """The trace a tensorstore write leaves when it completes after orbax closed the event
  loop of a save that failed (tensorstore reports it from C as unraisable, without naming
  an object; it can come before orbax logs the failure itself)."""
  if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
    return False
  tb = error.__traceback__
  while tb is not None:
    if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
      return True
    tb = tb.tb_next
  return False


class _DropStorageFailures(std_logging.Filter):
  """Drops orbax's ERROR records that report a storage failure (with or without a trace)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno < std_logging.ERROR or "orbax" not in record.pathname:
      return True
    error = record.exc_info[1] if record.exc_info else None
    if _storage_failure(error) or _storage_failure(Exception(record.getMessage())):
      _failed.set()
      return False
    return True


def quiet_storage_failures() -> None:
  """Installs the filter on absl's logger (orbax logs through it), and sys.excepthook,
  threading.excepthook and sys.unraisablehook wrappers that drop the storage failure and
  its aftermath. Idempotent."""
  global _installed
  if _installed:
    return
  _installed = True
  std_logging.getLogger("absl").addFilter(_DropStorageFailures())
  previous_excepthook = sys.excepthook
  previous_thread_hook = threading.excepthook

  def excepthook(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    if _is_aftermath(error) or (_failed.is_set() and _storage_failure(error)):
      return
    previous_excepthook(kind, error, tb)

  def thread_hook(args: Any) -> None:
    if _failed.is_set() and args.exc_value is not None and (
        _is_aftermath(args.exc_value) or _storage_failure(args.exc_value)):
      return
    previous_thread_hook(args)

  previous_unraisable = sys.unraisablehook

  def unraisable_hook(unraisable: Any) -> None:
    if unraisable.exc_value is not None and _is_aftermath(unraisable.exc_value):
      return
    previous_unraisable(unraisable)

  sys.excepthook = excepthook
  threading.excepthook = thread_hook
  sys.unraisablehook = unraisable_hook
