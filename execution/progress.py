"""Counts a run's executed programs across batches for the progress line
(rundir/progress.py holds the line's format, shared with training and sampling)."""
import threading
import time
from typing import Callable

from rundir.progress import progress_line


class ProgressLog:
  """Counts executed programs across batches and logs "executed X/Y programs, Z/s, ETA T".

  The sandbox pool reports progress per batch (done, batch size) from its worker threads;
  this keeps the run-wide count, so a run fed in many batches gets one rate and one ETA.
  """

  def __init__(self, log: Callable[[str], None], every_s: float = 10.0,
               clock: Callable[[], float] = time.monotonic):
    self.total = 0
    self.done = 0
    self._log = log
    self._every_s = every_s
    self._clock = clock
    self._lock = threading.Lock()
    self._started: float | None = None
    self._last_logged = -float("inf")
    self._batch_base = 0

  def expect(self, programs: int) -> None:
    """Adds `programs` to the run's total (call before running them)."""
    self.total += programs

  def start_batch(self) -> None:
    self._batch_base = self.done
    if self._started is None:
      self._started = self._clock()

  def __call__(self, done_in_batch: int, batch_size: int) -> None:
    """The sandbox's progress callback."""
    with self._lock:
      self.done = self._batch_base + done_in_batch
      now = self._clock()
      if done_in_batch == batch_size or now - self._last_logged >= self._every_s:
        self._last_logged = now
        self._log(self.line(now))

  def line(self, now: float | None = None) -> str:
    now = self._clock() if now is None else now
    elapsed = max(now - (self._started if self._started is not None else now), 1e-9)
    return progress_line("executed", self.done, max(self.total, self.done), "programs",
                         self.done / elapsed)
