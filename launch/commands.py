"""What train.py and eval.py assume when a flag is left out, and what they say is missing.

The commands as the README writes them:

    python train.py --config=configs/pretrain.py     # workdir runs/pretrain
    python train.py --config=configs/synthesis.py    # workdir runs/synthesis, from runs/pretrain
    python eval.py --config.checkpoint=runs/synthesis  # configs/eval_synthesis.py,
                                                       # workdir runs/eval_synthesis-synthesis

A missing prerequisite (the base model of a finetuning config, eval.py's model or samples)
is one line naming the command that makes it, before anything is loaded; the entry points
exit with status 2 (a usage error) and no traceback.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Callable

import ml_collections
from absl import logging

from launch import validate

RUNS_DIR = "runs"
# The experiment files: ../configs beside this package.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs")
DEFAULT_EVAL_CONFIG = os.path.join(CONFIGS_DIR, "eval_synthesis.py")


def config_name(config_path: str) -> str:
  """configs/synthesis.py -> synthesis (a `:arg` suffix of ml_collections is dropped)."""
  return os.path.splitext(os.path.basename(config_path.split(":", 1)[0]))[0]


def train_workdir(config_path: str) -> str:
  """train.py's workdir when --workdir is left out: runs/NAME for configs/NAME.py."""
  return os.path.join(RUNS_DIR, config_name(config_path))


def eval_workdir(config_path: str, config: ml_collections.ConfigDict) -> str:
  """eval.py's workdir when --workdir is left out: runs/EVALCONFIG-SOURCE, SOURCE being the
  evaluated run's directory name or the samples file's name, so that evaluating another
  model never resumes (and mixes with) the samples of the last one."""
  source = config.samples_path or config.checkpoint
  if config.checkpoint and not config.samples_path:
    parts = os.path.normpath(config.checkpoint).split(os.sep)
    # runs/NAME/checkpoints/STEP -> NAME-STEP; runs/NAME -> NAME.
    if len(parts) >= 3 and parts[-2] == "checkpoints" and parts[-1].isdigit():
      source = f"{parts[-3]}-{parts[-1]}"
  name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0] if source else ""
  return os.path.join(RUNS_DIR, config_name(config_path) + (f"-{name}" if name else ""))


def _train_command(run: str) -> str | None:
  """The README command whose default workdir is `run`, if `run` is one (runs/pretrain)."""
  parts = os.path.normpath(run).split(os.sep)
  if len(parts) == 2 and parts[0] == RUNS_DIR:
    config_file = os.path.join(CONFIGS_DIR, parts[1] + ".py")
    if os.path.isfile(config_file):
      return f"python train.py --config=configs/{parts[1]}.py"
  return None


def _wandb_problem(config: ml_collections.ConfigDict) -> str | None:
  if "wandb" in config and config.wandb.enabled and importlib.util.find_spec("wandb") is None:
    return ("--config.wandb.enabled=true needs the wandb package: pip install wandb (or "
            "leave W&B off; TensorBoard event files are written either way)")
  return None


def train_problem(config: ml_collections.ConfigDict) -> str | None:
  """Why train.py cannot start with `config`, in one line; None when it can."""
  problem = validate.train_problem(config) or _wandb_problem(config)
  if problem:
    return problem
  init_from = config.get("init_from", "")
  if init_from and not os.path.exists(init_from):
    made_by = _train_command(init_from)
    first = f"make it first with `{made_by}`, or " if made_by else ""
    return (f"the base model config.init_from={init_from} does not exist: {first}point "
            "--config.init_from= at a train.py workdir or one of its checkpoints/STEP "
            "folders, or import one (`python -m interop.import_checkpoint --source=HF_DIR "
            f"--output={init_from}`)")
  return None


def eval_problem(config: ml_collections.ConfigDict) -> str | None:
  """Why eval.py cannot start with `config`, in one line; None when it can."""
  problem = validate.eval_problem(config) or _wandb_problem(config)
  if problem:
    return problem
  if config.samples_path:
    if not os.path.isfile(config.samples_path):
      return f"the samples file --config.samples_path={config.samples_path} does not exist"
    return None
  if not config.checkpoint:
    return ("no model or samples to score: set --config.checkpoint=RUN (a train.py "
            "workdir, e.g. runs/synthesis after `python train.py --config=configs/"
            "synthesis.py`) or --config.samples_path=FILE (ours, bigcode-evaluation-harness, "
            "EvalPlus or lm-evaluation-harness output)")
  if not os.path.exists(config.checkpoint):
    made_by = _train_command(config.checkpoint)
    return (f"the checkpoint --config.checkpoint={config.checkpoint} does not exist"
            + (f": make it first with `{made_by}`" if made_by else ""))
  return None


def fail(message: str) -> None:
  """One line on stderr and exit status 2: a problem the user fixes first (usage errors,
  missing prerequisites, a workdir in use, a full disk, ...), never a traceback.

  os._exit, not sys.exit: orbax's writer threads and the sandbox's pool would otherwise print
  their own copies of a storage failure while the interpreter shuts down (hundreds of lines
  around this one).
  """
  print(f"error: {message}", file=sys.stderr, flush=True)
  logging.flush()
  os._exit(2)  # pylint: disable=protected-access


def run_or_fail(run: Callable[[], Any],
                problems: tuple[type[BaseException], ...] = ()) -> Any:
  """Runs an entry point's job; what the user must fix first becomes fail()'s one line: a
  workdir in use or not writable, a checkpoint that cannot be used, a dataset's files
  missing or unusable (an empty corpus directory, MBPP offline), a full disk (found
  anywhere in an exception's chain: orbax wraps it), or one of `problems`. Anything else
  propagates with its traceback (a bug)."""
  # Imported here: the checks above this function fail fast without loading TFDS.
  from data.source_files import DatasetFileError  # pylint: disable=g-import-not-at-top
  from rundir import layout, workdir_lock  # pylint: disable=g-import-not-at-top
  try:
    return run()
  except (workdir_lock.WorkdirLocked, layout.CheckpointError, DatasetFileError) + problems as e:
    fail(str(e))
  except Exception as e:  # pylint: disable=broad-except
    message = workdir_lock.storage_failure(e)
    if message is None:
      raise
    fail(message)
