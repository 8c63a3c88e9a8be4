"""Multi-process (multi-host) setup through JAX's own distributed runtime."""
from __future__ import annotations

import os

import jax
from absl import logging


def maybe_initialize_distributed(requested: bool) -> None:
  """Calls jax.distributed.initialize() when asked to, or when the environment says so.

  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID are read by JAX itself; cluster
  environments (SLURM, TPU pods, Kubernetes JobSets) are auto-detected by JAX.
  """
  if requested or int(os.environ.get("JAX_NUM_PROCESSES", "1")) > 1:
    jax.distributed.initialize()
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())
