"""Train or finetune a decoder.

    python train.py --config=configs/pretrain.py [--workdir=runs/pretrain] [--config.KEY=VALUE ...]

WORKDIR defaults to runs/NAME for configs/NAME.py (launch/commands.py). Writes
WORKDIR/metrics.jsonl (and TensorBoard event files), WORKDIR/checkpoints/, WORKDIR/config.json,
model_config.json and tokenizer.model; rerunning the same command resumes from the latest checkpoint. Multi-host:
start one process per host with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID
set (or under SLURM / a TPU pod, where JAX finds them itself) and pass --distributed.

Exit status: 0 done; 75 stopped by SIGTERM/SIGINT after saving a checkpoint of the last step,
or before the first step when the signal came during setup (run the same command to
continue); 2 a problem to fix first (one line on stderr: the workdir is in use by another run
or not writable, the disk is full, no usable checkpoint, an unknown config key, a config value
out of range: launch/validate.py); 1 anything else.
"""
# First, before the slow imports: a SIGTERM from here on stops the run with EXIT_PREEMPTED
# (without it, a signal during the first seconds killed the process: exit 143).
from training import preemption  # pylint: disable=g-bad-import-order  (imports no JAX)
preemption.catch_early()

# pylint: disable=wrong-import-position
from absl import app, flags, logging
from ml_collections import config_flags

from launch import commands
from launch.overrides import parse_flags
from rundir.multihost import maybe_initialize_distributed
from rundir.logs import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics "
                                "(default: runs/NAME for --config=configs/NAME.py).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-process runs).")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  workdir = _WORKDIR.value or commands.train_workdir(
      config_flags.get_config_filename(flags.FLAGS["config"]))
  problem = commands.train_problem(_CONFIG.value)
  if problem:
    commands.fail(problem)
  logging.info("Workdir: %s", workdir)
  maybe_initialize_distributed(_DISTRIBUTED.value)
  # pylint: disable=g-import-not-at-top  (after distributed init)
  from training.loop import InvalidConfig, train
  from training.save_failures import quiet_storage_failures
  quiet_storage_failures()
  logging.info("Config:\n%s", _CONFIG.value)
  stopped = preemption.stopped_early()
  if stopped and not _DISTRIBUTED.value:
    # Several processes must stop at one agreed step, so they go on to train() (StopSignals
    # hands the signal to JAX's protocol); a single one has nothing to save yet.
    logging.warning("%s", stopped)
    preemption.exit_preempted()

  def run() -> None:
    try:
      train(_CONFIG.value, workdir)
    except preemption.Preempted as e:
      logging.warning("%s", e)
      preemption.exit_preempted()

  commands.run_or_fail(run, (InvalidConfig,))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
