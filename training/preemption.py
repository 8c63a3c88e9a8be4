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
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import jax
from absl import logging
from jax.experimental import multihost_utils

# EX_TEMPFAIL (sysexits.h): "temporary failure; the user is invited to retry". Distinct from a
# crash (1), a usage error (2) and a signal death (128 + n), so a job script can requeue on it.
EXIT_PREEMPTED = 75


class Preempted(Exception):
  """The run stopped on a signal; everything up to `step` is in its latest checkpoint."""

  def __init__(self, step: int, signal_name: str, saved: bool, save_seconds: float,
               since_signal_seconds: float | None):
    self.step = step
    self.signal_name = signal_name
    self.saved = saved
    what = (f"checkpoint of step {step} saved in {save_seconds:.1f} s" if saved else
            f"no new step to save; the latest checkpoint (step {step}) stands")
    timing = ("" if since_signal_seconds is None else
              f"; {since_signal_seconds:.1f} s from the signal to exit")
    super().__init__(f"stopped on {signal_name} at step {step}: {what}{timing}. Run the same "
                     "command again to continue.")


class StopSignals:
  """Installs the handlers for the duration of a run; use as a context manager."""

  def __init__(self):
    self.signal_name: str | None = None
    self.received_at: float | None = None
    self._previous: dict[int, Any] = {}
    self._multiprocess = jax.process_count() > 1
    self._warned = False

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is not threading.main_thread():
      logging.warning("train() runs outside the main thread: SIGTERM/SIGINT will not stop it "
                      "at a checkpoint")
      return self
    signals = (signal.SIGINT,) if self._multiprocess else (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
      self._previous[signum] = signal.signal(signum, self._handle)
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
    self.signal_name, self.received_at = name, time.monotonic()
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
