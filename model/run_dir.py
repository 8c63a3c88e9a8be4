"""A run's checkpoints: reading and writing them with orbax (the parameters, the model config).

The run directory's file names, small files and checkpoint steps are rundir/layout.py's (no
JAX there, so scoring and sweeps need none); its names are re-exported here, so that the
training and model code reading checkpoints asks one module.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from data.tokenizer import Tokenizer
from model import checkpoint_manifest, layer_stack
from model.config import ModelConfig
# pylint: disable=unused-import  (re-exported: the run directory's names and small files)
from rundir.layout import (  # noqa: F401
    CHECKPOINTS_DIR, CONFIG_FILE, CONFIG_HISTORY_FILE, CORRUPT_SUFFIX, DATA_ITER_ITEM,
    IDENTITY_FILE, IMPORT_FILE, LOCK_FILE, MANIFEST_FILE, METRICS_FILE, MODEL_CONFIG_FILE,
    MODEL_CONFIG_ITEM, PARAMS_ITEM, REPORT_FILE, RESULTS_FILE, SAMPLES_FILE, THROUGHPUT_FILE,
    TOKENIZER_FILE, TRAIN_ITEM, CheckpointError, IdentityMismatch, checkpoint_steps,
    checkpoints_dir, import_metadata, install_tokenizer, resolve_checkpoint, run_of,
    set_aside_step, tokenizer_path, workdir_lock, write_text)
# pylint: enable=unused-import


def checkpoint_handlers(**extra: Any) -> dict[str, Any]:
  """Orbax item handlers of a step; training adds its data-iterator handler via `extra`.

  Declared up front so that metadata (shapes) can be read before restoring anything.
  """
  return {PARAMS_ITEM: ocp.StandardCheckpointHandler(),
          TRAIN_ITEM: ocp.StandardCheckpointHandler(),
          MODEL_CONFIG_ITEM: ocp.JsonCheckpointHandler(), **extra}


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
  directory = epath.Path(directory)
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
  directory = epath.Path(directory)
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

  For checkpoints made outside training (interop/import_checkpoint.py): the same layout and
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
