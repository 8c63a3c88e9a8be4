"""What makes an eval run the run it is (model/run_identity.py): the settings a resumed eval.py
runs with must equal those its samples were drawn with, except the ones below.

Identity: the checkpoint by its step and checksums (a workdir that trained on since names
another step: another model), the tokenizer and a scored samples file by their bytes, and
every setting that changes a sample or its verdict: task, split, prompt options, sampling,
seed, num_samples, max_prompt_len, sandbox limits, data.mbpp_config, ...

Not identity: how many problems (max_problems may be raised to go on), which ks are reported,
slots per call (a sample is keyed by seed, problem and index, not by its call), workers,
devices and mesh, where the data lies, the labels in meta, W&B and resume_mismatch.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from model import run_identity
from rundir import layout

NOT_IDENTITY = frozenset({
    "max_problems", "pass_at_k", "slots_per_call", "batch_size", "cpu_devices",
    "cpu_sampling_memory_mb", "sandbox.workers",
    "sandbox.screen_batch", "data.data_dir", "data.manual_dir", "resume_mismatch",
    "checkpoint", "tokenizer_path", "samples_path"})
NOT_IDENTITY_PREFIXES = ("mesh.", "wandb.", "meta.")


def eval_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  identity = run_identity.without(run_identity.flatten(config.to_dict()), NOT_IDENTITY,
                                  NOT_IDENTITY_PREFIXES)
  if config.get("samples_path"):
    identity["samples_file"] = run_identity.file_fingerprint(config.samples_path)
    return identity
  identity.update(run_identity.flatten(
      {"checkpoint": run_identity.checkpoint_fingerprint(config.checkpoint)}))
  tokenizer = config.tokenizer_path
  if not tokenizer and config.checkpoint:
    try:
      tokenizer = layout.tokenizer_path(config.checkpoint) or ""
    except layout.CheckpointError:
      tokenizer = ""  # no checkpoint there: loading it says so
  identity["tokenizer"] = run_identity.file_fingerprint(tokenizer)
  return identity
