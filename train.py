"""Train or finetune a decoder.

    python train.py --config=configs/pretrain.py --workdir=runs/pretrain [--config.KEY=VALUE ...]

Writes WORKDIR/metrics.jsonl, WORKDIR/checkpoints/, WORKDIR/config.json, model_config.json and
tokenizer.model; rerunning the same command resumes from the latest checkpoint. Multi-host:
start one process per host with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID
set (or under SLURM / a TPU pod, where JAX finds them itself) and pass --distributed.

Exit status: 0 done; 75 stopped by SIGTERM/SIGINT after saving a checkpoint of the last step
(run the same command to continue); 2 a problem to fix first (one line on stderr: the workdir
is in use by another run or not writable, the disk is full, no usable checkpoint, an unknown
config key); 1 anything else.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from configs.overrides import parse_flags
from model import workdir_lock
from model.run_dir import CheckpointError
from training.distributed import maybe_initialize_distributed
from training.metrics import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-process runs).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  maybe_initialize_distributed(_DISTRIBUTED.value)
  # pylint: disable=g-import-not-at-top  (after distributed init)
  from training import preemption
  from training.loop import train
  logging.info("Config:\n%s", _CONFIG.value)
  try:
    train(_CONFIG.value, _WORKDIR.value)
  except preemption.Preempted as e:
    logging.warning("%s", e)
    sys.exit(preemption.EXIT_PREEMPTED)
  except (workdir_lock.WorkdirLocked, CheckpointError) as e:
    _fail(str(e))
  except Exception as e:  # pylint: disable=broad-except
    message = workdir_lock.storage_failure(e)
    if message is None:
      raise
    _fail(message)


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  logging.flush()
  # Not sys.exit: orbax's writer threads would print their own copies of a storage failure
  # while the interpreter shuts down (hundreds of lines around this one).
  os._exit(2)  # pylint: disable=protected-access


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
