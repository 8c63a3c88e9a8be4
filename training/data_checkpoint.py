"""Orbax handler for the input iterator's state, stored per logical data shard.

grain's own handler stores one file per process (`process_0-of-2.json`), which can only be
restored by the same number of processes. The training input reads a fixed set of logical
shards (training/inputs.py), so this handler stores one file per shard instead
(`shard_3-of-8.json`): a run checkpointed by 2 hosts restores on 1 or 4, with the exact data
position.

A stored state is checked before it is used: it must have the shape of this pipeline's own
state (the same keys, integers where it has integers, none negative), and once set, the
iterator must produce a batch (then it is set again, so the position is unchanged). A state
that parses but holds wrong values otherwise fails inside the step loop, on every restart.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import orbax.checkpoint as ocp
from etils import epath

from data.pipeline import join_shard_states, split_shard_states


@dataclasses.dataclass
class ShardedIterator:
  """A grain iterator over `make_multi_shard_dataset`, with the shards it reads."""
  iterator: Any
  shard_indices: list[int]
  shard_count: int

  def __iter__(self):
    return self

  def __next__(self):
    return next(self.iterator)

  def file_name(self, shard_index: int) -> str:
    return f"shard_{shard_index}-of-{self.shard_count}.json"


class InvalidIteratorState(ValueError):
  """A stored data position that this pipeline cannot resume from."""


def _check_like(stored: Any, template: Any, where: str) -> None:
  """`stored` has the structure and leaf types of `template` (a fresh iterator's state)."""
  if isinstance(template, dict):
    if not isinstance(stored, dict) or set(stored) != set(template):
      raise InvalidIteratorState(
          f"{where or 'state'}: keys {sorted(stored) if isinstance(stored, dict) else stored!r}"
          f", this pipeline's state has {sorted(template)}")
    for key in template:
      _check_like(stored[key], template[key], f"{where}.{key}" if where else key)
  elif isinstance(template, list):
    if not isinstance(stored, list) or len(stored) != len(template):
      raise InvalidIteratorState(f"{where}: {stored!r} is not a list of {len(template)}")
    for i, (a, b) in enumerate(zip(stored, template)):
      _check_like(a, b, f"{where}[{i}]")
  elif isinstance(template, int) and not isinstance(template, bool):
    if not isinstance(stored, int) or isinstance(stored, bool) or stored < 0:
      raise InvalidIteratorState(f"{where}: {stored!r} is not a count (an integer >= 0)")
  elif template is None:  # unset in a fresh iterator (e.g. nothing buffered yet)
    if stored is not None:
      _check_like(stored, 0, where)
  elif type(stored) is not type(template):  # pylint: disable=unidiomatic-typecheck
    raise InvalidIteratorState(f"{where}: {stored!r}, expected a {type(template).__name__}")


def check_iterator_state(data: ShardedIterator) -> None:
  """Draws one element from the restored iterator and rewinds it; raises InvalidIteratorState
  if the state cannot produce one (an index past its buffer, ...)."""
  state = data.iterator.get_state()
  try:
    next(data.iterator)
  except Exception as e:  # pylint: disable=broad-except  (whatever the pipeline raises)
    raise InvalidIteratorState(f"the data position does not produce a batch "
                               f"({type(e).__name__}: {str(e)[:200]})") from e
  data.iterator.set_state(state)


class ShardedIteratorHandler(ocp.CheckpointHandler):
  """Each process writes (and later reads) the files of the shards it reads."""

  def save(self, directory: epath.Path, args: "ShardedIteratorSave") -> None:
    data = args.item
    states = split_shard_states(data.iterator.get_state())
    for shard_index, state in zip(data.shard_indices, states):
      (directory / data.file_name(shard_index)).write_text(json.dumps(state, indent=1))

  def restore(self, directory: epath.Path, args: "ShardedIteratorRestore") -> ShardedIterator:
    data = args.item
    templates = split_shard_states(data.iterator.get_state())
    states = []
    for shard_index, template in zip(data.shard_indices, templates):
      path = directory / data.file_name(shard_index)
      if not path.exists():
        present = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(
            f"{path} is missing (found {present}); the checkpoint was written with a different "
            "config.data.num_shards. Restart with the num_shards it was written with.")
      state = json.loads(path.read_text())
      problem = None
      try:
        _check_like(state, template, "")
      except InvalidIteratorState as e:
        problem = f"{path.name}: {e}"
      if problem:  # raised outside the except: the reason shown is this one, with the file
        raise InvalidIteratorState(problem)
      states.append(state)
    data.iterator.set_state(join_shard_states(states))
    return data

  def metadata(self, directory: epath.Path) -> None:
    del directory

  def structure(self, directory: epath.Path) -> None:
    del directory

  def finalize(self, directory: epath.Path) -> None:
    del directory

  def close(self) -> None:
    pass


@ocp.args.register_with_handler(ShardedIteratorHandler, for_save=True)
@dataclasses.dataclass
class ShardedIteratorSave(ocp.args.CheckpointArgs):
  item: ShardedIterator


@ocp.args.register_with_handler(ShardedIteratorHandler, for_restore=True)
@dataclasses.dataclass
class ShardedIteratorRestore(ocp.args.CheckpointArgs):
  item: ShardedIterator
