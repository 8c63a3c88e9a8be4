"""The run directory's layout: the one module that names a run's files, and its small files.

A training run (train.py's workdir; also what interop/import_checkpoint.py writes):

    checkpoints/STEP/params        orbax: the parameters (alone, so init_from/eval load them)
    checkpoints/STEP/train         orbax: optimizer state + step (training runs only)
    checkpoints/STEP/data_iter     the grain iterator state (training/data_checkpoint.py)
    checkpoints/STEP/model_config  orbax JSON: the ModelConfig the parameters belong to
    checkpoints/STEP/checksums.json  size and sha256 of every file of the step, written once the
                                   save has finished, verified on restore
                                   (model/checkpoint_manifest.py)
    tokenizer.model                the SentencePiece model
    import.json                    imported public checkpoints only: source, family, special
                                   ids and BOS policy of the tokenizer
    config.json, model_config.json the config of the run's latest launch (for people and sweeps)
    identity.json                  the run's identity: the resolved settings that determine its
                                   numbers, recorded at its start, checked on every resume
                                   (model/run_identity.py)
    config_history.jsonl           one line per launch that started or changed the run: step,
                                   the keys that changed (old and new), whether a changed
                                   identity was allowed (resume_mismatch=allow)
    metrics.jsonl                  one JSON object per logged step
    run.lock                       while a run works here: who it is (rundir/workdir_lock.py)
    checkpoints/STEP.corrupt       a step that failed to restore, kept for inspection

An eval workdir (eval.py, studies):

    samples.jsonl                  one scored sample a line, appended problem by problem
    results.json, report.md        pass@k and friends (evaluation/results.py, report.py)
    evalplus_references.jsonl      HumanEval+ / MBPP+ only: each task's reference outputs, computed
                                   once (evaluation/evalplus_references.py)
    throughput.json                each launch's sampling/execution totals, summed into
                                   results.json's meta.throughput (evaluation/throughput_ledger.py)
    config.json                    the eval config of the latest launch (for people and sweeps)
    identity.json, config_history.jsonl  as for training: the checkpoint (step and content),
                                   sampling settings, seed, prompt, task, split, ...
    run.lock                       while an eval works here

Everything else reads and writes these through the names here, so a layout change is one
edit. Reading the checkpoints themselves needs orbax and JAX: model/run_dir.py does that, with
these names. This module imports neither, so scoring a samples file and sweeps/status.py do not
need them.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

from rundir import workdir_lock as workdir_lock_lib

CHECKPOINTS_DIR = "checkpoints"
TOKENIZER_FILE = "tokenizer.model"
IMPORT_FILE = "import.json"
CONFIG_FILE = "config.json"
MODEL_CONFIG_FILE = "model_config.json"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
EVALPLUS_REFERENCES_FILE = "evalplus_references.jsonl"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
LOCK_FILE = "run.lock"
IDENTITY_FILE = "identity.json"
CONFIG_HISTORY_FILE = "config_history.jsonl"
MANIFEST_FILE = "checksums.json"  # checkpoints/STEP/checksums.json (model/checkpoint_manifest.py)
THROUGHPUT_FILE = "throughput.json"
CORRUPT_SUFFIX = ".corrupt"

# Orbax items of one checkpoint step.
PARAMS_ITEM = "params"
TRAIN_ITEM = "train"
DATA_ITER_ITEM = "data_iter"
MODEL_CONFIG_ITEM = "model_config"


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used with the requested model (clear message for the user)."""


class IdentityMismatch(CheckpointError):
  """A resume asked for another run than the one its workdir holds (model/run_identity.py).

  A CheckpointError so that train.py and eval.py report it as one line with exit status 2."""


def workdir_lock(workdir: str) -> workdir_lock_lib.WorkdirLock:
  """The lock that one run (train, eval, study) holds on its workdir while it works there."""
  return workdir_lock_lib.WorkdirLock(os.path.join(workdir, LOCK_FILE), workdir)


def set_aside_step(workdir: str, step: int) -> str:
  """Renames checkpoints/STEP to STEP.corrupt (or .corrupt-2, ...), so that nothing restores
  it again and a person can still inspect it; returns the new path."""
  source = os.path.join(checkpoints_dir(workdir), str(step))
  target = source + CORRUPT_SUFFIX
  n = 1
  while os.path.exists(target):
    n += 1
    target = f"{source}{CORRUPT_SUFFIX}-{n}"
  os.rename(source, target)
  return target


def checkpoints_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINTS_DIR)


def checkpoint_steps(workdir: str) -> list[int]:
  """Step folders of WORKDIR/checkpoints, ascending; orbax's temporary folders (non-digit
  names) are not steps."""
  directory = os.path.join(workdir, CHECKPOINTS_DIR)
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def resolve_checkpoint(path: str) -> tuple[str, int]:
  """A workdir, its checkpoints/ folder or one STEP folder -> (checkpoints dir, step).

  The directory is absolute: orbax refuses relative paths (runs/pretrain)."""
  p = os.path.abspath(path)
  if not os.path.exists(p):
    raise CheckpointError(f"init_from/checkpoint path {path} does not exist")
  if os.path.isdir(os.path.join(p, CHECKPOINTS_DIR)):
    p = os.path.join(p, CHECKPOINTS_DIR)
  name = os.path.basename(p)
  if os.path.isdir(os.path.join(p, PARAMS_ITEM)) and name.isdigit():
    return os.path.dirname(p), int(name)
  steps = sorted(int(c) for c in os.listdir(p)
                 if c.isdigit() and os.path.isdir(os.path.join(p, c, PARAMS_ITEM)))
  if not steps:
    raise CheckpointError(f"no checkpoint found under {path} (expected a run's workdir, its "
                          f"{CHECKPOINTS_DIR}/ folder or a step folder holding "
                          f"'{PARAMS_ITEM}/')")
  return p, steps[-1]


def run_of(path: str) -> str:
  """The run directory that a workdir / checkpoints dir / step dir belongs to."""
  directory, _ = resolve_checkpoint(path)
  return os.path.dirname(directory)


# --- Tokenizer -----------------------------------------------------------------------------

def tokenizer_path(path: str) -> str | None:
  """The tokenizer.model of the run that `path` (workdir / checkpoints / step) belongs to."""
  candidate = os.path.join(run_of(path), TOKENIZER_FILE)
  return candidate if os.path.exists(candidate) else None


def import_metadata(run: str) -> dict[str, Any] | None:
  """The import.json of an imported run (None for our own runs)."""
  path = os.path.join(run, IMPORT_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _atomic_copy(src: str, dst: str) -> None:
  # Other processes may look for dst at any moment: never let them see half a file.
  shutil.copyfile(src, dst + ".tmp")
  os.replace(dst + ".tmp", dst)


def install_tokenizer(tokenizer_file: str, run: str) -> None:
  """Copies a tokenizer.model into `run`, with the import.json it carries (if any)."""
  sidecar = os.path.join(os.path.dirname(tokenizer_file), IMPORT_FILE)
  if os.path.exists(sidecar):
    _atomic_copy(sidecar, os.path.join(run, IMPORT_FILE))
  _atomic_copy(tokenizer_file, os.path.join(run, TOKENIZER_FILE))


def write_text(run: str, name: str, text: str) -> str:
  """Writes one of the run's small files atomically; returns its path."""
  os.makedirs(run, exist_ok=True)
  path = os.path.join(run, name)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
  return path
