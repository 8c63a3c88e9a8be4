"""Saving and restoring a training run's full state: parameters, optimizer, data iterator.

The layout and item names belong to rundir/layout.py and the parameter-only loaders to
model/run_dir.py (so that eval and import/export read checkpoints without importing
training/); this module adds what
only training needs: the async manager and the train-state items. Parameters are their own
item so that another run can start from them (`config.init_from`) without caring about this
run's optimizer, and so eval can load them alone. Saves are asynchronous (the step loop goes
on while arrays are written); the data-iterator state is captured at save time, one file per
logical data shard (training/data_checkpoint.py), so checkpoints restore on any number of
processes.

Restoring verifies before and as it reads: the step's files are compared with the checksums
written once its save had finished (model/checkpoint_manifest.py: a flipped bit that would
still decode is caught there), every item is read in full (orbax's stored data is compressed,
so a truncated or zeroed file fails to decode), and the data-iterator state must have the
shape of this pipeline's state and produce a batch. A step that fails is set aside (renamed
STEP.corrupt, never deleted) with a warning naming the step, the file or array and the reason,
and the previous step is tried; all processes agree on the outcome before anyone goes on. A
checkpoint that does not fit the configured model is not corruption: that stays an error.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from model import checkpoint_manifest, layer_stack, run_dir
from model.config import ModelConfig
from rundir import workdir_lock
from rundir.multihost import any_process
from training.data_checkpoint import (InvalidIteratorState, ShardedIterator,
                                      ShardedIteratorHandler, ShardedIteratorRestore,
                                      ShardedIteratorSave, check_iterator_state)

# Files orbax (and we) write as JSON inside an item folder: named when they do not parse.
_JSON_FILES = ("_METADATA", "_sharding", "_CHECKPOINT_METADATA", "metadata")
# Errors that say something about this machine or this moment, not about the files: a step
# that fails with one of these is not set aside (it may be fine next time).
_TRANSIENT = re.compile(r"RESOURCE_EXHAUSTED|[Oo]ut of memory|UNAVAILABLE|DEADLINE_EXCEEDED")


class CorruptCheckpoint(run_dir.CheckpointError):
  """One step's files cannot be read back."""

  def __init__(self, step: int, where: str, reason: str):
    self.step, self.where, self.reason = step, where, reason
    super().__init__(f"step {step}: {where}: {reason}")


def _item_handlers() -> dict[str, Any]:
  return run_dir.checkpoint_handlers(**{run_dir.DATA_ITER_ITEM: ShardedIteratorHandler()})


class SealingManager(ocp.CheckpointManager):
  """A CheckpointManager that writes each step's checksum manifest once its save has finished.

  Only steps this manager saved are sealed (never a step found on disk: it might be damaged
  already). With async saves a step is final when wait_until_finished returns (the loop and
  save() call it before every save, at the end and on a stop); with sync saves, at once.
  """

  def __init__(self, *args: Any, **kwargs: Any):
    self._unsealed: list[int] = []
    super().__init__(*args, **kwargs)

  def save(self, step: int, *args: Any, **kwargs: Any) -> bool:
    saved = super().save(step, *args, **kwargs)
    if saved:
      self._unsealed.append(step)
      if not self._options.enable_async_checkpointing:
        self._seal()
    return saved

  def wait_until_finished(self) -> None:
    super().wait_until_finished()
    self._seal()

  def _seal(self) -> None:
    steps, self._unsealed = self._unsealed, []
    if jax.process_index() != 0:
      return
    for step in steps:
      step_dir = os.path.join(str(self.directory), str(step))
      if os.path.isdir(step_dir):  # not already deleted by max_to_keep
        checkpoint_manifest.write(step_dir)


