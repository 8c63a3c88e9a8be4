"""What makes a training run the run it is (model/run_identity.py): the settings it resumes with
must equal those it started with, except the ones below.

Not identity: how far the run goes (num_train_steps may be raised to extend it: the schedule
follows it from then on; stop_at_step), what is logged and how often (the eval loss is
measured, it changes no parameter), checkpoint cadence, the mesh (the same numbers on other
hardware), where the data lies (data_dir, manual_dir) and how resume_mismatch is set. Paths
whose content makes the run count by content: init_from by its checkpoint's step and
checksums, tokenizer.path by its bytes.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from model import run_identity

NOT_IDENTITY = frozenset({
    "num_train_steps", "stop_at_step", "log_every", "eval_every", "eval_batches",
    "checkpoint_every", "keep_checkpoints", "async_checkpointing", "peak_flops_per_device",
    "device_memory_gib", "data.data_dir", "data.manual_dir", "resume_mismatch"})
NOT_IDENTITY_PREFIXES = ("mesh.", "wandb.")


def train_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = run_identity.flatten(config.to_dict())
  identity = run_identity.without(flat, NOT_IDENTITY, NOT_IDENTITY_PREFIXES)
  if identity.get("init_from"):
    del identity["init_from"]
    identity.update(run_identity.flatten(
        {"init_from": run_identity.checkpoint_fingerprint(config.init_from)}))
  if identity.get("tokenizer.path"):
    identity["tokenizer.path"] = run_identity.file_fingerprint(config.tokenizer.path)
  return identity
