"""Evaluate a checkpoint (or a file of completions) on MBPP synthesis, execution or MathQA.

    python eval.py --config=configs/eval_synthesis.py --workdir=runs/eval-syn \
        --config.checkpoint=runs/pretrain --config.data.manual_dir=../shared/data/mbpp
    python eval.py --config=configs/eval_synthesis.py --workdir=runs/ext \
        --config.samples_path=their_samples.jsonl --config.data.manual_dir=../shared/data/mbpp

--config defaults to configs/eval_synthesis.py and --workdir to runs/CONFIG-RUN (the
evaluated run's or samples file's name; launch/commands.py). Writes WORKDIR/samples.jsonl,
results.json, report.md (+ plots) and TensorBoard event files; rerunning resumes. Exit
status 2 with one line on stderr for a problem to fix first (no model or samples given, the
workdir is in use by another eval or not writable, the disk is full, a malformed samples file,
a workdir holding another run's samples, a checkpoint that does not fit, an unknown config
key).

Multi-host (a model too large for one host): start one process per host, like train.py, with
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set (or under SLURM / a TPU
pod, where JAX finds them itself) and --distributed. The mesh spans every host's devices and
the parameters stay sharded across them; every process samples every batch in lockstep, and
process 0 alone runs the sandbox and writes the workdir (which need exist only on its host),
so each problem is executed and written once. The samples equal those of one process with as
many devices, and resume is as exact (evaluation/process_zero_scorer.py).
"""
from absl import app, flags, logging
from ml_collections import config_flags

from launch import commands
from launch.overrides import parse_flags
from rundir.logs import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", commands.DEFAULT_EVAL_CONFIG,
                                          "Eval config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for samples and results "
                                "(default: runs/CONFIG-RUN).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-process runs).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  problem = commands.eval_problem(_CONFIG.value)
  if problem:
    commands.fail(problem)
  workdir = _WORKDIR.value or commands.eval_workdir(
      config_flags.get_config_filename(flags.FLAGS["config"]), _CONFIG.value)
  logging.info("Workdir: %s", workdir)
  # pylint: disable=g-import-not-at-top  (after the checks above: they need no JAX)
  from decode.host_devices import split_host_cpu
  split_host_cpu(_CONFIG.value.cpu_devices)  # before JAX starts its backends
  from rundir.multihost import PeerFailed, maybe_initialize_distributed
  maybe_initialize_distributed(_DISTRIBUTED.value)
  from evaluation.runner import run_eval
  from evaluation.samples import SamplesFileError
  from evaluation.scorer import WorkdirMismatch
  commands.run_or_fail(lambda: run_eval(_CONFIG.value, workdir),
                       (SamplesFileError, WorkdirMismatch, PeerFailed))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
