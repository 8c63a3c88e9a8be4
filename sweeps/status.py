"""Whether a run's workdir holds a finished, half-finished or no run (read-only checks)."""
from __future__ import annotations

import dataclasses
import json
import os

NEW, RESUME, FINISHED = "new", "resume", "finished"


@dataclasses.dataclass(frozen=True)
class Status:
  state: str   # NEW | RESUME | FINISHED
  detail: str  # why, for the dry run and the summary


def _checkpoint_steps(workdir: str) -> list[int]:
  """Step folders of WORKDIR/checkpoints; orbax's temporary folders have non-digit names."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def _logged_steps(workdir: str) -> set[int]:
  """Steps recorded in metrics.jsonl; a line cut short by a crash is ignored."""
  steps = set()
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
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
    return Status(FINISHED, f"metrics.jsonl has step {num_train_steps}")
  steps = _checkpoint_steps(workdir)
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
  if os.path.isfile(os.path.join(workdir, "results.json")):
    return Status(FINISHED, "results.json exists")
  samples = os.path.join(workdir, "samples.jsonl")
  if os.path.isfile(samples):
    with open(samples) as f:
      count = sum(1 for line in f if line.strip())
    return Status(RESUME, f"resuming: {count} samples in samples.jsonl")
  if os.path.isdir(workdir) and os.listdir(workdir):
    return Status(RESUME, "resuming: earlier attempt left no samples")
  return Status(NEW, "")
