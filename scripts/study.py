r"""The paper's studies, one command each (evaluation/studies.py has the details):

    python scripts/study.py --study=tests_shown --config=configs/eval_synthesis.py \
        --workdir=runs/study-tests --config.checkpoint=runs/pretrain \
        --config.data.manual_dir=../shared/data/mbpp
    python scripts/study.py --study=prompt_sensitivity ...   # 15 seeded prompts + ensemble
    python scripts/study.py --study=temperature --values=0.2,0.5,0.8 ...
    python scripts/study.py --study=repair --rounds=4 ...     # execution-feedback repair
                                                              # and its no-feedback control

Writes WORKDIR/study.md (repair.md), a JSON summary and a plot; rerunning resumes. Exit status
2 with one line on stderr for a problem to fix first (the workdir is in use by another run or
not writable, the disk is full, a checkpoint that does not fit, an unknown config key).
"""
import os
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch import commands  # noqa: E402
from launch.overrides import parse_flags  # noqa: E402
from evaluation.studies import DEFAULT_REPAIR_ROUNDS, STUDY_NAMES  # noqa: E402
from rundir.logs import quiet_library_logs  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base eval config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the study.")
_STUDY = flags.DEFINE_enum("study", None, STUDY_NAMES, "Which study to run.")
_VALUES = flags.DEFINE_string("values", "", "Comma-separated values replacing the study's "
                              "defaults (not for repair).")
_ROUNDS = flags.DEFINE_integer("rounds", DEFAULT_REPAIR_ROUNDS, "Repair rounds after round 0.")
_CONTROL = flags.DEFINE_boolean("repair_control", True, "Repair: also run the control arm, "
                                "the same rounds without feedback (about doubles the sampling "
                                "after round 0; --norepair_control skips it).")
flags.mark_flags_as_required(["config", "workdir", "study"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  from decode.host_devices import split_host_cpu  # pylint: disable=g-import-not-at-top
  split_host_cpu(_CONFIG.value.cpu_devices)  # before JAX starts its backends
  from evaluation.studies import run_study  # pylint: disable=g-import-not-at-top
  commands.run_or_fail(lambda: run_study(_CONFIG.value, _WORKDIR.value, _STUDY.value,
                                         _VALUES.value, _ROUNDS.value, _CONTROL.value))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
