"""The decoder-only transformer: embed -> N x (pre-norm attention, pre-norm gated MLP) -> norm
-> LM head.

The N blocks are one stacked module (model/layer_stack.py: every block parameter has a
leading [num_layers] axis) run by `nnx.scan`, so the step compiles once for any depth, each
layer under the configured remat policy. Used functionally in the hot path: callers
`nnx.split` once and jit pure functions of the parameter state (see training/step.py);
`forward` below is that pure function.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from model.attention import Attention
from model.config import ModelConfig
from model.kernels import kernel_set
from model.layer_stack import layer_of, stack_layers
from model.layers import GatedMLP, RMSNorm
from model.sharding import param_shardings, shard_activation

# ModelConfig.remat -> what a layer's backward pass may keep from its forward pass.
# "save_dots" keeps the outputs of matmuls without batch dimensions (the weight matmuls:
# q/k/v/o projections, MLP, unless a kernel hides them in a custom VJP), and recomputes the
# attention scores (batched matmuls) and the elementwise ops.
REMAT_POLICIES = {"full": jax.checkpoint_policies.nothing_saveable,
                  "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class Block(nnx.Module):
  """x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.dtype)
    norm = lambda: RMSNorm(cfg.d_model, eps=cfg.norm_eps, plus_one=cfg.norm_weight_plus_one,
                           dtype=dtype)
    self.attn_norm = norm()
    self.attn = Attention(cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                          rope_theta=cfg.rope_theta, dtype=dtype, rngs=rngs,
                          rope_scaling=cfg.rope_scaling, kernels=cfg.kernels,
                          attention_impl=cfg.attention_impl)
    self.mlp_norm = norm()
    self.mlp = GatedMLP(cfg.d_model, cfg.d_ff, activation=cfg.mlp_activation, dtype=dtype,
                        rngs=rngs, kernels=cfg.kernels)

  def __call__(self, x_BxLxD, positions_BxL, segment_ids_BxL):
    attn_BxLxD = self.attn(self.attn_norm(x_BxLxD), positions_BxL, segment_ids_BxL)
    return self._residuals(x_BxLxD, attn_BxLxD)

  def decode(self, x_BxTxD, positions_BxT, kv_valid_BxS, cache, index):
    """The same block over T new tokens, attending to (and updating) a layer's KV cache."""
    attn_BxTxD, cache = self.attn.decode(self.attn_norm(x_BxTxD), positions_BxT, kv_valid_BxS,
                                         cache, index)
    return self._residuals(x_BxTxD, attn_BxTxD), cache

  def decode_shared(self, x_Sx1xD, positions_S, prompt, prompt_valid_SxL, window_offset_S,
                    generated, own, store=None, prefix=None):
    """One token per slot over the shared prefix, its problem's prompt cache and its own
    generated pages (model/shared_decode.py); returns (x, the token's k, v, the generated
    pages), see Attention.decode_shared for `own`, `store` and `prefix`."""
    attn_Sx1xD, k_SxKxH, v_SxKxH, generated = self.attn.decode_shared(
        self.attn_norm(x_Sx1xD), positions_S, prompt, prompt_valid_SxL, window_offset_S,
        generated, own, store, prefix)
    return self._residuals(x_Sx1xD, attn_Sx1xD), k_SxKxH, v_SxKxH, generated

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
    # Built layer by layer from the one rng stream (the values the per-layer layout had),
    # then stacked on a leading `layers` axis.
    self.blocks = stack_layers([Block(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, plus_one=cfg.norm_weight_plus_one,
                              dtype=jnp.dtype(cfg.dtype))
    if not cfg.tie_embeddings:
      self.head_DxV = nnx.Param(
          0.02 * jax.random.normal(rngs.params(), (cfg.d_model, cfg.vocab_size), jnp.float32),
          logical_axes=("embed", "vocab"))

  def __call__(self, tokens_BxL: jax.Array, positions_BxL: jax.Array | None = None,
               segment_ids_BxL: jax.Array | None = None) -> jax.Array:
    if positions_BxL is None:
      positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
    if segment_ids_BxL is None:
      segment_ids_BxL = jnp.ones_like(tokens_BxL)
    x_BxLxD = self.embed(tokens_BxL)
    return self.logits(self.run_layers(x_BxLxD, positions_BxL, segment_ids_BxL))

  def run_layers(self, x_BxLxD: jax.Array, positions_BxL: jax.Array,
                 segment_ids_BxL: jax.Array) -> jax.Array:
    """The N blocks: one scan over the stacked layers (or, scan_layers=False, a Python loop
    over the same parameters), each layer under the remat policy."""
    cfg = self.cfg

    def layer(block: Block, x_BxLxD: jax.Array) -> jax.Array:
      return block(x_BxLxD, positions_BxL, segment_ids_BxL)

    if cfg.remat != "none":
      # Inside a scan, common-subexpression elimination cannot merge the recomputation into
      # the forward pass, so the CSE barriers would only cost.
      layer = nnx.remat(layer, policy=REMAT_POLICIES[cfg.remat],
                        prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      return nnx.scan(layer, in_axes=(0, nnx.Carry), out_axes=nnx.Carry)(self.blocks, x_BxLxD)
    for index in range(cfg.num_layers):
      x_BxLxD = layer(layer_of(self.blocks, index), x_BxLxD)
    return x_BxLxD

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
    logits_BxLxV = kernel_set(self.cfg.kernels).lm_head(x_BxLxD, head_DxV.astype(dtype))
    return shard_activation(logits_BxLxV, ("batch", "length", "act_vocab"))


# Parameters travel as plain nested dicts ({"blocks": {"attn": {"q_DxNxH": [L, D, N, H]}}}):
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


def decode_layers(model: Decoder) -> list[Block]:
  """The blocks as one module per layer, for cached decoding.

  Slice them once per `generate` call, outside its decode loop: XLA:CPU does not hoist a
  slice of the stacked parameters out of the loop, so inside it every step would copy every
  layer's weights, a large cost for memory-bound decoding. Costs one copy of the blocks'
  parameters while sampling.
  """
  return [layer_of(model.blocks, index) for index in range(model.cfg.num_layers)]


def decode_step(model: Decoder, tokens_BxT: jax.Array, positions_BxT: jax.Array,
                kv_valid_BxS: jax.Array, cache: KVCache, index, last_only: bool = False,
                layers: list[Block] | None = None) -> tuple[jax.Array, KVCache]:
  """Logits [B, T, V] for T tokens written at cache[index:index+T], and the updated cache.

  `last_only`: logits of the last token only ([B, 1, V]); a prefill needs no more, and the
  head over every prompt position would cost as much as the rest of the prefill. `layers`:
  decode_layers(model), when the caller loops (else sliced here).
  """
  x_BxTxD = model.embed(tokens_BxT)
  new_cache = []
  for block, layer_cache in zip(layers or decode_layers(model), cache):
    x_BxTxD, layer_cache = block.decode(x_BxTxD, positions_BxT, kv_valid_BxS, layer_cache,
                                        index)
    new_cache.append(layer_cache)
  return model.logits(x_BxTxD[:, -1:] if last_only else x_BxTxD), new_cache
