"""The one progress-line format of every long loop: training steps, sampling, sandbox runs.

    executed 1200/40000 programs, 512/s, ETA 1m16s
    sampled 12/500 problems, 0.25/s, 80 samples each, 5120 tokens/s, ETA 32m32s
    step 250/2000, 3.1/s, loss 5.1700, lr 3.00e-04, |g| 0.512, 12783 tok/s, ETA 9m20s

It lives in execution/ because that package imports nothing else of the project, so the
sandbox's own command line can use it too; training/ and evaluation/ import it from here.
"""
import threading
import time
from typing import Callable, Sequence


def format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _rate(per_second: float) -> str:
  if per_second >= 100:
    return f"{per_second:.0f}"
  return f"{per_second:.1f}" if per_second >= 1 else f"{per_second:.2g}"


def progress_line(verb: str, done: int, total: int, unit: str, per_second: float,
                  details: Sequence[str] = ()) -> str:
  """`{verb} {done}/{total}[ {unit}], {rate}/s[, details], ETA {time}`."""
  eta = format_duration((total - done) / per_second) if per_second > 0 else "?"
  head = f"{verb} {done}/{total}" + (f" {unit}" if unit else "")
  return ", ".join([head, f"{_rate(per_second)}/s", *details, f"ETA {eta}"])


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
