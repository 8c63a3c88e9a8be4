"""Multi-process (multi-host) runs through JAX's own distributed runtime: setup, the workdir
held for all processes, and the few collectives that keep processes in agreement (one process
failing makes every process fail at the same point, instead of the others waiting forever in
the next collective).

train.py and eval.py both start here; training/ and evaluation/ may not import each other.

JAX is imported where a collective needs it, never at module level: a process that has not
imported JAX cannot have joined a jax.distributed run, so it is the only process, and the
helpers answer for one process without importing JAX (scoring a samples file needs none).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
from absl import logging

from rundir import layout, workdir_lock

T = TypeVar("T")


def process_index() -> int:
  """This process's index in a jax.distributed run (0 when JAX was never imported)."""
  jax = sys.modules.get("jax")
  return jax.process_index() if jax is not None else 0


def process_count() -> int:
  """The number of processes of a jax.distributed run (1 when JAX was never imported)."""
  jax = sys.modules.get("jax")
  return jax.process_count() if jax is not None else 1


def maybe_initialize_distributed(requested: bool) -> None:
  """Calls jax.distributed.initialize() when asked to, or when the environment says so.

  Explicit: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID. Otherwise JAX auto-detects cluster environments (SLURM, TPU pods, ...).
  """
  if requested or int(os.environ.get("JAX_NUM_PROCESSES", "1")) > 1:
    import jax  # pylint: disable=g-import-not-at-top  (only multi-process runs need it here)
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
      jax.distributed.initialize(
          coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
          num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
          process_id=int(os.environ["JAX_PROCESS_ID"]))
    else:  # SLURM, TPU pods, ...: JAX detects the cluster itself.
      jax.distributed.initialize()
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())


class PeerFailed(RuntimeError):
  """Another process failed (its log says why); this one stops at the same point."""


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any; a collective (every process calls it)."""
  if process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray(flag, np.int32))
  return bool(np.any(flags))


@contextlib.contextmanager
def workdir_held(workdir: str) -> Iterator[None]:
  """Holds the run's workdir for all processes (process 0 takes the lock, the others wait for
  its answer), so a second run on it is refused at once, everywhere."""
  lock = layout.workdir_lock(workdir) if process_index() == 0 else None
  error: BaseException | None = None
  if lock is not None:
    try:
      lock.acquire()
    except (workdir_lock.WorkdirLocked, OSError) as e:
      error = e
  if any_process(error is not None):
    if error is not None:
      raise error
    raise workdir_lock.WorkdirLocked(f"{workdir}: process 0 could not lock it (see its log)")
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def fail_together(error: BaseException | None, what: str) -> None:
  """Raises on every process if `error` is set on any; a collective (every process calls it).

  The process with the error raises it; the others raise PeerFailed naming `what` failed.
  """
  if not any_process(error is not None):
    return
  if error is not None:
    raise error
  raise PeerFailed(f"another process failed {what} (see its log); stopping here too")


def on_process_zero(fn: Callable[[], T], what: str) -> T | None:
  """fn() on process 0 alone (None elsewhere); its failure stops every process (a collective).

  For the work one writer does for all (an eval's sandbox runs and files): the others do
  not wait forever for a process that has died.
  """
  result, error = None, None
  if process_index() == 0:
    try:
      result = fn()
    except Exception as e:  # pylint: disable=broad-except  (raised again just below)
      error = e
  fail_together(error, what)
  return result


def broadcast_json(value: Any) -> Any:
  """Process 0's JSON-serialisable `value`, on every process; a collective."""
  if process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  # The length first: broadcast_one_to_all needs the same shape on every process.
  size = int(multihost_utils.broadcast_one_to_all(np.asarray(data.size, np.int32)))
  padded = np.zeros((size,), np.uint8)
  if process_index() == 0:
    padded[:] = data
  return json.loads(np.asarray(multihost_utils.broadcast_one_to_all(padded)).tobytes())


def to_host(x: Any) -> np.ndarray:
  """The whole of a (possibly multi-host) jax.Array as numpy, on every process; a collective
  when `x` spans processes."""
  if x.is_fully_addressable:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
