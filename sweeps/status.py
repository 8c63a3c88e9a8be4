"""Whether a run's workdir holds a finished, half-finished or no run (read-only checks)."""
from __future__ import annotations

import dataclasses
import json
import os

from rundir import layout

NEW, RESUME, FINISHED = "new", "resume", "finished"


@dataclasses.dataclass(frozen=True)
class Status:
  state: str   # NEW | RESUME | FINISHED
  detail: str  # why, for the dry run and the summary


def _logged_steps(workdir: str) -> set[int]:
  """Steps recorded in metrics.jsonl; a line cut short by a crash is ignored."""
  steps = set()
  try:
    with open(os.path.join(workdir, layout.METRICS_FILE)) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
          steps.add(record["step"])
  except FileNotFoundError:
    pass
  return steps


def train_status(workdir: str, num_train_steps: int) -> Status:
  """Finished once metrics.jsonl logs step num_train_steps or that checkpoint exists."""
  if num_train_steps in _logged_steps(workdir):
    return Status(FINISHED, f"{layout.METRICS_FILE} has step {num_train_steps}")
  steps = layout.checkpoint_steps(workdir)
  if steps and steps[-1] >= num_train_steps:
    return Status(FINISHED, f"checkpoint {steps[-1]} of {num_train_steps} steps")
  if steps:
    # train.py restores the latest checkpoint of its workdir when relaunched.
    return Status(RESUME, f"resuming from checkpoint {steps[-1]} of {num_train_steps} steps")
  if os.path.isdir(workdir) and os.listdir(workdir):
    return Status(RESUME, "resuming: earlier attempt left no checkpoint, starts at step 0")
  return Status(NEW, "")


def eval_status(workdir: str) -> Status:
  """Finished once results.json exists; eval.py skips problems already in samples.jsonl."""
  if os.path.isfile(os.path.join(workdir, layout.RESULTS_FILE)):
    return Status(FINISHED, f"{layout.RESULTS_FILE} exists")
  samples = os.path.join(workdir, layout.SAMPLES_FILE)
  if os.path.isfile(samples):
    with open(samples) as f:
      count = sum(1 for line in f if line.strip())
    return Status(RESUME, f"resuming: {count} samples in {layout.SAMPLES_FILE}")
  if os.path.isdir(workdir) and os.listdir(workdir):
    return Status(RESUME, "resuming: earlier attempt left no samples")
  return Status(NEW, "")
