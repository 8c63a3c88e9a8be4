"""The paper's study in one command: pretrain, finetune on synthesis and on execution,
evaluate few-shot and both finetuned models on both tasks and all three on HumanEval, and
compare.

    python scripts/reproduce.py --scale=tiny --root=runs/reproduce-tiny \
        --mbpp_dir=../shared/data/mbpp --humaneval_dir=../shared/data/humaneval

Scales (sweeps/reproduce.py SCALES): tiny (2-core CPU, 14-19 min, and about 1.5 min more
for the three HumanEval evals), small (244m, one GPU), medium (1b, weights sharded over a pod
slice; at these two HumanEval adds about a third of the MBPP synthesis evals' sampling).
Rerunning resumes: finished stages are skipped, interrupted ones continue from their
checkpoints / scored samples. Writes ROOT/compare.md (the table: a row per model, objective
and task), compare.csv, compare.jsonl, compare_*.png, and ROOT/transfer.md, transfer.csv,
transfer.png: MBPP and HumanEval pass@k side by side per objective, with transfer = the
finetuned model's HumanEval pass@k minus the pretrained-only one's (evaluation/transfer.py),
next to the stage workdirs (ROOT/pretrain, ROOT/ft-*, ROOT/eval-*). A tiny model scores about
0 on HumanEval (and on MBPP): at that scale the pipeline is the point, not the numbers.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from rundir.logs import quiet_library_logs  # noqa: E402

_SCALE = flags.DEFINE_string("scale", "tiny", "tiny | small | medium")
_ROOT = flags.DEFINE_string("root", "runs/reproduce-tiny", "where every stage's workdir goes")
_MBPP_DIR = flags.DEFINE_string("mbpp_dir", "", "local MBPP files (empty: download)")
_HUMANEVAL_DIR = flags.DEFINE_string("humaneval_dir", "", "local folder with "
                                     "HumanEval.jsonl.gz (empty: download)")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data_dir (empty: TFDS default)")


def main(argv):
  del argv
  quiet_library_logs()
  from sweeps import reproduce  # pylint: disable=g-import-not-at-top
  rows = reproduce.run(_SCALE.value, _ROOT.value, _MBPP_DIR.value, _DATA_DIR.value,
                       _HUMANEVAL_DIR.value)
  from evaluation import compare, transfer  # pylint: disable=g-import-not-at-top
  print(compare.to_markdown(rows), end="")
  print("\nTransfer to HumanEval:\n" + transfer.to_markdown(transfer.transfer_rows(rows)),
        end="")


if __name__ == "__main__":
  app.run(main)
