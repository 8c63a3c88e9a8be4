"""TensorBoard event files (and, when enabled, Weights & Biases) for a training run.

Beside metrics.jsonl, in the workdir itself, so `tensorboard --logdir runs/` shows every
run of a sweep side by side under its directory name. Written with tensorboardX (no
TensorFlow). Tags: `train/loss`, `train/learning_rate`, `train/grad_norm`,
`train/tokens_per_sec`, `train/steps_per_sec`, `train/mfu` (when
config.peak_flops_per_device is set) and `eval/loss`; the config's values are the run's
hparams (TensorBoard's HPARAMS tab), with `train/loss` and `eval/loss` as its metrics.

On resume from step S the event files written after S by the run that died are hidden:
the new file starts with a session start at S + 1, which makes TensorBoard's reader drop
what older files logged from S + 1 on (the resumed run logs those steps again).

W&B: `--config.wandb.enabled=true` (and `wandb.project`, `wandb.entity`), with the wandb
package installed; the run is named after the workdir and resumes with it.
"""
from __future__ import annotations

import atexit
import os
import time
from typing import Any

import ml_collections
from absl import logging

from rundir.tensorboard import import_tensorboardx

# Record keys that are bookkeeping, not curves.
_NOT_SCALARS = frozenset({"step", "total_steps", "eta_sec"})
HPARAM_METRICS = ("train/loss", "eval/loss")


def tag(key: str) -> str:
  """metrics.jsonl key -> TensorBoard tag: eval_loss -> eval/loss, loss -> train/loss."""
  return "eval/" + key[len("eval_"):] if key.startswith("eval_") else "train/" + key


def unique_suffix() -> str:
  """An event file name suffix that sorts later files last within one second too.

  tensorboardX names files `events.out.tfevents.SECONDS.HOST`: a resume within the same
  second would overwrite the dead run's file, and TensorBoard reads files in name order,
  which must be the order they were written for the resume to hide the right steps.
  """
  return f".{time.time_ns()}"


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as TensorBoard hparams: dotted keys; numbers, strings and bools as they are,
  anything else (tuples, lists) as its text; unset (None) values left out."""
  flat: dict[str, Any] = {}

  def visit(prefix: str, value: Any) -> None:
    if isinstance(value, dict):
      for k, v in value.items():
        visit(f"{prefix}.{k}" if prefix else k, v)
    elif value is not None:
      flat[prefix] = value if isinstance(value, (bool, int, float, str)) else str(value)

  visit("", config.to_dict())
  return flat


def _wandb_run(config: ml_collections.ConfigDict, workdir: str, hparams: dict[str, Any]):
  settings = config.get("wandb")
  if settings is None or not settings.get("enabled", False):
    return None
  try:
    import wandb  # pylint: disable=g-import-not-at-top  (optional)
  except ImportError as e:
    raise ValueError("config.wandb.enabled needs the wandb package: pip install wandb "
                     "(or leave --config.wandb.enabled=false)") from e
  name = os.path.basename(os.path.abspath(workdir))
  return wandb.init(project=settings.get("project") or None,
                    entity=settings.get("entity") or None, name=name, id=name,
                    resume="allow", dir=workdir, config=hparams)


class Summaries:
  """Writes metrics records as TensorBoard scalars (and W&B logs) for one run's chief."""

  def __init__(self, workdir: str, start_step: int, config: ml_collections.ConfigDict):
    hparams = flat_hparams(config)
    self._wandb = _wandb_run(config, workdir, hparams)
    tensorboardX = import_tensorboardx()
    if tensorboardX is None:
      self._writer = None
      return
    self._writer = tensorboardX.SummaryWriter(
        workdir, purge_step=start_step + 1 if start_step else None, flush_secs=30,
        filename_suffix=unique_suffix())
    file_writer = self._writer._get_file_writer()  # pylint: disable=protected-access
    for part in tensorboardX.summary.hparams(hparams, {name: None for name in HPARAM_METRICS}):
      file_writer.add_summary(part)
    self._writer.flush()
    atexit.register(self.close)  # A run that ends in an error still keeps its last events.

  def write(self, record: dict[str, Any]) -> None:
    scalars = {tag(k): float(v) for k, v in record.items()
               if k not in _NOT_SCALARS and isinstance(v, (int, float))}
    if self._writer is not None:
      for name, value in scalars.items():
        self._writer.add_scalar(name, value, record["step"])
      self._writer.flush()
    if self._wandb is not None:
      self._wandb.log(scalars, step=record["step"])

  def close(self) -> None:
    """Writes what is queued (tensorboardX writes from a thread) and ends the W&B run."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None
