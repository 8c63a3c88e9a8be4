"""Multi-process (multi-host) setup through JAX's own distributed runtime."""
from __future__ import annotations

import os

import jax
from absl import logging


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
