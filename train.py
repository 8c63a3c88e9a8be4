"""Train or finetune a decoder.

    python train.py --config=configs/pretrain.py [--workdir=runs/pretrain] [--config.KEY=VALUE ...]

WORKDIR defaults to runs/NAME for configs/NAME.py (configs/commands.py). Writes
WORKDIR/metrics.jsonl (and TensorBoard event files), WORKDIR/checkpoints/, WORKDIR/config.json, model_config.json and
tokenizer.model; rerunning the same command resumes from the latest checkpoint. Multi-host:
start one process per host with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID
set (or under SLURM / a TPU pod, where JAX finds them itself) and pass --distributed.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from configs import commands
from training.distributed import maybe_initialize_distributed
from training.metrics import quiet_library_logs

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
    commands.exit_with_error("train.py", problem)
  logging.info("Workdir: %s", workdir)
  maybe_initialize_distributed(_DISTRIBUTED.value)
  from training.loop import train  # pylint: disable=g-import-not-at-top  (after distributed init)
  logging.info("Config:\n%s", _CONFIG.value)
  train(_CONFIG.value, workdir)


if __name__ == "__main__":
  app.run(main)
