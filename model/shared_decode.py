"""Decoding with one prompt KV cache per problem, shared by that problem's samples.

`prefill_prompts` runs each problem's prompt once and keeps its keys/values. `decode_slots`
advances S slots by one token each; a slot holds one sample of one problem and only the
keys/values of the tokens that sample generated, in pages of a pool shared by the slots
(model/page_pool.py); its attention spans [its problem's prompt cache ; its own pages] under
one softmax (model/attention.py decode_shared).

Slots are grouped in J lanes (model/slot_sampling.py): lane j's slots only hold samples of
lane j's problems, and at any step only of a window of `window` consecutive ones. The prompt
caches are laid out per lane (`to_lanes`: problem p = lane * rounds + round; keys
[J, rounds, K, H, L], values [J, rounds, K, L, H]), each lane's window is sliced out once per
layer and step, and a lane's queries are scored against its own window only: prompt attention
costs `window` times its essential FLOPs (1x when a lane holds one problem), not P times.

A shared prefix: the tokens every prompt of a call starts with (a few-shot template's
examples: 700 of MBPP's ~810-token 3-shot prompts) are prefilled once (`prefill_prefix`) and
held once for all problems and slots; the problems' caches then hold only their own suffixes
(`prefill_prompts(prefix=...)`), and every slot's queries meet the prefix keys in one matmul
per kv head (no window, no mask): prompt attention per token is prefix + window x suffix
instead of window x the whole prompt.

How the layers run depends on the kernel set (model/kernels/):
  * xla (accelerators): one `lax.scan` over the stacked blocks and stacked caches
    ([layers, ...] arrays); the blocks' parameters are held once while sampling.
  * cpu: the layers unrolled, each with its own cache arrays (a tuple of per-layer caches):
    XLA:CPU copied every layer's weights and caches out of the stacked arrays in every step
    of the scan (a third of a decode step at d_model 512); unrolled, the
    weights are sliced once per call, before the sampling loop (`layers_for_decoding`;
    parameters held twice while sampling, which CPU-sized models afford), the caches are
    never sliced, and each layer stores its new token before attending to it, so the cache
    is updated in place (read-then-write made XLA copy the whole cache every step).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from model import page_pool
from model.attention import OwnKeys
from model.decoder import Decoder, decode_layers
from model.kernels import resolve
from model.sharding import shard_activation

# {"k", "v"} stacked over the layers axis (scan), or a tuple of per-layer {"k", "v"} (unrolled).
Cache = Any


def unrolled_layers(model: Decoder) -> bool:
  """Whether decoding runs the layers unrolled with per-layer caches (the cpu kernel set)."""
  return resolve(model.cfg.kernels) == "cpu"


def layers_for_decoding(model: Decoder) -> Any:
  """What the layer loop runs: the stacked blocks (scan), or one block per layer sliced
  here (unrolled; slice them once per sampling call, outside its loop: XLA:CPU does not
  hoist the slices out of the loop by itself, see model/decoder.py decode_layers)."""
  return tuple(decode_layers(model)) if unrolled_layers(model) else model.blocks


def _run_layers(layers: Any, layer_fn, x: jax.Array, per_layer: Any):
  """layer_fn(block, x, layer's inputs) -> (x, layer's outputs) over layers_for_decoding's
  `layers`.

  `per_layer` and the returned outputs are stacked over the layers (scan) or tuples of one
  entry per layer (unrolled); None stands for no per-layer inputs.
  """
  if isinstance(layers, tuple):
    outputs = []
    for index, block in enumerate(layers):
      x, out = layer_fn(block, x, None if per_layer is None else per_layer[index])
      outputs.append(out)
    return x, tuple(outputs)
  graphdef, state = nnx.split(layers)

  def body(x, layer):
    block_state, layer_inputs = layer
    return layer_fn(nnx.merge(graphdef, block_state), x, layer_inputs)

  return jax.lax.scan(body, x, (state, per_layer))


def _map_layers(model: Decoder, fn, cache: Cache) -> Cache:
  """fn(one layer's {"k", "v"}) -> {"k", "v"}, applied to every layer's cache."""
  if unrolled_layers(model):
    return tuple(fn(layer) for layer in cache)
  return jax.vmap(fn)(cache)


def _empty_cache(model: Decoder, batch: int, length: int) -> jax.Array:
  cfg = model.cfg
  return jnp.zeros((batch, cfg.num_kv_heads, length, cfg.head_dim), jnp.dtype(cfg.dtype))


def prefill_prefix(model: Decoder, prefix_C: jax.Array, layers: Any = None) -> Cache:
  """The keys/values of the prefix every prompt of the call starts with, computed once
  ({"k", "v"}: [1, K, C, H] per layer; positions 0 ... C - 1)."""
  length = prefix_C.shape[0]
  empty = _empty_cache(model, 1, length)

  def layer(block, x_1xCxD, _):
    return block.decode(x_1xCxD, jnp.arange(length)[None], jnp.ones((1, length), bool),
                        {"k": empty, "v": empty}, 0)

  if layers is None:
    layers = layers_for_decoding(model)
  return _run_layers(layers, layer, model.embed(prefix_C[None]), None)[1]


def prefill_prompts(model: Decoder, prompt_PxL: jax.Array, prompt_lengths_P: jax.Array,
                    layers: Any = None, prefix: Cache = None
                    ) -> tuple[jax.Array, Cache, jax.Array]:
  """(next-token logits [P, V], prompt cache ([P, K, L, H] per layer), valid [P, L]) for
  left-padded prompts.

  Padding keys are invalid and positions start at 0 at each prompt's first real token, so a
  problem's cache and logits do not depend on its padding. With `prefix` (prefill_prefix's
  cache of C tokens), the prompts are the suffixes that follow it: they attend to it, their
  positions start at C, and the returned cache holds the suffixes only.
  """
  num_problems, prompt_len = prompt_PxL.shape
  prefix_len = 0 if prefix is None else jax.tree.leaves(prefix)[0].shape[-2]
  pad_P = prompt_len - prompt_lengths_P
  valid_PxL = jnp.arange(prompt_len)[None, :] >= pad_P[:, None]
  positions_PxL = prefix_len + jnp.maximum(jnp.arange(prompt_len)[None, :] - pad_P[:, None], 0)
  empty = _empty_cache(model, num_problems, prompt_len)
  keys_valid_PxT = jnp.concatenate(
      [jnp.ones((num_problems, prefix_len), bool), valid_PxL], axis=1)

  def layer(block, x_PxLxD, prefix_l):
    if prefix_l is None:
      return block.decode(x_PxLxD, positions_PxL, valid_PxL, {"k": empty, "v": empty}, 0)
    # [prefix ; suffix] per problem for the prefill only; the prefix part is dropped after.
    cache = jax.tree.map(lambda x_1xKxCxH: jnp.concatenate(
        [jnp.broadcast_to(x_1xKxCxH, (num_problems,) + x_1xKxCxH.shape[1:]), empty], axis=2),
                         prefix_l)
    x_PxLxD, cache = block.decode(x_PxLxD, positions_PxL, keys_valid_PxT, cache, prefix_len)
    return x_PxLxD, jax.tree.map(lambda x: x[:, :, prefix_len:], cache)

  if layers is None:
    layers = layers_for_decoding(model)
  x_PxLxD, cache = _run_layers(layers, layer, model.embed(prompt_PxL), prefix)
  # Prompts are left-padded: every prompt's last token is at the last position.
  return model.logits(x_PxLxD[:, -1:])[:, 0], cache, valid_PxL


def prefix_for_decoding(model: Decoder, prefix: Cache) -> Cache:
  """prefill_prefix's cache as decode_slots reads it: keys [K, H, C] (the score matmul's
  layout, transposed once here), values [K, C, H]."""
  return _map_layers(model, lambda kv: {"k": jnp.swapaxes(kv["k"][0], -1, -2),
                                        "v": kv["v"][0]}, prefix)


def to_lanes(model: Decoder, prompt: Cache, num_lanes: int) -> Cache:
  """The prompt cache as decode_slots reads it: problems split [lanes, rounds]
  (p = lane * rounds + r), keys [.., K, H, L] (the score matmul's layout, transposed once
  here rather than by XLA in every step) and values [.., K, L, H].

  On a mesh the lanes carry the batch sharding (as far as they divide it) and the rounds are
  whole on every device: each step slices its window of rounds and picks one of them, which
  split over devices (as the problems' sharding falls after the reshape) cost an all-to-all
  and collective-permutes of the window's keys and values in every step."""
  split = lambda x: shard_activation(x.reshape(num_lanes, -1, *x.shape[1:]),
                                     ("batch", None, "act_kv_heads", None, None))
  return _map_layers(model, lambda kv: {"k": jnp.swapaxes(split(kv["k"]), -1, -2),
                                        "v": split(kv["v"])}, prompt)


def init_generated_cache(model: Decoder, slots: int, max_new_tokens: int) -> Cache:
  """The page pool of the slots' own tokens (model/page_pool.py), per layer a "hot" and a
  "cold" part of keys {"k": [groups, pages, K, H, PAGE]} and values {"v": [groups, pages, K,
  PAGE, H]} (a group per batch shard), enough pages for every slot to hold max_new_tokens.

  Keys are stored transposed, length-minor, like the prefix's: a decode step's scores are then
  a matmul of the queries [G, H] by a page's [H, PAGE] keys (against [N, H] keys, XLA:CPU was
  2.4x slower at N = 128, d_model 128, 64 slots)."""
  cfg = model.cfg
  groups, pool = page_pool.pool_shape(slots, max_new_tokens)
  hot = page_pool.hot_pages(pool)
  layers = () if unrolled_layers(model) else (cfg.num_layers,)
  axes = ("layers",) * len(layers) + ("batch", None, "act_kv_heads", None, None)
  zeros = lambda *shape: shard_activation(jnp.zeros(layers + (groups,) + shape,
                                                    jnp.dtype(cfg.dtype)), axes)
  part = lambda pages: {"k": zeros(pages, cfg.num_kv_heads, cfg.head_dim, page_pool.PAGE),
                        "v": zeros(pages, cfg.num_kv_heads, page_pool.PAGE, cfg.head_dim)}
  pools = lambda: {"hot": part(hot), "cold": part(pool - hot)}
  return pools() if layers else tuple(pools() for _ in range(cfg.num_layers))


def _lane_windows(prompt_l: dict[str, jax.Array], window_start_J: jax.Array, window: int
                  ) -> dict[str, jax.Array]:
  """One layer's to_lanes prompt cache [J, rounds, ...] -> each lane's window [J, window, ...]."""
  rounds = prompt_l["k"].shape[1]
  if window == rounds:
    return prompt_l
  take = lambda x_R, start: jax.lax.dynamic_slice_in_dim(x_R, start, window, axis=0)
  if prompt_l["k"].shape[0] == 1:  # one lane: a contiguous slice, no gather
    return jax.tree.map(lambda x: take(x[0], window_start_J[0])[None], prompt_l)
  return jax.tree.map(lambda x: jax.vmap(take)(x, window_start_J), prompt_l)


def decode_slots(model: Decoder, token_S: jax.Array, positions_S: jax.Array, prompt: Cache,
                 window_start_J: jax.Array, window: int, prompt_valid_SxL: jax.Array,
                 window_offset_S: jax.Array, generated: Cache, pages: page_pool.Pages,
                 generated_len_S: jax.Array, layers: Any = None, prefix: Cache = None
                 ) -> tuple[jax.Array, Cache]:
  """(next-token logits [S, V], the generated pages with each slot's token stored).

  Slot s (in lane s // (S / J)) feeds token_S[s] at model position positions_S[s]. Its
  problem is round window_start_J[lane] + window_offset_S[s] of its lane in `prompt`
  (to_lanes layout); prompt_valid_SxL[s] marks that problem's real prompt keys. Its sample
  has generated_len_S[s] earlier tokens in the page pool `generated` (model/page_pool.py),
  in the pages `pages` gives it, and the new token's keys/values go to position
  generated_len_S[s] there (page_pool.take_pages gave the slot that position's page; a slot
  with no page, an idle one, stores nothing).
  `layers`: layers_for_decoding(model), when the caller loops (else sliced here).
  `prefix`: prefix_for_decoding's cache of the prefix all prompts share (positions_S then
  count it), or None.
  """
  unrolled = unrolled_layers(model)
  store_l = lambda pool_l, k_SxKxH, v_SxKxH: page_pool.store_token(
      pool_l, pages, generated_len_S, k_SxKxH, v_SxKxH)
  # Unrolled, each layer's own pages take the new token before the attention reads them
  # (in place; see Attention.decode_shared), so the token's own position is a key too.
  own = OwnKeys(pages, generated_len_S + unrolled, page_pool.cold_needed(pages))

  def layer(block, x_Sx1xD, layer_cache):
    prefix_l, prompt_l, generated_l = layer_cache
    x_Sx1xD, k_SxKxH, v_SxKxH, generated_l = block.decode_shared(
        x_Sx1xD, positions_S, _lane_windows(prompt_l, window_start_J, window),
        prompt_valid_SxL, window_offset_S, generated_l, own, store_l if unrolled else None,
        prefix_l)
    return x_Sx1xD, generated_l if unrolled else (k_SxKxH, v_SxKxH)

  if unrolled:
    prefixes = (None,) * len(prompt) if prefix is None else prefix
    per_layer = tuple(zip(prefixes, prompt, generated))
  else:
    per_layer = (prefix, prompt, generated)
  if layers is None:
    layers = layers_for_decoding(model)
  x_Sx1xD, outputs = _run_layers(layers, layer, model.embed(token_S[:, None]), per_layer)
  if unrolled:
    generated = outputs
  else:
    # The new keys/values leave the layer scan as small outputs and are scattered into the
    # stacked pages once here, in place: carrying the pool through the scan would copy it.
    generated = jax.vmap(store_l)(generated, *outputs)
  return model.logits(x_Sx1xD)[:, 0], generated
