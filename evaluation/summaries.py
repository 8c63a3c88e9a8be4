"""An eval's headline numbers as TensorBoard event files, beside results.json.

`tensorboard --logdir runs/` then shows training curves and eval numbers of a whole sweep
together: each eval workdir is one run. Tags are per task, so different tasks never share a
chart: `TASK/pass_at_K` (the headline ks; a TensorBoard tag cannot hold "@"),
`TASK/pass_rate`, `TASK/problems_solved`, `TASK/status/STATUS` (counts),
`TASK/challenge/pass_at_K`, and for mbpp_execution `TASK/execution_accuracy` (the share of
predictions that are right). The run's meta (model, objective, task, split,
samples_format, ...) is its hparams, with those tags as metrics, so the HPARAMS tab is a
comparison table. Values are logged at step 0; a rerun replaces them (its file starts a new
session at step 0, which hides the older file's values).

Written with tensorboardX (no TensorFlow); nothing is written, with a warning, where it is
not installed. With `--config.wandb.enabled=true` (and `wandb.project`) the same numbers go to
a Weights & Biases run named after the workdir.
"""
from __future__ import annotations

import os
import time
from typing import Any

from absl import logging

from rundir.tensorboard import import_tensorboardx

_META_HPARAMS = ("model", "num_params", "objective", "task", "split", "samples_format",
                 "samples_source", "num_samples")


def headline_scalars(results: dict[str, Any]) -> dict[str, float]:
  """Tag -> value of results.json's headline numbers (see the module docstring)."""
  task = results["meta"].get("task", "unknown")
  scalars = {f"{task}/pass_at_{k}": v for k, v in results["pass_at_k"].items()}
  for key in ("pass_rate", "problems_solved"):
    if key in results:
      scalars[f"{task}/{key}"] = results[key]
  if task == "mbpp_execution" and "pass_rate" in results:
    scalars[f"{task}/execution_accuracy"] = results["pass_rate"]
  for status, count in results.get("status_counts", {}).items():
    scalars[f"{task}/status/{status}"] = count
  for k, v in ((results.get("challenge") or {}).get("pass_at_k") or {}).items():
    scalars[f"{task}/challenge/pass_at_{k}"] = v
  return {name: float(value) for name, value in scalars.items()}


def _hparams(results: dict[str, Any]) -> dict[str, Any]:
  meta = results["meta"]
  return {k: meta[k] if isinstance(meta[k], (bool, int, float, str)) else str(meta[k])
          for k in _META_HPARAMS if meta.get(k) is not None}


def write_scalars(logdir: str, scalars: dict[str, float], hparams: dict[str, Any]) -> bool:
  """One step-0 session of `scalars` with `hparams` in `logdir`; False if not installed."""
  tensorboardX = import_tensorboardx()
  if tensorboardX is None:
    return False
  # Named to sort after an earlier file even within the same second (the name has seconds).
  writer = tensorboardX.SummaryWriter(logdir, purge_step=0,
                                      filename_suffix=f".{time.time_ns()}")
  try:
    file_writer = writer._get_file_writer()  # pylint: disable=protected-access
    for part in tensorboardX.summary.hparams(hparams, scalars):
      file_writer.add_summary(part)
    for name, value in scalars.items():
      writer.add_scalar(name, value, 0)
  finally:
    writer.close()
  return True


def log_to_wandb(logdir: str, results: dict[str, Any]) -> bool:
  """The headline numbers as one W&B run named after `logdir`, if the eval config enabled
  W&B (meta.config.wandb; eval.py checks up front that wandb is installed)."""
  settings = (results["meta"].get("config") or {}).get("wandb") or {}
  if not settings.get("enabled"):
    return False
  import wandb  # pylint: disable=g-import-not-at-top  (optional)
  name = os.path.basename(os.path.abspath(logdir))
  run = wandb.init(project=settings.get("project") or None,
                   entity=settings.get("entity") or None, name=name, id=name, resume="allow",
                   dir=logdir, config=_hparams(results))
  run.log(headline_scalars(results))
  run.finish()
  return True


def write_results_summary(logdir: str, results: dict[str, Any]) -> bool:
  """Writes `results`' headline numbers to event files in `logdir` (and W&B when enabled);
  False if tensorboardX is not installed."""
  log_to_wandb(logdir, results)
  return write_scalars(logdir, headline_scalars(results), _hparams(results))
