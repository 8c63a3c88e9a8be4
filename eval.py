"""Evaluate a checkpoint (or a file of completions) on MBPP synthesis, execution or MathQA.

    python eval.py --config=configs/eval_synthesis.py --workdir=runs/eval-syn \
        --config.checkpoint=runs/pretrain --config.data.manual_dir=../shared/data/mbpp
    python eval.py --config=configs/eval_synthesis.py --workdir=runs/ext \
        --config.samples_path=their_samples.jsonl --config.data.manual_dir=../shared/data/mbpp

Writes WORKDIR/samples.jsonl, results.json and report.md (+ plots); rerunning resumes. Exit
status 2 with one line on stderr for a problem to fix first (the workdir is in use by another
eval or not writable, the disk is full, a malformed samples file, a workdir holding another
run's samples, a checkpoint that does not fit, an unknown config key).
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from configs.overrides import parse_flags
from model import workdir_lock
from model.run_dir import CheckpointError
from training.metrics import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Eval config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for samples and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  # pylint: disable=g-import-not-at-top
  from evaluation.runner import run_eval
  from evaluation.samples import SamplesFileError
  from evaluation.scorer import WorkdirMismatch
  try:
    run_eval(_CONFIG.value, _WORKDIR.value)
  except (workdir_lock.WorkdirLocked, CheckpointError, SamplesFileError, WorkdirMismatch) as e:
    _fail(str(e))
  except Exception as e:  # pylint: disable=broad-except
    message = workdir_lock.storage_failure(e)
    if message is None:
      raise
    _fail(message)


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  logging.flush()
  os._exit(2)  # pylint: disable=protected-access  (no sandbox/orbax thread noise at shutdown)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
