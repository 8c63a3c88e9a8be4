"""Saving and restoring a training run's full state: parameters, optimizer, data iterator.

The layout, the item names and the parameter-only loaders belong to model/run_dir.py (so that
eval and import/export read checkpoints without importing training/); this module adds what
only training needs: the async manager and the train-state items. Parameters are their own
item so that another run can start from them (`config.init_from`) without caring about this
run's optimizer, and so eval can load them alone. Saves are asynchronous (the step loop goes
on while arrays are written); the data-iterator state is captured at save time, one file per
logical data shard (training/data_checkpoint.py), so checkpoints restore on any number of
processes.
"""
from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from model import layer_stack, run_dir
from model.config import ModelConfig
from training.data_checkpoint import (ShardedIteratorHandler, ShardedIteratorRestore,
                                      ShardedIteratorSave)


def _item_handlers() -> dict[str, Any]:
  return run_dir.checkpoint_handlers(**{run_dir.DATA_ITER_ITEM: ShardedIteratorHandler()})


def make_manager(workdir: str, keep: int, async_save: bool) -> ocp.CheckpointManager:
  """The run's manager; the loop decides when to save (every N steps, at the end, on stop)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(run_dir.checkpoints_dir(workdir), options=options,
                               item_handlers=_item_handlers())


def save(manager: ocp.CheckpointManager, step: int, state: dict[str, Any], data_iter: Any,
         model_config: ModelConfig, force: bool = True) -> bool:
  args = ocp.args.Composite(**{
      run_dir.PARAMS_ITEM: ocp.args.StandardSave(state["params"]),
      run_dir.TRAIN_ITEM: ocp.args.StandardSave({"step": state["step"],
                                                 "opt_state": state["opt_state"]}),
      run_dir.DATA_ITER_ITEM: ShardedIteratorSave(data_iter),
      run_dir.MODEL_CONFIG_ITEM: run_dir.model_config_save_arg(model_config),
  })
  return manager.save(step, args=args, force=force)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: dict[str, Any],
            data_iter: Any) -> dict[str, Any]:
  """Restores the full train state (sharded as abstract_state says) and the iterator in place."""
  where = os.path.join(str(manager.directory), str(step))
  saved = run_dir.params_metadata(manager, step, where)
  # Checkpoints written before the layers were stacked hold one subtree per layer, in the
  # parameters and in the optimizer's moments alike: read that layout, then stack it.
  per_layer = layer_stack.is_per_layer(saved)
  target = layer_stack.per_layer_target(abstract_state) if per_layer else abstract_state
  run_dir.check_shapes(saved, target["params"], "parameters", where)
  restored = manager.restore(step, args=ocp.args.Composite(**{
      run_dir.PARAMS_ITEM: ocp.args.StandardRestore(target["params"]),
      run_dir.TRAIN_ITEM: ocp.args.StandardRestore({"step": target["step"],
                                                    "opt_state": target["opt_state"]}),
      run_dir.DATA_ITER_ITEM: ShardedIteratorRestore(data_iter),
  }))
  train = restored[run_dir.TRAIN_ITEM]
  state = {"step": train["step"], "params": restored[run_dir.PARAMS_ITEM],
           "opt_state": train["opt_state"]}
  return layer_stack.stack_per_layer(state, abstract_state) if per_layer else state