def make_manager(workdir: str, keep: int, async_save: bool) -> ocp.CheckpointManager:
  """The run's manager; the loop decides when to save (every N steps, at the end, on stop)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save)
  return SealingManager(run_dir.checkpoints_dir(workdir), options=options,
                        item_handlers=_item_handlers())


def checkpoint_bytes(state: dict[str, Any]) -> int:
  """Bytes of the arrays a checkpoint of `state` holds (all processes' shards together)."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))


def check_free_space(directory: str, needed_bytes: int) -> None:
  """Refuses to start a save that cannot fit: a full disk found half way through an async
  save surfaces as hundreds of lines from orbax's writer threads."""
  short = False
  if jax.process_index() == 0:
    free = shutil.disk_usage(directory).free
    short = free < needed_bytes
  if any_process(short):
    message = (f"not enough disk space for a checkpoint in {directory}: it needs about "
               f"{needed_bytes / 2**20:.0f} MiB")
    if jax.process_index() == 0:
      message += f", {free / 2**20:.0f} MiB are free"
    raise workdir_lock.WorkdirNotWritable(
        errno.ENOSPC, message + "; free some space and run "
        "the same command again: it resumes from the latest checkpoint")


def save(manager: ocp.CheckpointManager, step: int, state: dict[str, Any], data_iter: Any,
         model_config: ModelConfig, force: bool = True) -> bool:
  # manager.save waits for the previous (async) save first anyway; waiting here makes the free
  # space below count that save's files (and the old steps it deleted when it finished).
  manager.wait_until_finished()
  # A little slack for the metadata files and the zstd frames of incompressible data.
  check_free_space(str(manager.directory), int(checkpoint_bytes(state) * 1.02) + 2**20)
  args = ocp.args.Composite(**{
      run_dir.PARAMS_ITEM: ocp.args.StandardSave(state["params"]),
      run_dir.TRAIN_ITEM: ocp.args.StandardSave({"step": state["step"],
                                                 "opt_state": state["opt_state"]}),
      run_dir.DATA_ITER_ITEM: ShardedIteratorSave(data_iter),
      run_dir.MODEL_CONFIG_ITEM: run_dir.model_config_save_arg(model_config),
  })
  return manager.save(step, args=args, force=force)


def _innermost(error: BaseException) -> BaseException:
  seen = {id(error)}
  while True:
    inner = error.__cause__ or error.__context__
    if inner is None or id(inner) in seen:
      return error
    seen.add(id(inner))
    error = inner


def _chain(error: BaseException) -> Iterator[BaseException]:
  seen: set[int] = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _is_transient(error: BaseException) -> bool:
  for e in _chain(error):
    if isinstance(e, (MemoryError, KeyboardInterrupt)) or _TRANSIENT.search(str(e)):
      return True
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.errno is not None:
      return True  # permissions, a full disk, a flaky network filesystem
  return False


def _bad_json_file(item_dir: epath.Path) -> tuple[str, str] | None:
  """(file, why) of the first JSON file in the item folder that does not parse."""
  for name in _JSON_FILES + tuple(sorted(p.name for p in item_dir.glob("*.json"))):
    path = item_dir / name
    if not path.is_file():
      continue
    try:
      json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
      return str(path), f"not valid JSON ({str(e).splitlines()[0]})"
  return None


@contextlib.contextmanager
def _reading(step: int, item_dir: epath.Path) -> Iterator[None]:
  """Turns a failure to read `item_dir` into CorruptCheckpoint (which file, why)."""
  try:
    yield
  except run_dir.CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (classified below)
    if _is_transient(e):
      raise
    bad_json = _bad_json_file(item_dir) if item_dir.is_dir() else None
    if bad_json is not None:
      raise CorruptCheckpoint(step, *bad_json) from e
    if not item_dir.is_dir():
      raise CorruptCheckpoint(step, str(item_dir), "missing") from e
    reason = str(_innermost(e)).strip().splitlines() or [type(e).__name__]
    raise CorruptCheckpoint(step, str(item_dir), reason[0][:400]) from e


def _check_shard_files(step: int, data_dir: epath.Path, data_iter: ShardedIterator) -> None:
  """A data position written for another number of shards is the user's setting to fix; a
  missing file of our own shard count is corruption."""
  expected = [data_iter.file_name(i) for i in data_iter.shard_indices]
  present = {p.name for p in data_dir.iterdir()} if data_dir.is_dir() else set()
  missing = [name for name in expected if name not in present]
  if not missing:
    return
  counts = sorted({int(m.group(1)) for name in present
                   if (m := re.fullmatch(r"shard_\d+-of-(\d+)\.json", name))})
  if counts and data_iter.shard_count not in counts:
    raise run_dir.CheckpointError(
        f"{data_dir} holds the data position of {counts[0]} shards, this run reads "
        f"{data_iter.shard_count}: restart with --config.data.num_shards={counts[0]}")
  raise CorruptCheckpoint(step, str(data_dir / missing[0]), "missing")


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: dict[str, Any],
            data_iter: Any) -> dict[str, Any]:
  """Restores the full train state (sharded as abstract_state says) and the iterator in place.

  Raises CorruptCheckpoint if a file of the step cannot be read back, CheckpointError if the
  step does not fit the configured model or data shards.
  """
  step_dir = epath.Path(manager.directory) / str(step)
  params_dir = step_dir / run_dir.PARAMS_ITEM
  train_dir = step_dir / run_dir.TRAIN_ITEM
  try:  # the processes share the hashing: each checks every process_count-th file
    checkpoint_manifest.verify(str(step_dir), part=(jax.process_index(), jax.process_count()))
  except checkpoint_manifest.ManifestMismatch as e:
    raise CorruptCheckpoint(step, e.path, e.reason) from e
  handler = ocp.StandardCheckpointHandler()
  try:
    with _reading(step, params_dir):
      metadata = handler.metadata(params_dir)
    saved = getattr(metadata, "tree", metadata)
    # Checkpoints written before the layers were stacked hold one subtree per layer, in the
    # parameters and in the optimizer's moments alike: read that layout, then stack it.
    per_layer = layer_stack.is_per_layer(saved)
    target = layer_stack.per_layer_target(abstract_state) if per_layer else abstract_state
    run_dir.check_shapes(saved, target["params"], "parameters", str(step_dir))
    # Items are read one by one, not through the manager: each process reads its shards with
    # no barrier inside, so a step unreadable on one host cannot hang the others.
    with _reading(step, params_dir):
      params = handler.restore(params_dir, args=ocp.args.StandardRestore(target["params"]))
    with _reading(step, train_dir):
      train = handler.restore(train_dir, args=ocp.args.StandardRestore(
          {"step": target["step"], "opt_state": target["opt_state"]}))
  finally:
    handler.close()
  data_dir = step_dir / run_dir.DATA_ITER_ITEM
  _check_shard_files(step, data_dir, data_iter)
  with _reading(step, data_dir):
    ShardedIteratorHandler().restore(data_dir, ShardedIteratorRestore(data_iter))
  try:
    check_iterator_state(data_iter)
  except InvalidIteratorState as e:
    raise CorruptCheckpoint(step, str(data_dir), str(e)) from e
  stored_step = int(jax.device_get(train["step"]))
  if stored_step != step:
    raise CorruptCheckpoint(step, str(train_dir), f"holds step {stored_step}")
  state = {"step": train["step"], "params": params, "opt_state": train["opt_state"]}
  return layer_stack.stack_per_layer(state, abstract_state) if per_layer else state


