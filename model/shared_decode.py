"""Decoding with one prompt KV cache per problem, shared by that problem's samples.

`prefill_prompts` runs each problem's prompt once and keeps its keys/values, stacked over the
layers: {"k", "v"}: [layers, P, K, L, H]. `decode_slots` advances S slots by one token each;
a slot holds one sample of one problem and only the keys/values of the tokens that sample
generated ({"k", "v"}: [layers, S, K, N, H]); its attention spans [the problem's prompt
cache ; its own generated cache] under one softmax (model/attention.py decode_shared).

Both run the stacked blocks as one `lax.scan` over the layers axis (model/layer_stack.py),
so the blocks' parameters are held once while sampling (no per-layer copies).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from model.decoder import Decoder
from model.sharding import shard_activation

Cache = dict[str, jax.Array]  # {"k", "v"}, stacked over the layers axis


def _scan_blocks(model: Decoder, layer_fn, x: jax.Array, per_layer: Any):
  """lax.scan of layer_fn(block, x, per_layer[i]) -> (x, ys) over the stacked blocks."""
  graphdef, state = nnx.split(model.blocks)

  def body(x, layer):
    block_state, layer_inputs = layer
    return layer_fn(nnx.merge(graphdef, block_state), x, layer_inputs)

  return jax.lax.scan(body, x, (state, per_layer))


def prefill_prompts(model: Decoder, prompt_PxL: jax.Array, prompt_lengths_P: jax.Array
                    ) -> tuple[jax.Array, Cache, jax.Array]:
  """(next-token logits [P, V], prompt cache, valid [P, L]) for left-padded prompts.

  Padding keys are invalid and positions start at 0 at each prompt's first real token, so a
  problem's cache and logits do not depend on its padding.
  """
  cfg = model.cfg
  num_problems, prompt_len = prompt_PxL.shape
  pad_P = prompt_len - prompt_lengths_P
  valid_PxL = jnp.arange(prompt_len)[None, :] >= pad_P[:, None]
  positions_PxL = jnp.maximum(jnp.arange(prompt_len)[None, :] - pad_P[:, None], 0)
  empty = jnp.zeros((num_problems, cfg.num_kv_heads, prompt_len, cfg.head_dim),
                    jnp.dtype(cfg.dtype))

  def layer(block, x_PxLxD, _):
    x_PxLxD, cache = block.decode(x_PxLxD, positions_PxL, valid_PxL,
                                  {"k": empty, "v": empty}, 0)
    return x_PxLxD, cache

  x_PxLxD, cache = _scan_blocks(model, layer, model.embed(prompt_PxL), None)
  # Prompts are left-padded: every prompt's last token is at the last position.
  return model.logits(x_PxLxD[:, -1:])[:, 0], cache, valid_PxL


def init_generated_cache(model: Decoder, slots: int, max_new_tokens: int) -> Cache:
  cfg = model.cfg
  shape = (cfg.num_layers, slots, cfg.num_kv_heads, max_new_tokens, cfg.head_dim)
  zeros = lambda: shard_activation(jnp.zeros(shape, jnp.dtype(cfg.dtype)),
                                   ("layers", "batch", "act_kv_heads", "length", None))
  return {"k": zeros(), "v": zeros()}


def decode_slots(model: Decoder, token_S: jax.Array, positions_S: jax.Array, prompt: Cache,
                 prompt_valid_PxL: jax.Array, problem_S: jax.Array, generated: Cache,
                 generated_len_S: jax.Array) -> tuple[jax.Array, Cache]:
  """(next-token logits [S, V], the generated cache with each slot's token stored).

  Slot s feeds token_S[s] at model position positions_S[s]; it has generated_len_S[s] earlier
  tokens in its generated cache, and the new token's keys/values go to index
  generated_len_S[s] there (the caller keeps that below the cache length).
  """
  num_slots = token_S.shape[0]
  max_new = generated["k"].shape[3]
  valid_SxN = jnp.arange(max_new)[None, :] < generated_len_S[:, None]

  def layer(block, x_Sx1xD, layer_cache):
    prompt_l, generated_l = layer_cache
    x_Sx1xD, k_SxKxH, v_SxKxH = block.decode_shared(
        x_Sx1xD, positions_S, prompt_l, prompt_valid_PxL, problem_S, generated_l, valid_SxN)
    return x_Sx1xD, (k_SxKxH, v_SxKxH)

  x_Sx1xD, (k_LxSxKxH, v_LxSxKxH) = _scan_blocks(model, layer, model.embed(token_S[:, None]),
                                                 (prompt, generated))
  # The new keys/values leave the layer scan as small outputs and are scattered into the
  # cache once here, in place: carrying the cache through the scan would copy all of it.
  # Index arrays split by a slice put their broadcast dimension first: updates are [S, L, K, H].
  slots_S = jnp.arange(num_slots)
  store = lambda cache, new_LxSxKxH: cache.at[:, slots_S, :, generated_len_S, :].set(
      jnp.swapaxes(new_LxSxKxH, 0, 1).astype(cache.dtype))
  generated = {"k": store(generated["k"], k_LxSxKxH), "v": store(generated["v"], v_LxSxKxH)}
  return model.logits(x_Sx1xD)[:, 0], generated
