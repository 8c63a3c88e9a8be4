"""The train state's structure and shardings, and its initialisation directly on the mesh.

Initialisation runs inside jit with out_shardings, so each device materialises only its own
shard (no full host copy even for 137B); threefry RNG is partitionable, so the values do not
depend on the mesh shape.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from model.config import ModelConfig
from model.decoder import abstract_model, init_params, with_shardings
from model.sharding import param_shardings


@dataclasses.dataclass(frozen=True)
class StateLayout:
  """Everything about the train state that is known before any array exists."""
  model_config: ModelConfig
  graphdef: nnx.GraphDef
  tx: optax.GradientTransformation
  abstract_state: dict[str, Any]    # ShapeDtypeStructs carrying their shardings
  shardings: dict[str, Any]         # NamedShardings, same structure as the state
  mesh: Mesh

  @property
  def param_shardings(self) -> Any:
    return self.shardings["params"]


def make_layout(model_config: ModelConfig, tx: optax.GradientTransformation,
                mesh: Mesh) -> StateLayout:
  graphdef, param_shapes, logical_axes = abstract_model(model_config)
  params_sh = param_shardings(logical_axes, param_shapes, mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  opt_shapes = jax.eval_shape(tx.init, param_shapes)
  # Adam moments are shaped like the parameters and sharded like them; scalars replicate.
  opt_sh = optax.tree_map_params(tx, lambda _, sharding: sharding, opt_shapes, params_sh,
                                 transform_non_params=lambda _: replicated)
  shardings = {"step": replicated, "params": params_sh, "opt_state": opt_sh}
  shapes = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": param_shapes,
            "opt_state": opt_shapes}
  abstract_state = with_shardings(shapes, shardings)
  return StateLayout(model_config, graphdef, tx, abstract_state, shardings, mesh)


def init_state(layout: StateLayout, seed: int, params: Any = None) -> dict[str, Any]:
  """A fresh train state on the mesh; `params` (already sharded) replaces the random init."""
  def init(params):
    if params is None:
      params = init_params(layout.model_config, seed)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": layout.tx.init(params)}

  with jax.set_mesh(layout.mesh):
    if params is None:
      return jax.jit(lambda: init(None), out_shardings=layout.shardings)()
    return jax.jit(init, out_shardings=layout.shardings, donate_argnums=0)(params)
