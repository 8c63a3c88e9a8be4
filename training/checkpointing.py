"""Orbax checkpoints of a run: parameters, optimizer state, the data iterator, the model config.

Layout: WORKDIR/checkpoints/STEP/{params, train, data_iter, model_config}. Parameters are their
own item so that another run can start from them (`config.init_from`) without caring about this
run's optimizer, and so eval can load them alone. Saves are asynchronous (the step loop goes on
while arrays are written); the data-iterator state is captured at save time, one file per logical data shard
(training/data_checkpoint.py), so checkpoints restore on any number of processes.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from model.config import ModelConfig
from training.data_checkpoint import (ShardedIteratorHandler, ShardedIteratorRestore,
                                      ShardedIteratorSave)

CHECKPOINT_DIRNAME = "checkpoints"


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used with the requested model (clear message for the user)."""


def _item_handlers() -> dict[str, Any]:
  # Declared up front so that metadata (shapes) can be read before restoring anything.
  return {"params": ocp.StandardCheckpointHandler(), "train": ocp.StandardCheckpointHandler(),
          "data_iter": ShardedIteratorHandler(),
          "model_config": ocp.JsonCheckpointHandler()}


def make_manager(workdir: str, keep: int, async_save: bool) -> ocp.CheckpointManager:
  """The run's manager; the loop decides when to save (every N steps, at the end, on stop)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIRNAME),
                               options=options, item_handlers=_item_handlers())


def _params_metadata(manager: ocp.CheckpointManager, step: int, where: str) -> Any:
  metadata = manager.item_metadata(step).get("params")
  if metadata is None:
    raise CheckpointError(f"{where} has no readable 'params' item; the checkpoint is "
                          "incomplete or corrupt: delete that step folder to fall back to an "
                          "earlier one")
  return getattr(metadata, "tree", metadata)


def save(manager: ocp.CheckpointManager, step: int, state: dict[str, Any], data_iter: Any,
         model_config: ModelConfig, force: bool = True) -> bool:
  args = ocp.args.Composite(
      params=ocp.args.StandardSave(state["params"]),
      train=ocp.args.StandardSave({"step": state["step"], "opt_state": state["opt_state"]}),
      data_iter=ShardedIteratorSave(data_iter),
      model_config=ocp.args.JsonSave(json.loads(model_config.to_json())),
  )
  return manager.save(step, args=args, force=force)


def _check_shapes(saved: Any, expected: Any, what: str, where: str) -> None:
  """Compares a checkpoint's array metadata with the model's abstract arrays, path by path."""
  saved_shapes = {jax.tree_util.keystr(p): tuple(m.shape)
                  for p, m in jax.tree_util.tree_flatten_with_path(saved)[0]}
  expected_shapes = {jax.tree_util.keystr(p): tuple(m.shape)
                     for p, m in jax.tree_util.tree_flatten_with_path(
                         _str_keys(expected))[0]}
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


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: dict[str, Any],
            data_iter: Any) -> dict[str, Any]:
  """Restores the full train state (sharded as abstract_state says) and the iterator in place."""
  where = os.path.join(str(manager.directory), str(step))
  _check_shapes(_params_metadata(manager, step, where), abstract_state["params"], "parameters",
                where)
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract_state["params"]),
      train=ocp.args.StandardRestore({"step": abstract_state["step"],
                                      "opt_state": abstract_state["opt_state"]}),
      data_iter=ShardedIteratorRestore(data_iter),
  ))
  return {"step": restored["train"]["step"], "params": restored["params"],
          "opt_state": restored["train"]["opt_state"]}


def resolve_checkpoint(path: str) -> tuple[epath.Path, int]:
  """A workdir, its checkpoints/ folder or one STEP folder -> (checkpoints dir, step)."""
  p = epath.Path(path)
  if not p.exists():
    raise CheckpointError(f"init_from/checkpoint path {path} does not exist")
  if (p / CHECKPOINT_DIRNAME).is_dir():
    p = p / CHECKPOINT_DIRNAME
  if (p / "params").is_dir() and p.name.isdigit():
    return p.parent, int(p.name)
  steps = sorted(int(c.name) for c in p.iterdir() if c.name.isdigit() and (c / "params").is_dir())
  if not steps:
    raise CheckpointError(f"no checkpoint found under {path} (expected a run's workdir, its "
                          f"{CHECKPOINT_DIRNAME}/ folder or a step folder holding 'params/')")
  return p, steps[-1]


def run_tokenizer_path(path: str) -> str | None:
  """The tokenizer.model of the run that `path` (workdir / checkpoints / step) belongs to."""
  directory, _ = resolve_checkpoint(path)
  candidate = os.path.join(os.path.dirname(str(directory)), "tokenizer.model")
  return candidate if os.path.exists(candidate) else None


def load_params(path: str, abstract_params: Any) -> Any:
  """Parameters only, from a workdir / checkpoints dir / step dir, sharded as given."""
  directory, step = resolve_checkpoint(path)
  with ocp.CheckpointManager(directory, item_handlers=_item_handlers()) as manager:
    where = f"{directory}/{step}"
    _check_shapes(_params_metadata(manager, step, where), abstract_params, "parameters", where)
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
  return restored["params"]


def load_model_config(path: str) -> ModelConfig:
  """The model config stored with a checkpoint (so eval/finetuning can rebuild the model)."""
  directory, step = resolve_checkpoint(path)
  config_path = directory / str(step) / "model_config" / "metadata"
  if not config_path.exists():
    raise CheckpointError(f"{directory}/{step} has no model_config item")
  return ModelConfig.from_json(config_path.read_text())


def save_params_checkpoint(directory: str, params: Any, model_config: ModelConfig,
                           step: int = 0, save_concurrent_gb: int = 4) -> str:
  """Writes DIRECTORY/checkpoints/STEP/{params, model_config}, readable by `load_params`.

  For checkpoints made outside training (model/import_checkpoint.py): the same layout and
  item handlers as a run's checkpoint, without optimizer or iterator state, so `init_from`
  and eval load it like any run. `save_concurrent_gb` bounds the device->host bytes in flight
  while writing (orbax's default, 96 GB, would stage a 7B float32 model on the host at once).
  Returns the step folder.
  """
  handlers = _item_handlers()
  handlers["params"] = ocp.StandardCheckpointHandler(save_concurrent_gb=save_concurrent_gb)
  options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
  root = os.path.join(os.path.abspath(directory), CHECKPOINT_DIRNAME)
  with ocp.CheckpointManager(root, options=options, item_handlers=handlers) as manager:
    manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        model_config=ocp.args.JsonSave(json.loads(model_config.to_json()))), force=True)
    manager.wait_until_finished()
  return os.path.join(root, str(step))
