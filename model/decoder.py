"""The decoder-only transformer: embed -> N x (pre-norm attention, pre-norm gated MLP) -> norm
-> LM head.

The N blocks are one stacked module (model/layer_stack.py: every block parameter has a
leading [num_layers] axis) run by one `lax.scan` (`Decoder.scan_layers`), so the step compiles
once for any depth, each layer under the configured remat policy. Used functionally in the hot path: callers
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
from model.layer_stack import stack_layers
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
    return self.residuals(x_BxLxD, attn_BxLxD)

  def residuals(self, x_BxLxD, attn_BxLxD):
    """x + attention, then + mlp(norm(.)): the block's one residual path (decode/ calls it
    with the attention of a paged cache)."""
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
    """The N blocks, each under the remat policy; scan_layers=False unrolls the scan (one
    program per layer, the same maths)."""
    cfg = self.cfg

    def layer(block: Block, x_BxLxD: jax.Array, _) -> jax.Array:
      return block(x_BxLxD, positions_BxL, segment_ids_BxL)

    remat = None
    if cfg.remat != "none":
      # Inside a rolled scan, common-subexpression elimination cannot merge the recomputation
      # into the forward pass, so the CSE barriers would only cost.
      remat = dict(policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    return self.scan_layers(layer, x_BxLxD, unroll=1 if cfg.scan_layers else True,
                            remat=remat)

  def scan_layers(self, layer_fn, carry: Any, per_layer: Any = None, *,
                  unroll: int | bool = 1, remat: dict[str, Any] | None = None) -> Any:
    """carry = layer_fn(block, carry, layer_inputs) for every layer in order: one `lax.scan`
    over the stacked blocks, the code base's one loop over layers (training, scoring,
    prefill, decoding).

    per_layer: arrays with a leading [num_layers] axis, one slice per layer (or None);
    unroll: layers per iteration of the scan (True: all of them, no loop left);
    remat: jax.checkpoint's keyword arguments for each layer, or None.
    """
    graphdef, state = nnx.split(self.blocks)

    def body(carry, layer):
      block_state, inputs = layer
      return layer_fn(nnx.merge(graphdef, block_state), carry, inputs)

    if remat is not None:
      body = jax.checkpoint(body, **remat)
    carry, _ = jax.lax.scan(lambda c, layer: (body(c, layer), None), carry,
                            (state, per_layer), unroll=unroll)
    return carry

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
