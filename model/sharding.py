"""Device mesh and the one table that maps logical axis names to mesh axes.

Every parameter carries `logical_axes` metadata (e.g. ("embed", "mlp")) and the main activations
are constrained with logical names too; nothing else in the codebase names a mesh axis.

Mesh axes:
  data    pure data parallelism: parameters replicated, batch split.
  fsdp    data parallelism with parameters, gradients and optimizer state split as well
          (ZeRO-3 style); XLA all-gathers weights just in time.
  tensor  Megatron-style tensor parallelism inside each layer (heads, MLP hidden, vocab).

A logical axis whose mesh axes do not divide the dimension is left unsharded for that array
(e.g. 1 KV head on tensor=2), so every preset runs on every mesh; an array's `.sharding.spec`
shows what actually happened.
"""
from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
# The axis whose shards each hold whole parameters: work split over it alone needs no
# communication (the slot sampler runs one independent loop per shard of it).
DATA_AXIS = "data"

# Logical axis -> mesh axes. Parameter names first, then activation names. An activation
# must not reuse a mesh axis already taken by another of its dimensions, which is why the
# embedding dimension of activations ("act_embed") is replicated while that of weights
# ("embed") is split over fsdp.
LOGICAL_AXIS_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # parameters
    ("vocab", ("tensor",)),        # embedding rows / LM-head columns
    ("embed", ("fsdp",)),          # d_model dimension of every weight
    ("mlp", ("tensor",)),          # MLP hidden dimension
    ("heads", ("tensor",)),        # query heads
    ("kv_heads", ("tensor",)),     # key/value heads (GQA)
    ("head_dim", ()),
    ("norm", ()),                  # RMSNorm scales: tiny, replicated
    ("layers", ()),                # the stacked blocks' leading axis (scanned over, so whole)
    # activations
    ("batch", ("data", "fsdp")),
    ("length", ()),
    ("act_embed", ()),
    ("act_heads", ("tensor",)),
    ("act_kv_heads", ("tensor",)),
    ("act_mlp", ("tensor",)),
    ("act_vocab", ("tensor",)),
)
_RULES = dict(LOGICAL_AXIS_RULES)


def resolve_mesh_sizes(data: int, fsdp: int, tensor: int, num_devices: int
                       ) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with a -1 replaced by "all remaining devices"; the one place that
  resolves mesh sizes (make_mesh builds from it, config validation checks with it).

  Raises:
    ValueError: a size is 0 or below -1, more than one is -1, or the product does not match
      `num_devices`.
  """
  sizes = [data, fsdp, tensor]
  if any(s == 0 or s < -1 for s in sizes) or sizes.count(-1) > 1:
    raise ValueError(f"mesh sizes must be positive, at most one -1; got data={data} "
                     f"fsdp={fsdp} tensor={tensor}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"{num_devices} devices cannot be split into data={data} fsdp={fsdp} "
                       f"tensor={tensor}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
                     f"{math.prod(sizes)} devices, but {num_devices} are available; set "
                     "config.mesh.* so the product matches (or use -1 for one axis)")
  return sizes[0], sizes[1], sizes[2]


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh; one size may be -1 for "all remaining devices"."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_sizes(data, fsdp, tensor, len(devices))
  # Auto axes: XLA's partitioner propagates shardings from the annotations below (classic
  # pjit semantics). Spelled out because JAX's default axis type is changing.
  return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int] | None = None,
                    mesh: Mesh | jax.sharding.AbstractMesh | None = None) -> PartitionSpec:
  """PartitionSpec for an array with these logical axis names (and, if given, this shape)."""
  spec = []
  used: set[str] = set()
  for dim, name in enumerate(logical_axes):
    if name is None:
      spec.append(None)
      continue
    if name not in _RULES:
      raise KeyError(f"logical axis {name!r} has no rule in model/sharding.py "
                     f"LOGICAL_AXIS_RULES; known: {sorted(_RULES)}")
    axes = tuple(a for a in _RULES[name] if a not in used)
    if mesh is not None:
      # Axes a shard_map made manual are already split by hand (decode/engine.py).
      axes = tuple(a for a in axes if mesh.shape[a] > 1 and a not in mesh.manual_axes)
      if shape is not None:
        # Keep the longest prefix of mesh axes whose product divides the dimension.
        while axes and shape[dim] % math.prod(mesh.shape[a] for a in axes):
          axes = axes[:-1]
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def shard_activation(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """Constrains an activation's sharding inside jit; a no-op when no mesh is set."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, x.shape, mesh))


def param_shardings(logical_axes: Any, shapes: Any, mesh: Mesh) -> Any:
  """NamedShardings for a parameter tree, from its tree of logical axis tuples and shapes."""
  return jax.tree.map(
      lambda axes, shape: NamedSharding(mesh, logical_to_spec(axes, shape.shape, mesh)),
      logical_axes, shapes, is_leaf=lambda x: isinstance(x, tuple))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Sharding of [batch, length, ...] input arrays: batch over data and fsdp."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + ("length",) * (ndim - 1), None, mesh))


def device_memory_bytes() -> int | None:
  """The smallest memory limit among the local devices, in bytes (None where one reports
  none, e.g. a CPU): the budget of the train step's plan and of the sampler's slots."""
  limits = []
  for device in jax.local_devices():
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "bytes_limit" not in stats:
      return None
    limits.append(int(stats["bytes_limit"]))
  return min(limits) if limits else None


def data_shards(mesh: Mesh | jax.sharding.AbstractMesh) -> int:
  """Shards of a purely data-parallel mesh (only DATA_AXIS > 1) that can each run work of
  their own, e.g. a loop of their own length (a shard_map over it); 1 for any other mesh.

  Why only then: with fsdp or tensor > 1 inside each shard, the loop's collectives are one
  collective of all devices to XLA, so shards whose loops run different numbers of steps
  wait for each other forever (XLA:CPU aborted after its rendezvous timeout; jax 0.10.2).
  """
  if mesh.empty or DATA_AXIS not in mesh.axis_names or DATA_AXIS in mesh.manual_axes:
    return 1
  if any(size > 1 for name, size in mesh.shape.items() if name != DATA_AXIS):
    return 1
  return mesh.shape[DATA_AXIS]


def batch_shard_count(mesh: Mesh | jax.sharding.AbstractMesh,
                      num_rows: int | None = None) -> int:
  """How many shards the "batch" axes split rows into on `mesh` (the axes a shard_map made
  manual left out; with `num_rows`, only axes whose product divides it, as logical_to_spec)."""
  spec = logical_to_spec(("batch",), None if num_rows is None else (num_rows,), mesh)[0]
  names = (spec,) if isinstance(spec, str) else tuple(spec or ())
  return math.prod(mesh.shape[name] for name in names)


def batch_groups(num_rows: int) -> int:
  """batch_shard_count of `num_rows` rows on the current (jax.set_mesh) mesh; 1 with no mesh.
  State kept per group of rows ([groups, ...], the group axis sharded like the rows) stays
  local to each shard."""
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh.empty else batch_shard_count(mesh, num_rows)
