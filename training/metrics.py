"""metrics.jsonl writing and the human-readable progress line."""
from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections
from absl import logging

from rundir.progress import progress_line
from training.summaries import Summaries


class MetricsWriter:
  """Appends one JSON object per line to WORKDIR/metrics.jsonl (process 0 only).

  On resume from step S, lines with step > S are dropped first: they were logged by a run that
  died before its next checkpoint, and the resumed run logs those steps again, identically.
  With the run's `config`, each record also goes to TensorBoard event files in WORKDIR (and
  W&B when config.wandb.enabled): training/summaries.py.
  """

  def __init__(self, path: str, resume_step: int, enabled: bool = True,
               config: ml_collections.ConfigDict | None = None):
    self.path = path
    self.enabled = enabled
    self.summaries = None
    if enabled and config is not None:
      self.summaries = Summaries(os.path.dirname(path), resume_step, config)
    if enabled and os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
      with open(path + ".tmp", "w") as f:
        f.writelines(kept)
      os.replace(path + ".tmp", path)

  def write(self, record: dict[str, Any]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(record, sort_keys=True) + "\n")
    if self.summaries is not None:
      self.summaries.write(record)

  def close(self) -> None:
    if self.summaries is not None:
      self.summaries.close()


def read_metrics(path: str) -> list[dict[str, Any]]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """Steps/s, tokens/s and ETA since the last report (excluding compile and eval time)."""

  def __init__(self, start_step: int, total_steps: int):
    self.total_steps = total_steps
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self._tokens = 0.0

  def add_tokens(self, tokens: float) -> None:
    self._tokens += tokens

  def pause(self, seconds: float) -> None:
    """Excludes time spent elsewhere (eval, checkpoint waits) from the throughput."""
    self._last_time += seconds

  def report(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    elapsed = max(now - self._last_time, 1e-9)
    steps = step - self._last_step
    rates = {"steps_per_sec": steps / elapsed, "tokens_per_sec": self._tokens / elapsed}
    rates["eta_sec"] = (self.total_steps - step) / max(rates["steps_per_sec"], 1e-9)
    self._last_step, self._last_time, self._tokens = step, now, 0.0
    return rates


def log_progress(record: dict[str, Any]) -> None:
  details = [f"loss {record['loss']:.4f}", f"lr {record['learning_rate']:.2e}",
             f"|g| {record['grad_norm']:.3f}", f"{record['tokens_per_sec']:.0f} tok/s"]
  if "eval_loss" in record:
    details.append(f"eval_loss {record['eval_loss']:.4f}")
  logging.info(progress_line("step", record["step"], record["total_steps"], "",
                             record["steps_per_sec"], details))
