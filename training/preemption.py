"""Stopping a training run cleanly on SIGTERM or SIGINT (cluster preemption, Ctrl-C).

SLURM and Kubernetes send SIGTERM some time before they kill a preempted job. The loop asks
`should_stop(step)` after every step; once it says yes, the loop saves a checkpoint of that
step, waits for the save to be on disk, and raises `Preempted`, which train.py turns into exit
status EXIT_PREEMPTED. Rerunning the same command resumes bit-exactly from that checkpoint.

One process: our handlers only note the signal; the step in flight finishes first.
Several processes (jax.distributed): every process must save the same step. JAX's preemption
sync manager, started by jax.distributed.initialize(), catches SIGTERM on any host, tells the
others, and `multihost_utils.reached_preemption_sync_point(step)` then returns True on every
host at the same step. We leave its SIGTERM handler alone and turn SIGINT into a SIGTERM to
ourselves, so both go through that protocol.

A second SIGINT while stopping raises KeyboardInterrupt at once (the user insists).

train.py calls `catch_early()` before its other imports (this module imports no JAX until a
run starts), so a signal during imports and setup is noted too: without it the default
action would kill the process (exit 143, not EXIT_PREEMPTED). The time a signal arrived is
taken by a thread woken through `signal.set_wakeup_fd` when the signal is delivered: Python
runs a handler only between bytecodes of the main thread, seconds later when the signal
comes during a compile or a restore, and timing from the handler understated the wait.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from typing import Any

from absl import logging

# EX_TEMPFAIL (sysexits.h): "temporary failure; the user is invited to retry". Distinct from a
# crash (1), a usage error (2) and a signal death (128 + n), so a job script can requeue on it.
EXIT_PREEMPTED = 75
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _ArrivalClock:
  """When each signal was delivered. Python's C-level handler writes the signal number to the
  wakeup pipe at delivery; a daemon thread blocked on the pipe stamps it (it needs only the
  GIL, which compiles and checkpoint I/O release, not the main thread's attention)."""

  def __init__(self, read_fd: int):
    self._arrivals: dict[int, float] = {}
    self._lock = threading.Lock()
    threading.Thread(target=self._watch, args=(read_fd,), daemon=True,
                     name="signal-arrival-clock").start()

  def _watch(self, read_fd: int) -> None:
    while True:
      data = os.read(read_fd, 64)
      now = time.monotonic()
      with self._lock:
        for signum in data:
          self._arrivals.setdefault(signum, now)

  def arrival(self, signum: int) -> float:
    """When `signum` was delivered (the first time since the last clear); now if the thread
    has not stamped it yet (it then arrived just now)."""
    with self._lock:
      return min(self._arrivals.get(signum, time.monotonic()), time.monotonic())

  def clear(self) -> None:
    with self._lock:
      self._arrivals.clear()


_clock: _ArrivalClock | None = None


def _arrival_clock() -> _ArrivalClock | None:
  """The process's clock, started on first use from the main thread; None where another
  part of the program already owns the wakeup fd (then handlers time the signal)."""
  global _clock
  if _clock is None and threading.current_thread() is threading.main_thread():
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    if previous != -1:  # someone else's (e.g. an asyncio loop's): leave it theirs
      signal.set_wakeup_fd(previous)
      os.close(read_fd)
      os.close(write_fd)
      return None
    _clock = _ArrivalClock(read_fd)
  return _clock


def _arrived_at(signum: int) -> float:
  clock = _arrival_clock()
  return clock.arrival(signum) if clock else time.monotonic()


# (signal name, arrival time) of a stop signal caught by catch_early() before a run started.
_early: tuple[str, float] | None = None


def _note_early(signum: int, frame: Any) -> None:
  del frame
  global _early
  if _early is None:
    _early = (signal.Signals(signum).name, _arrived_at(signum))
  elif signum == signal.SIGINT:
    raise KeyboardInterrupt  # second Ctrl-C: stop now


def catch_early() -> None:
  """Notes SIGTERM/SIGINT from now until a run installs its own handlers (StopSignals takes
  the noted signal over: the run stops before its first step). Main thread only; call it
  before importing JAX (see exit_preempted)."""
  _arrival_clock()
  for signum in _STOP_SIGNALS:
    signal.signal(signum, _note_early)
  atexit.register(_end_preempted_process)  # first registered, so run after all the others


_preempted_exit = False


def _end_preempted_process() -> None:
  if _preempted_exit:
    sys.stdout.flush()
    sys.stderr.flush()
    logging.flush()
    os._exit(EXIT_PREEMPTED)  # pylint: disable=protected-access


def exit_preempted() -> None:
  """sys.exit(EXIT_PREEMPTED), and where catch_early() ran, without the interpreter's
  teardown: every library's exit handler still runs first (they flush what they hold), but
  freeing a JAX process's heap and its C++ objects takes seconds after the stop message,
  time a preempted job may not have and that its "s from the signal to exit" would leave
  out."""
  global _preempted_exit
  _preempted_exit = True
  sys.exit(EXIT_PREEMPTED)


def stopped_early() -> Preempted | None:
  """The stop for a signal noted by catch_early() before any run started, or None."""
  if _early is None:
    return None
  name, arrived = _early
  return Preempted(None, name, False, 0.0, time.monotonic() - arrived)


class Preempted(Exception):
  """The run stopped on a signal; everything up to `step` is in its latest checkpoint."""

  def __init__(self, step: int | None, signal_name: str, saved: bool, save_seconds: float,
               since_signal_seconds: float | None):
    """`step` None: the signal came during setup, before the run knew its step."""
    self.step = step
    self.signal_name = signal_name
    self.saved = saved
    if step is None:
      what = "nothing new to save (the run's checkpoints, if any, stand)"
    elif saved:
      what = f"checkpoint of step {step} saved in {save_seconds:.1f} s"
    elif step == 0:  # checkpoints are saved after a step, so a run at step 0 has none
      what = "no step trained yet, so there is no checkpoint"
    else:
      what = f"no new step to save; the latest checkpoint (step {step}) stands"
    where = "during setup, before the first step" if step is None else f"at step {step}"
    self._what = f"stopped on {signal_name} {where}: {what}"
    # The figure is taken when the message is shown (train.py's last line before it exits).
    self._signal_at = (None if since_signal_seconds is None else
                       time.monotonic() - since_signal_seconds)
    super().__init__(self._what)

  def __str__(self) -> str:
    timing = ("" if self._signal_at is None else
              f"; {time.monotonic() - self._signal_at:.1f} s from the signal to exit")
    return f"{self._what}{timing}. Run the same command again to continue."


class StopSignals:
  """Installs the handlers for the duration of a run; use as a context manager."""

  def __init__(self):
    import jax  # pylint: disable=g-import-not-at-top  (catch_early() must not wait for JAX)
    self.signal_name: str | None = None
    self.received_at: float | None = None
    self._previous: dict[int, Any] = {}
    self._multiprocess = jax.process_count() > 1
    self._warned = False

  def __enter__(self) -> "StopSignals":
    global _early
    if threading.current_thread() is not threading.main_thread():
      logging.warning("train() runs outside the main thread: SIGTERM/SIGINT will not stop it "
                      "at a checkpoint")
      return self
    clock = _arrival_clock()
    if clock and _early is None:
      clock.clear()  # a stamp from before this run (a signal someone else handled)
    signals = (signal.SIGINT,) if self._multiprocess else _STOP_SIGNALS
    for signum in signals:
      self._previous[signum] = signal.signal(signum, self._handle)
    if _early is not None:  # a signal during imports or setup, before this run began
      name, arrived = _early
      _early = None
      if self._multiprocess:
        os.kill(os.getpid(), signal.SIGTERM)  # to JAX's notifier: every host stops together
      else:
        self.signal_name, self.received_at = name, arrived
        logging.warning("%s received before the run started: stopping before its first step",
                        name)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      if handler is not None:  # None: installed outside Python, cannot be put back
        signal.signal(signum, handler)
    self._previous = {}

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # second Ctrl-C: stop now, without a checkpoint
    self.signal_name, self.received_at = name, _arrived_at(signum)
    logging.warning("%s received: finishing the current step, then saving a checkpoint and "
                    "exiting (Ctrl-C again to stop at once, without one)", name)
    if self._multiprocess:
      # JAX's preemption notifier listens for SIGTERM only; let it tell the other hosts.
      os.kill(os.getpid(), signal.SIGTERM)

  @property
  def requested(self) -> bool:
    """A signal arrived here (single-process runs; multi-process runs ask should_stop)."""
    return self.signal_name is not None and not self._multiprocess

  def should_stop(self, step: int) -> bool:
    """Called after every step, by every process: stop (and save) after `step`?"""
    if self._multiprocess:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        reached = multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError as e:  # jax_enable_preemption_service=False: nobody agrees a step
        if not self._warned:
          logging.warning("SIGTERM will not stop this run at a checkpoint: %s", e)
          self._warned = True
        return False
      if reached:
        self.signal_name = self.signal_name or "SIGTERM"
      return reached
    return self.signal_name is not None

  def seconds_since_signal(self) -> float | None:
    return None if self.received_at is None else time.monotonic() - self.received_at
