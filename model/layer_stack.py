"""The `layers` axis: per-layer modules stacked into one, one layer sliced back out, and the
per-layer parameter layout of checkpoints written before the layers were stacked.

The decoder's blocks are one module whose parameters carry a leading [num_layers] axis
(logical axis "layers", replicated: model/sharding.py), so the layers run as one `nnx.scan`
and compile once, whatever the depth. Checkpoints written before that hold
{"blocks": {"0": {...}, "1": {...}, ...}}; `per_layer_target` and `stack_per_layer` read
them into today's layout (model/run_dir.py's loaders use them).
"""
from __future__ import annotations

from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

LAYERS_AXIS = "layers"
BLOCKS = "blocks"  # the parameter subtree that holds the stacked layers

M = TypeVar("M", bound=nnx.Module)


def stack_layers(layers: list[M]) -> M:
  """One module of the layers' kind whose every parameter is theirs stacked on axis 0.

  The layers are built one by one (so their random initialisation is what it was when each
  layer had its own parameters) and then stacked; "layers" is prepended to each parameter's
  logical axes.
  """
  graphdef, _ = nnx.split(layers[0])
  stacked_state = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(l) for l in layers])
  stacked = nnx.merge(graphdef, stacked_state)
  for _, variable in nnx.to_flat_state(nnx.state(stacked, nnx.Param)):
    variable.set_metadata(logical_axes=(LAYERS_AXIS,) + variable.get_metadata()["logical_axes"])
  return stacked


def layer_of(stacked: M, index: int) -> M:
  """Layer `index` of a stacked module, as a module of its own (parameters sliced)."""
  graphdef, state = nnx.split(stacked)
  return nnx.merge(graphdef, jax.tree.map(lambda x: x[index], state))


# --- Checkpoints written before the layers were stacked --------------------------------------

def _is_layer_dict(node: Any) -> bool:
  return (isinstance(node, dict) and bool(node) and
          all(str(k).isdigit() for k in node) and
          sorted(int(k) for k in node) == list(range(len(node))))


def is_per_layer(tree: Any) -> bool:
  """Whether a parameter tree (or its checkpoint metadata) has the old per-layer layout."""
  return isinstance(tree, dict) and _is_layer_dict(tree.get(BLOCKS))


def _map_blocks(tree: Any, fn) -> Any:
  """`tree` with fn applied to every BLOCKS subtree, through dicts, lists and (named) tuples
  (optimizer states hold the parameter tree inside namedtuples)."""
  if isinstance(tree, dict):
    return {k: fn(v) if k == BLOCKS else _map_blocks(v, fn) for k, v in tree.items()}
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    return type(tree)(*(_map_blocks(v, fn) for v in tree))
  if isinstance(tree, (list, tuple)):
    return type(tree)(_map_blocks(v, fn) for v in tree)
  return tree


def _layer_struct(stacked: jax.ShapeDtypeStruct, index: int) -> jax.ShapeDtypeStruct:
  del index
  sharding = stacked.sharding
  if isinstance(sharding, NamedSharding):
    if sharding.spec and sharding.spec[0] is not None:
      raise ValueError(f"the layers axis is sharded ({sharding.spec}); per-layer checkpoints "
                       "can only be read into a replicated layers axis")
    sharding = NamedSharding(sharding.mesh, PartitionSpec(*sharding.spec[1:]))
  return jax.ShapeDtypeStruct(stacked.shape[1:], stacked.dtype, sharding=sharding)


def per_layer_target(abstract: Any) -> Any:
  """The old per-layer layout of a stacked abstract tree ({"blocks": {0: ..., 1: ...}}), each
  layer's arrays sharded like a slice of the stacked ones: a restore target for old
  checkpoints."""
  def unstack(blocks):
    num_layers = jax.tree.leaves(blocks)[0].shape[0]
    return {i: jax.tree.map(lambda s, i=i: _layer_struct(s, i), blocks)
            for i in range(num_layers)}
  return _map_blocks(abstract, unstack)


def stack_per_layer(tree: Any, abstract: Any = None) -> Any:
  """A restored per-layer tree in today's stacked layout, placed with the shardings of
  `abstract` (the stacked target) when given. Holds the blocks' parameters twice while it
  runs (the restored layers and their stack)."""
  def stack(layers):
    ordered = [layers[k] for k in sorted(layers, key=int)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *ordered)
  stacked = _map_blocks(tree, stack)
  if abstract is None:
    return stacked
  def place(x, target):
    sharding = getattr(target, "sharding", None)
    return x if sharding is None else jax.device_put(x, sharding)
  return jax.tree.map(place, stacked, abstract)
