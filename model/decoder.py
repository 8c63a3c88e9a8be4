"""The decoder-only transformer: embed -> N x (pre-norm attention, pre-norm gated MLP) -> norm
-> LM head.

Used functionally in the hot path: callers `nnx.split` once and jit pure functions of the
parameter state (see training/step.py); `forward` below is that pure function.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from model.attention import Attention
from model.config import ModelConfig
from model.layers import GatedMLP, RMSNorm
from model.sharding import shard_activation


class Block(nnx.Module):
  """x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.dtype)
    norm = lambda: RMSNorm(cfg.d_model, eps=cfg.norm_eps, plus_one=cfg.norm_weight_plus_one,
                           dtype=dtype)
    self.attn_norm = norm()
    self.attn = Attention(cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                          rope_theta=cfg.rope_theta, dtype=dtype, rngs=rngs)
    self.mlp_norm = norm()
    self.mlp = GatedMLP(cfg.d_model, cfg.d_ff, activation=cfg.mlp_activation, dtype=dtype,
                        rngs=rngs)

  def __call__(self, x_BxLxD, positions_BxL, segment_ids_BxL):
    x_BxLxD = x_BxLxD + self.attn(self.attn_norm(x_BxLxD), positions_BxL, segment_ids_BxL)
    x_BxLxD = x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD))
    return shard_activation(x_BxLxD, ("batch", "length", "act_embed"))


class Decoder(nnx.Module):
  """Token ids [B, L] -> float32 logits [B, L, vocab]."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed_VxD = nnx.Param(
        0.02 * jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.d_model), jnp.float32),
        logical_axes=("vocab", "embed"))
    self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, plus_one=cfg.norm_weight_plus_one,
                              dtype=jnp.dtype(cfg.dtype))
    if not cfg.tie_embeddings:
      self.head_DxV = nnx.Param(
          0.02 * jax.random.normal(rngs.params(), (cfg.d_model, cfg.vocab_size), jnp.float32),
          logical_axes=("embed", "vocab"))

  def __call__(self, tokens_BxL: jax.Array, positions_BxL: jax.Array | None = None,
               segment_ids_BxL: jax.Array | None = None) -> jax.Array:
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    if positions_BxL is None:
      positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
    if segment_ids_BxL is None:
      segment_ids_BxL = jnp.ones_like(tokens_BxL)
    # Gather from a table split only over vocab (all-gathered over fsdp like any FSDP weight):
    # a gather from a table split over the embedding dim cannot produce batch-split rows.
    embed_VxD = shard_activation(self.embed_VxD.value, ("vocab", None))
    x_BxLxD = jnp.take(embed_VxD, tokens_BxL, axis=0).astype(dtype)
    if cfg.embed_scale_by_sqrt_dim:
      x_BxLxD = x_BxLxD * jnp.asarray(cfg.d_model ** 0.5, dtype)
    x_BxLxD = shard_activation(x_BxLxD, ("batch", "length", "act_embed"))
    for block in self.blocks:
      if cfg.remat:
        x_BxLxD = nnx.remat(lambda b, x, p, s: b(x, p, s))(block, x_BxLxD, positions_BxL,
                                                           segment_ids_BxL)
      else:
        x_BxLxD = block(x_BxLxD, positions_BxL, segment_ids_BxL)
    x_BxLxD = self.final_norm(x_BxLxD)
    head_DxV = (self.embed_VxD.value.T if cfg.tie_embeddings else self.head_DxV.value)
    logits_BxLxV = jnp.einsum("bld,dv->blv", x_BxLxD, head_DxV.astype(dtype),
                              preferred_element_type=jnp.float32)
    return shard_activation(logits_BxLxV, ("batch", "length", "act_vocab"))


# Parameters travel as plain nested dicts ({"blocks": {0: {"attn": {"q_DxNxH": array}}}}):
# checkpoints, optax states and importers then need nothing from Flax to read them.
Params = dict[str, Any]


def init_params(cfg: ModelConfig, seed: int) -> Params:
  """Freshly initialised parameters (call inside jit with out_shardings to init sharded)."""
  return nnx.to_pure_dict(nnx.state(Decoder(cfg, nnx.Rngs(seed)), nnx.Param))


def abstract_model(cfg: ModelConfig) -> tuple[nnx.GraphDef, Params, Params]:
  """(graphdef, params as ShapeDtypeStructs, params' logical axis names); allocates nothing."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Decoder(cfg, nnx.Rngs(0))))
  shapes: Params = {}
  logical_axes: Params = {}
  for path, variable in nnx.to_flat_state(state):
    *parents, leaf = path
    node_shapes, node_axes = shapes, logical_axes
    for key in parents:
      node_shapes = node_shapes.setdefault(key, {})
      node_axes = node_axes.setdefault(key, {})
    node_shapes[leaf] = jax.ShapeDtypeStruct(variable.value.shape, variable.value.dtype)
    node_axes[leaf] = variable.get_metadata()["logical_axes"]
  return graphdef, shapes, logical_axes


def count_params(cfg: ModelConfig) -> int:
  """Exact parameter count, from shapes only (works for 137B on a laptop)."""
  return sum(x.size for x in jax.tree.leaves(abstract_model(cfg)[1]))


def forward(graphdef: nnx.GraphDef, params: Params, tokens_BxL: jax.Array,
            positions_BxL: jax.Array | None = None,
            segment_ids_BxL: jax.Array | None = None) -> jax.Array:
  """Logits as a pure function of the parameters (what jit sees)."""
  return nnx.merge(graphdef, params)(tokens_BxL, positions_BxL, segment_ids_BxL)
