"""Running a per-device paged-attention kernel (Pallas) on the mesh in context.

A Pallas kernel is a per-device program: XLA cannot partition it. The engine calls
`paged_attention` inside a shard_map that already made the batch axes (data, fsdp) manual;
what may remain is an auto `tensor` axis splitting the heads. `on_shards` runs the kernel
under its own shard_map over those remaining axes, with each operand split the way
model/sharding.py's rules split it anyway (queries by "act_heads", the pool by
"act_kv_heads", rows by "batch"), so no data moves; directly when no mesh is set or every
axis is manual already. Called outside any shard_map, the batch axes split the rows here too,
and the page pool stays whole on each of them (a table may point at any page).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from model.sharding import logical_to_spec


def on_shards(kernel, q_SxNxH: jax.Array, k_pages_KxQxExH: jax.Array,
              v_pages_KxQxExH: jax.Array, lengths_S: jax.Array,
              page_table_SxM: jax.Array) -> jax.Array:
  """kernel(q, k_pages, v_pages, lengths, page_table) -> out_SxNxH, run per device."""
  args = (q_SxNxH, k_pages_KxQxExH, v_pages_KxQxExH, lengths_S, page_table_SxM)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return kernel(*args)
  q_spec = logical_to_spec(("batch", "act_heads", None), q_SxNxH.shape, mesh)
  pool_spec = logical_to_spec(("act_kv_heads", None, None, None), k_pages_KxQxExH.shape, mesh)
  if pool_spec[0] != q_spec[1]:
    # kv heads that do not split over tensor where the query heads do: a device's query heads
    # would need kv heads of another device. Repeated to one per query head (a copy of the
    # pool per call, so a layout to avoid: give the pool a multiple of tensor kv heads), the
    # pool splits like the queries.
    group = q_SxNxH.shape[1] // k_pages_KxQxExH.shape[0]
    k_pages_KxQxExH, v_pages_KxQxExH = (jnp.repeat(x, group, axis=0)
                                        for x in (k_pages_KxQxExH, v_pages_KxQxExH))
    pool_spec = jax.sharding.PartitionSpec(q_spec[1], None, None, None)
    args = (q_SxNxH, k_pages_KxQxExH, v_pages_KxQxExH, lengths_S, page_table_SxM)
  lengths_spec = logical_to_spec(("batch",), lengths_S.shape, mesh)
  table_spec = logical_to_spec(("batch", None), page_table_SxM.shape, mesh)
  specs = (q_spec, pool_spec, pool_spec, lengths_spec, table_spec)
  # Manual over every axis not manual yet, size 1 too: a kernel interpreted on the CPU is a
  # callback, which XLA places only where no axis is left to its partitioner.
  auto_axes = set(mesh.axis_names) - set(mesh.manual_axes)
  if not auto_axes:
    return kernel(*args)
  return jax.shard_map(kernel, mesh=mesh, in_specs=specs, out_specs=q_spec,
                       axis_names=auto_axes, check_vma=False)(*args)
