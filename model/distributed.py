"""Multi-process (multi-host) setup through JAX's own distributed runtime."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from model import run_dir, workdir_lock


def maybe_initialize_distributed(requested: bool) -> None:
  """Calls jax.distributed.initialize() when asked to, or when the environment says so.

  Explicit: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID. Otherwise JAX auto-detects cluster environments (SLURM, TPU pods, ...).
  """
  if requested or int(os.environ.get("JAX_NUM_PROCESSES", "1")) > 1:
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


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any; a collective (every process calls it)."""
  if jax.process_count() == 1:
    return flag
  flags = multihost_utils.process_allgather(np.asarray(flag, np.int32))
  return bool(np.any(flags))


@contextlib.contextmanager
def workdir_held(workdir: str) -> Iterator[None]:
  """Holds the run's workdir for all processes (process 0 takes the lock, the others wait for
  its answer), so a second run on it is refused at once, everywhere."""
  lock = run_dir.workdir_lock(workdir) if jax.process_index() == 0 else None
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
