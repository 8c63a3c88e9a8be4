"""Evaluate a checkpoint (or a file of completions) on MBPP synthesis, execution or MathQA.

    python eval.py --config=configs/eval_synthesis.py --workdir=runs/eval-syn \
        --config.checkpoint=runs/pretrain --config.data.manual_dir=../shared/data/mbpp
    python eval.py --config=configs/eval_synthesis.py --workdir=runs/ext \
        --config.samples_path=their_samples.jsonl --config.data.manual_dir=../shared/data/mbpp

Writes WORKDIR/samples.jsonl, results.json and report.md (+ plots); rerunning resumes.
"""
from absl import app, flags
from ml_collections import config_flags

from training.metrics import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Eval config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for samples and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  from evaluation.runner import run_eval  # pylint: disable=g-import-not-at-top
  run_eval(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
