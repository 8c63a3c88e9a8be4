"""The run directory: the one module that names a run's files and loads its parts.

A training run (train.py's workdir; also what model/import_checkpoint.py writes):

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
    run.lock                       while a run works here: who it is (model/workdir_lock.py)
    checkpoints/STEP.corrupt       a step that failed to restore, kept for inspection

An eval workdir (eval.py, studies):

    samples.jsonl                  one scored sample a line, appended problem by problem
    results.json, report.md        pass@k and friends (evaluation/results.py, report.py)
    throughput.json                each launch's sampling/execution totals, summed into
                                   results.json's meta.throughput (evaluation/throughput_ledger.py)
    config.json                    the eval config of the latest launch (for people and sweeps)
    identity.json, config_history.jsonl  as for training: the checkpoint (step and content),
                                   sampling settings, seed, prompt, task, split, ...
    run.lock                       while an eval works here

Everything else reads and writes these through the names and loaders here, so a layout change
is one edit. This module sits low (model/ imports nothing above it), so training/,
evaluation/ and sweeps/ all use it without importing each other.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from data.tokenizer import Tokenizer
from model import checkpoint_manifest, layer_stack
from model import workdir_lock as workdir_lock_lib
from model.config import ModelConfig

CHECKPOINTS_DIR = "checkpoints"
TOKENIZER_FILE = "tokenizer.model"
IMPORT_FILE = "import.json"
CONFIG_FILE = "config.json"
MODEL_CONFIG_FILE = "model_config.json"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
LOCK_FILE = "run.lock"
IDENTITY_FILE = "identity.json"
CONFIG_HISTORY_FILE = "config_history.jsonl"
MANIFEST_FILE = checkpoint_manifest.MANIFEST_FILE  # checkpoints/STEP/checksums.json
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


def checkpoint_handlers(**extra: Any) -> dict[str, Any]:
  """Orbax item handlers of a step; training adds its data-iterator handler via `extra`.

  Declared up front so that metadata (shapes) can be read before restoring anything.
  """
  return {PARAMS_ITEM: ocp.StandardCheckpointHandler(),
          TRAIN_ITEM: ocp.StandardCheckpointHandler(),
          MODEL_CONFIG_ITEM: ocp.JsonCheckpointHandler(), **extra}


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


def resolve_checkpoint(path: str) -> tuple[epath.Path, int]:
  """A workdir, its checkpoints/ folder or one STEP folder -> (checkpoints dir, step)."""
  p = epath.Path(os.path.abspath(path))  # Orbax refuses relative paths (runs/pretrain).
  if not p.exists():
    raise CheckpointError(f"init_from/checkpoint path {path} does not exist")
  if (p / CHECKPOINTS_DIR).is_dir():
    p = p / CHECKPOINTS_DIR
  if (p / PARAMS_ITEM).is_dir() and p.name.isdigit():
    return p.parent, int(p.name)
  steps = sorted(int(c.name) for c in p.iterdir()
                 if c.name.isdigit() and (c / PARAMS_ITEM).is_dir())
  if not steps:
    raise CheckpointError(f"no checkpoint found under {path} (expected a run's workdir, its "
                          f"{CHECKPOINTS_DIR}/ folder or a step folder holding "
                          f"'{PARAMS_ITEM}/')")
  return p, steps[-1]


def run_of(path: str) -> str:
  """The run directory that a workdir / checkpoints dir / step dir belongs to."""
  directory, _ = resolve_checkpoint(path)
  return os.path.dirname(str(directory))


def check_shapes(saved: Any, expected: Any, what: str, where: str) -> None:
  """Compares a checkpoint's array metadata with the model's abstract arrays, path by path."""
  def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    return {jax.tree_util.keystr(p): tuple(m.shape)
            for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]}
  saved_shapes, expected_shapes = shapes(saved), shapes(_str_keys(expected))
  problems = []
  for path in sorted(set(saved_shapes) | set(expected_shapes)):
    got, want = saved_shapes.get(path), expected_shapes.get(path)
    if got != want:
      problems.append(f"{path}: checkpoint {got or 'missing'}, model {want or 'missing'}")
  if problems:
    raise CheckpointError(
        f"The {what} in {where} do not match the configured model ({len(problems)} "
        f"mismatches):\n  " + "\n  ".join(problems[:20]) +
        "\nUse the model config the checkpoint was trained with (its model_config item), or "
        "a different checkpoint.")


def _str_keys(tree: Any) -> Any:
  # Orbax stores dict keys as strings ("blocks": {"0": ...}); compare like with like.
  if isinstance(tree, dict):
    return {str(k): _str_keys(v) for k, v in tree.items()}
  return tree


def load_params(path: str, abstract_params: Any) -> Any:
  """Parameters only, from a workdir / checkpoints dir / step dir, sharded as given.

  Reads the params item alone (not through a manager of the whole step), so the step's other
  items (optimizer, data iterator) are neither read nor need handlers here. Checkpoints
  written before the blocks were stacked ({"blocks": {"0": ..., "1": ...}}) are read in that
  layout and stacked (model/layer_stack.py).
  """
  directory, step = resolve_checkpoint(path)
  item = directory / str(step) / PARAMS_ITEM
  try:  # every process reads the parameters, so each checks what it reads
    checkpoint_manifest.verify(str(directory / str(step)), items=(PARAMS_ITEM,))
  except checkpoint_manifest.ManifestMismatch as e:
    raise CheckpointError(_damaged(directory, step, e.path, e.reason)) from e
  handler = ocp.StandardCheckpointHandler()
  try:
    metadata = handler.metadata(item)
    saved = getattr(metadata, "tree", metadata)
    per_layer = layer_stack.is_per_layer(saved)
    target = layer_stack.per_layer_target(abstract_params) if per_layer else abstract_params
    check_shapes(saved, target, "parameters", str(item))
    params = handler.restore(item, args=ocp.args.StandardRestore(target))
  except (CheckpointError, MemoryError, KeyboardInterrupt):
    raise
  except Exception as e:  # pylint: disable=broad-except  (orbax's many ways to fail a read)
    raise CheckpointError(_damaged(directory, step, str(item), _first_line(e))) from e
  finally:
    handler.close()
  return layer_stack.stack_per_layer(params, abstract_params) if per_layer else params


def _first_line(error: BaseException) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _damaged(directory: epath.Path, step: int, where: str, reason: str) -> str:
  """The one line for a step that cannot be read (damaged or incomplete): which file, why,
  what to do."""
  earlier = [s for s in sorted(int(c.name) for c in directory.iterdir() if c.name.isdigit())
             if s < step]
  advice = (f"point at the previous step instead ({directory / str(earlier[-1])})"
            if earlier else "no earlier step to use instead")
  return (f"checkpoint step {step} in {directory} is damaged ({where}: {reason}); {advice}, "
          f"or rename {directory / str(step)} to {step}{CORRUPT_SUFFIX} to set it aside")


def load_model_config(path: str) -> ModelConfig:
  """The model config stored with a checkpoint (so eval/finetuning can rebuild the model)."""
  directory, step = resolve_checkpoint(path)
  config_path = directory / str(step) / MODEL_CONFIG_ITEM / "metadata"
  if not config_path.exists():
    raise CheckpointError(f"{directory}/{step} has no {MODEL_CONFIG_ITEM} item")
  try:
    return ModelConfig.from_json(config_path.read_text())
  except (ValueError, TypeError, UnicodeDecodeError) as e:
    raise CheckpointError(_damaged(directory, step, str(config_path), _first_line(e))) from e


def model_config_save_arg(model_config: ModelConfig) -> Any:
  return ocp.args.JsonSave(json.loads(model_config.to_json()))


def save_params_checkpoint(directory: str, params: Any, model_config: ModelConfig,
                           step: int = 0, save_concurrent_gb: int = 4) -> str:
  """Writes DIRECTORY/checkpoints/STEP/{params, model_config}, readable by `load_params`.

  For checkpoints made outside training (model/import_checkpoint.py): the same layout and
  item handlers as a run's checkpoint, without optimizer or iterator state, so `init_from`
  and eval load it like any run. `save_concurrent_gb` bounds the device->host bytes in flight
  while writing (orbax's default, 96 GB, would stage a 7B float32 model on the host at once).
  Returns the step folder.
  """
  handlers = checkpoint_handlers()
  handlers[PARAMS_ITEM] = ocp.StandardCheckpointHandler(save_concurrent_gb=save_concurrent_gb)
  options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
  root = checkpoints_dir(directory)
  with ocp.CheckpointManager(root, options=options, item_handlers=handlers) as manager:
    manager.save(step, args=ocp.args.Composite(**{
        PARAMS_ITEM: ocp.args.StandardSave(params),
        MODEL_CONFIG_ITEM: model_config_save_arg(model_config)}), force=True)
    manager.wait_until_finished()
  checkpoint_manifest.write(os.path.join(root, str(step)))  # verified like a training step's
  return os.path.join(root, str(step))


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


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
  """A tokenizer.model file, with the conventions of the run it sits in.

  Beside an import.json (an imported public checkpoint), its special ids are accepted as
  they are and its BOS policy is read from there, so eval.py and train.py need no flag for
  imported runs; otherwise it is one of our own tokenizers.
  """
  metadata = import_metadata(os.path.dirname(os.fspath(path)))
  if metadata is not None:
    return Tokenizer.load(path, imported=True,
                          add_bos=bool(metadata.get("tokenizer", {}).get("add_bos", False)))
  return Tokenizer.load(path)


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
