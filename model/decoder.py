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
from model.layers import GatedMLP, RMSNorm, weight_grad
from model.sharding import param_shardings, shard_activation


@jax.custom_vjp
def lm_head(x_BxLxD: jax.Array, head_DxV: jax.Array) -> jax.Array:
  """float32 logits x @ head, with a backward that suits XLA:CPU's GEMMs (see weight_grad).

  The [T, V] logit gradient is by far the largest tensor of the step: autodiff's backward
  transposes it (recomputing the loss gradient a second time, with strided writes) for the
  head's gradient; here only x [T, D] and the head [D, V] are transposed.
  """
  return jnp.einsum("bld,dv->blv", x_BxLxD, head_DxV, preferred_element_type=jnp.float32)


def _lm_head_fwd(x_BxLxD, head_DxV):
  return lm_head(x_BxLxD, head_DxV), (x_BxLxD, head_DxV)


def _lm_head_bwd(residuals, dlogits_BxLxV):
  x_BxLxD, head_DxV = residuals
  dlogits_BxLxV = dlogits_BxLxV.astype(x_BxLxD.dtype)
  head_VxD = jax.lax.optimization_barrier(head_DxV.T)
  dx_BxLxD = jnp.einsum("blv,vd->bld", dlogits_BxLxV, head_VxD,
                        preferred_element_type=jnp.float32).astype(x_BxLxD.dtype)
  return dx_BxLxD, weight_grad(x_BxLxD, dlogits_BxLxV).astype(head_DxV.dtype)


lm_head.defvjp(_lm_head_fwd, _lm_head_bwd)


class Block(nnx.Module):
  """x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.dtype)
    norm = lambda: RMSNorm(cfg.d_model, eps=cfg.norm_eps, plus_one=cfg.norm_weight_plus_one,
                           dtype=dtype)
    self.attn_norm = norm()
    self.attn = Attention(cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                          rope_theta=cfg.rope_theta, dtype=dtype, rngs=rngs,
                          rope_scaling=cfg.rope_scaling)
    self.mlp_norm = norm()
    self.mlp = GatedMLP(cfg.d_model, cfg.d_ff, activation=cfg.mlp_activation, dtype=dtype,
                        rngs=rngs)

  def __call__(self, x_BxLxD, positions_BxL, segment_ids_BxL):
    attn_BxLxD = self.attn(self.attn_norm(x_BxLxD), positions_BxL, segment_ids_BxL)
    return self._residuals(x_BxLxD, attn_BxLxD)

  def decode(self, x_BxTxD, positions_BxT, kv_valid_BxS, cache, index):
    """The same block over T new tokens, attending to (and updating) a layer's KV cache."""
    attn_BxTxD, cache = self.attn.decode(self.attn_norm(x_BxTxD), positions_BxT, kv_valid_BxS,
                                         cache, index)
    return self._residuals(x_BxTxD, attn_BxTxD), cache

  def _residuals(self, x_BxLxD, attn_BxLxD):
    """x + attention, then + mlp(norm(.)): the block's one residual path, for both modes."""
    x_BxLxD = x_BxLxD + attn_BxLxD
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
    if positions_BxL is None:
      positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
    if segment_ids_BxL is None:
      segment_ids_BxL = jnp.ones_like(tokens_BxL)
    x_BxLxD = self.embed(tokens_BxL)
    for block in self.blocks:
      if cfg.remat:
        x_BxLxD = nnx.remat(lambda b, x, p, s: b(x, p, s))(block, x_BxLxD, positions_BxL,
                                                           segment_ids_BxL)
      else:
        x_BxLxD = block(x_BxLxD, positions_BxL, segment_ids_BxL)
    return self.logits(x_BxLxD)

  def embed(self, tokens_BxL: jax.Array) -> jax.Array:
    dtype = jnp.dtype(self.cfg.dtype)
    # Gather from a table split only over vocab (all-gathered over fsdp like any FSDP weight):
    # a gather from a table split over the embedding dim cannot produce batch-split rows.
    embed_VxD = shard_activation(self.embed_VxD.value, ("vocab", None))
    x_BxLxD = jnp.take(embed_VxD, tokens_BxL, axis=0).astype(dtype)
    if self.cfg.embed_scale_by_sqrt_dim:
      x_BxLxD = x_BxLxD * jnp.asarray(self.cfg.d_model ** 0.5, dtype)
    return shard_activation(x_BxLxD, ("batch", "length", "act_embed"))

  def logits(self, x_BxLxD: jax.Array) -> jax.Array:
    """Final norm and LM head; float32 logits for the loss and for sampling."""
    dtype = jnp.dtype(self.cfg.dtype)
    x_BxLxD = self.final_norm(x_BxLxD)
    head_DxV = (self.embed_VxD.value.T if self.cfg.tie_embeddings else self.head_DxV.value)
    logits_BxLxV = lm_head(x_BxLxD, head_DxV.astype(dtype))
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


def with_shardings(shapes: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that carry their NamedShardings (a restore or init target)."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


def sharded_abstract_params(cfg: ModelConfig, mesh: jax.sharding.Mesh) -> tuple[nnx.GraphDef,
                                                                                 Params]:
  """(graphdef, parameter ShapeDtypeStructs carrying their mesh shardings): a restore target."""
  graphdef, shapes, logical_axes = abstract_model(cfg)
  return graphdef, with_shardings(shapes, param_shardings(logical_axes, shapes, mesh))


def count_params(cfg: ModelConfig) -> int:
  """Exact parameter count, from shapes only (works for 137B on a laptop)."""
  return sum(x.size for x in jax.tree.leaves(abstract_model(cfg)[1]))


def forward(graphdef: nnx.GraphDef, params: Params, tokens_BxL: jax.Array,
            positions_BxL: jax.Array | None = None,
            segment_ids_BxL: jax.Array | None = None) -> jax.Array:
  """Logits as a pure function of the parameters (what jit sees)."""
  return nnx.merge(graphdef, params)(tokens_BxL, positions_BxL, segment_ids_BxL)


# --- Cached decoding (model/sampling.py) -------------------------------------------------

KVCache = list[dict[str, jax.Array]]  # per layer {"k", "v"}: [batch, kv_heads, length, head_dim]


def init_cache(cfg: ModelConfig, batch: int, length: int) -> KVCache:
  shape = (batch, cfg.num_kv_heads, length, cfg.head_dim)
  zeros = lambda: shard_activation(jnp.zeros(shape, jnp.dtype(cfg.dtype)),
                                   ("batch", "act_kv_heads", "length", None))
  return [{"k": zeros(), "v": zeros()} for _ in range(cfg.num_layers)]


def decode_step(model: Decoder, tokens_BxT: jax.Array, positions_BxT: jax.Array,
                kv_valid_BxS: jax.Array, cache: KVCache, index,
                last_only: bool = False) -> tuple[jax.Array, KVCache]:
  """Logits [B, T, V] for T tokens written at cache[index:index+T], and the updated cache.

  `last_only`: logits of the last token only ([B, 1, V]); a prefill needs no more, and the
  head over every prompt position would cost as much as the rest of the prefill.
  """
  x_BxTxD = model.embed(tokens_BxT)
  new_cache = []
  for block, layer_cache in zip(model.blocks, cache):
    x_BxTxD, layer_cache = block.decode(x_BxTxD, positions_BxT, kv_valid_BxS, layer_cache,
                                        index)
    new_cache.append(layer_cache)
  return model.logits(x_BxTxD[:, -1:] if last_only else x_BxTxD), new_cache