def restore_latest(manager: ocp.CheckpointManager, abstract_state: dict[str, Any],
                   data_iter: Any) -> dict[str, Any] | None:
  """The newest step that restores, falling back past corrupt ones; None if there is none.

  Raises CheckpointError if steps exist but none of them restores (naming each and why).
  """
  workdir = os.path.dirname(str(manager.directory))
  steps = sorted(manager.all_steps(), reverse=True)
  failures: list[str] = []
  for i, step in enumerate(steps):
    logging.info("Resuming from %s/%d", manager.directory, step)
    state, failure = None, None
    try:
      state = restore(manager, step, abstract_state, data_iter)
    except CorruptCheckpoint as e:
      failure = e
    if not any_process(failure is not None):
      return state
    reason = str(failure) if failure else f"step {step}: unreadable on another process"
    failures.append(reason)
    if i == len(steps) - 1:
      break  # the last one stays where it is: nothing to fall back to
    if jax.process_index() == 0:
      kept = run_dir.set_aside_step(workdir, step)
      logging.warning("Checkpoint %s is unusable (%s); set aside as %s; resuming from step %d "
                      "instead (the steps after it are trained again)", os.path.join(
                          str(manager.directory), str(step)), reason, kept, steps[i + 1])
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
    manager.reload()
  if not failures:
    return None
  raise run_dir.CheckpointError(
      f"No usable checkpoint in {manager.directory}: " + "; ".join(failures) +
      f". Move the run's checkpoints/ folder away to start from scratch (or put back a good "
      f"copy of a step folder); unusable steps were renamed *{run_dir.CORRUPT_SUFFIX}")
