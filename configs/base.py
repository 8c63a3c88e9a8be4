"""Defaults shared by every experiment config; experiment files start from `get_config()`.

Keys other tools rely on (scripts/, sweeps): model, num_train_steps, log_every,
checkpoint_every, seed, mesh.data|fsdp|tensor, init_from. Every key can be overridden on the
command line, e.g. `--config.optimizer.learning_rate=1e-4 --config.mesh.fsdp=4`; an unknown key
is an error.
"""
from __future__ import annotations

import dataclasses

import ml_collections
from ml_collections import config_dict

from model.config import ModelConfig


def _model_overrides() -> ml_collections.ConfigDict:
  """One placeholder per ModelConfig field, so `--config.model_overrides.dtype=bfloat16` works."""
  overrides = ml_collections.ConfigDict()
  for field in dataclasses.fields(ModelConfig):
    if field.name == "rope_scaling":
      continue  # structured, and belongs to the checkpoint it was imported with
    field_type = {"int": int, "float": float, "bool": bool, "str": str}[field.type]
    overrides[field.name] = config_dict.placeholder(field_type)
  return overrides


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # A preset name from model/presets.py, or "init_from": the model of config.init_from's
  # checkpoint (e.g. an imported Llama/Gemma, see README).
  config.model = "tiny"
  config.model_overrides = _model_overrides()
  config.seed = 0

  # Batch: global sizes; each process loads batch_size / process_count rows.
  config.batch_size = 8
  config.seq_len = 256
  config.grad_accum_steps = 1               # microbatches per step (same update, less memory)

  config.num_train_steps = 1000
  config.log_every = 10
  config.eval_every = 200                   # 0 disables periodic eval
  config.eval_batches = 8                   # validation batches per eval (fixed, not shuffled)
  config.checkpoint_every = 200
  config.keep_checkpoints = 3
  config.async_checkpointing = True
  # Exit cleanly after this step (preemption drills, time-sliced cluster jobs); 0 = never.
  # The learning-rate schedule still follows num_train_steps, so a restart continues exactly.
  config.stop_at_step = 0
  # Start from another run's parameters (a workdir or one of its checkpoint step folders);
  # the optimizer starts fresh. Empty: random init.
  config.init_from = ""
  # A resume whose identity settings (those that change the numbers) differ from the ones the
  # run started with is refused ("refuse"); "allow" continues on purpose and records the
  # change in WORKDIR/config_history.jsonl (model/run_identity.py).
  config.resume_mismatch = "refuse"

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1                     # -1: all devices not used by the other axes
  config.mesh.fsdp = 1
  config.mesh.tensor = 1

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-3     # peak
  config.optimizer.warmup_steps = 100
  config.optimizer.decay = "cosine"         # cosine | linear | constant
  config.optimizer.end_learning_rate_fraction = 0.1
  config.optimizer.weight_decay = 0.1
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.95
  config.optimizer.eps = 1e-8
  config.optimizer.grad_clip_norm = 1.0     # global-norm clipping; 0 disables

  config.data = ml_collections.ConfigDict()
  config.data.task = "python_code"          # see training/inputs.py for the list
  config.data.data_dir = ""                 # TFDS data_dir; empty: ~/tensorflow_datasets
  config.data.manual_dir = ""               # local copy of the raw files (offline machines)
  config.data.source_dir = ""               # python_code: directory of .py files (default stdlib)
  config.data.packing = True
  # Logical data shards (0: one per process). Fix it (e.g. to the largest process count you
  # will use) and the global batches, hence the losses, are the same on any number of hosts.
  config.data.num_shards = 0
  config.data.shuffle_seed = 0

  config.tokenizer = ml_collections.ConfigDict()
  config.tokenizer.path = ""                # a sentencepiece .model; empty: train one (below)
  config.tokenizer.train_max_files = 4000   # corpus files used when training a tokenizer

  # Peak FLOP/s of one device, for the MFU column of the logs (0: not reported).
  config.peak_flops_per_device = 0.0
  # Memory of one device in GiB: train.py compiles its step ahead of time and refuses a run
  # that needs more (training/plan.py). 0: what JAX reports for the device; where it reports
  # nothing (CPU), the check is skipped with a log line.
  config.device_memory_gib = 0.0

  # Metrics also go to TensorBoard event files in the workdir; W&B too when enabled (needs
  # `pip install wandb`): training/summaries.py.
  config.wandb = ml_collections.ConfigDict()
  config.wandb.enabled = False
  config.wandb.project = ""
  config.wandb.entity = ""
  return config
