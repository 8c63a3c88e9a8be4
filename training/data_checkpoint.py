"""Orbax handler for the input iterator's state, stored per logical data shard.

grain's own handler stores one file per process (`process_0-of-2.json`), which can only be
restored by the same number of processes. The training input reads a fixed set of logical
shards (training/inputs.py), so this handler stores one file per shard instead
(`shard_3-of-8.json`): a run checkpointed by 2 hosts restores on 1 or 4, with the exact data
position.
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


class ShardedIteratorHandler(ocp.CheckpointHandler):
  """Each process writes (and later reads) the files of the shards it reads."""

  def save(self, directory: epath.Path, args: "ShardedIteratorSave") -> None:
    data = args.item
    states = split_shard_states(data.iterator.get_state())
    for shard_index, state in zip(data.shard_indices, states):
      (directory / data.file_name(shard_index)).write_text(json.dumps(state, indent=1))

  def restore(self, directory: epath.Path, args: "ShardedIteratorRestore") -> ShardedIterator:
    data = args.item
    states = []
    for shard_index in data.shard_indices:
      path = directory / data.file_name(shard_index)
      if not path.exists():
        present = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(
            f"{path} is missing (found {present}); the checkpoint was written with a different "
            "config.data.num_shards. Restart with the num_shards it was written with.")
      states.append(json.loads(path.read_text()))
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
