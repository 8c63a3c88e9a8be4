"""Sampling on device: one prefill, then a `lax.while_loop` over a preallocated KV cache.

Batched over rows (problems x samples). Prompts are left-padded to a bucketed length so that
every prompt ends at the same cache index; padding keys are masked out and positions start at
0 at each prompt's first real token, so a row's logits do not depend on its padding. Each row
stops on EOS or when its text completes the stop string (model/stop_matcher.py), checked on
device; the loop ends when every row has stopped or `max_new_tokens` is reached. Shapes depend
only on (batch, bucketed prompt length, max_new_tokens), so an evaluation compiles a handful
of times.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from model.decoder import decode_layers, decode_step, init_cache


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to pick each token: temperature 0 is greedy; top_k 0 and top_p 1 disable filtering."""
  max_new_tokens: int = 256
  temperature: float = 0.5
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.max_new_tokens <= 0 or self.temperature < 0 or self.top_k < 0 or not (
        0 < self.top_p <= 1):
      raise ValueError(f"invalid sampling config {self}")


def choose_tokens(logits_BxV: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """Next token per row under temperature / top-k / top-p (nucleus) sampling."""
  if cfg.temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  u_Bx1 = 1.0 - jax.random.uniform(rng, (logits_BxV.shape[0], 1), jnp.float32)
  return _inverse_cdf_sample(filtered_logits(logits_BxV, cfg), u_Bx1)


def choose_tokens_per_row(logits_BxV: jax.Array, keys_B: jax.Array,
                          cfg: SamplingConfig) -> jax.Array:
  """choose_tokens with each row's draw from its own key (model/slot_sampling.py keys a draw
  by its sample and position, so it does not depend on the row it happens to run in)."""
  if cfg.temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  return choose_tokens_by_uniforms(logits_BxV, draw_uniforms(keys_B), cfg)


def draw_uniforms(keys: jax.Array) -> jax.Array:
  """One uniform in [0, 1) per key (any shape of keys): what a row's draw consumes."""
  return jax.vmap(lambda key: jax.random.uniform(key, (), jnp.float32))(
      keys.reshape(-1)).reshape(keys.shape)


def choose_tokens_by_uniforms(logits_BxV: jax.Array, u_B: jax.Array,
                              cfg: SamplingConfig) -> jax.Array:
  """choose_tokens_per_row with each row's uniform drawn already (draw_uniforms)."""
  if cfg.temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  return _inverse_cdf_sample(filtered_logits(logits_BxV, cfg), 1.0 - u_B[:, None])


def filtered_logits(logits_BxV: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """Logits / temperature, with what top-k and top-p cut set to -inf."""
  logits_BxV = logits_BxV.astype(jnp.float32) / cfg.temperature
  if cfg.top_k:
    kth_B1 = jax.lax.top_k(logits_BxV, cfg.top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_B1, -jnp.inf, logits_BxV)
  if cfg.top_p < 1.0:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    cumulative_BxV = jnp.cumsum(jax.nn.softmax(sorted_BxV, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    cutoff_index_B = jnp.sum(cumulative_BxV < cfg.top_p, axis=-1)
    cutoff_B1 = jnp.take_along_axis(sorted_BxV, cutoff_index_B[:, None], axis=-1)
    logits_BxV = jnp.where(logits_BxV < cutoff_B1, -jnp.inf, logits_BxV)
  return logits_BxV


_BLOCK = 128  # vocabulary entries per block of the two-level inverse CDF


def _inverse_cdf_sample(logits_BxV: jax.Array, u_Bx1: jax.Array) -> jax.Array:
  """A draw from softmax(logits) per row, by one uniform against the cumulative mass.

  Exact like jax.random.categorical's Gumbel max, but one random number per row instead of
  one per vocabulary entry: on CPU the threefry bits for B x V Gumbels cost a decode step
  more than its attention. u is in (0, 1], so a token of zero mass (cut by top-k/top-p) is
  never the first whose cumulative mass reaches u * total.

  Two levels, so no scan runs over the whole vocabulary (XLA:CPU's cumsum over 32k entries
  cost as much as a d_model-512 layer): the block whose running total first reaches the
  threshold, then the entry within that block.
  """
  batch, vocab = logits_BxV.shape
  mass_BxV = jnp.exp(logits_BxV - jnp.max(logits_BxV, axis=-1, keepdims=True))
  mass_BxCxK = jnp.pad(mass_BxV, ((0, 0), (0, -vocab % _BLOCK))).reshape(batch, -1, _BLOCK)
  block_sums_BxC = jnp.sum(mass_BxCxK, axis=-1)
  block_cumulative_BxC = jnp.cumsum(block_sums_BxC, axis=-1)
  threshold_Bx1 = u_Bx1 * block_cumulative_BxC[:, -1:]
  # The first block whose running total reaches the threshold (it holds positive mass).
  block_B = jnp.minimum(jnp.sum(block_cumulative_BxC < threshold_Bx1, axis=-1),
                        block_sums_BxC.shape[1] - 1)
  before_Bx1 = jnp.take_along_axis(block_cumulative_BxC - block_sums_BxC, block_B[:, None], 1)
  in_block_BxK = jnp.take_along_axis(mass_BxCxK, block_B[:, None, None], 1)[:, 0]
  entry_B = jnp.sum(jnp.cumsum(in_block_BxK, axis=-1) < threshold_Bx1 - before_Bx1, axis=-1)
  # Rounding can leave the threshold a hair above the block's last partial sum: stay on the
  # block's last entry of positive mass.
  last_positive_B = _BLOCK - 1 - jnp.argmax((in_block_BxK > 0)[:, ::-1], axis=-1)
  token_B = block_B * _BLOCK + jnp.minimum(entry_B, last_positive_B)
  return token_B.astype(jnp.int32)


def left_pad(prompts: list[list[int]], length: int, pad_id: int = 0) -> tuple[np.ndarray,
                                                                             np.ndarray]:
  """(tokens [B, length] left-padded, real lengths [B]); prompts longer than length fail."""
  tokens = np.full((len(prompts), length), pad_id, np.int32)
  lengths = np.zeros((len(prompts),), np.int32)
  for row, prompt in enumerate(prompts):
    if len(prompt) > length:
      raise ValueError(f"prompt of {len(prompt)} tokens does not fit in {length}")
    if prompt:
      tokens[row, length - len(prompt):] = prompt
    lengths[row] = len(prompt)
  return tokens, lengths


def bucket_length(n: int, minimum: int = 64, half_octaves: bool = False) -> int:
  """Prompt lengths round up to a power of two (>= minimum): few distinct shapes to compile.
  With half_octaves, also to 1.5 x a power of two (64, 96, 128, 192, ...): at most a third
  of the bucket is padding instead of half, for twice the shapes."""
  length = minimum
  while length < n:
    if half_octaves and length * 3 // 2 >= n:
      return length * 3 // 2
    length *= 2
  return length


def shared_prefix_length(prompts: Sequence[Sequence[int]], multiple: int = 64) -> int:
  """Tokens every prompt starts with (the few-shot examples of a task's template), rounded
  down to a multiple of `multiple` so calls share a few shapes, and leaving every prompt at
  least one token of its own (its last token's logits start its samples)."""
  if not prompts:
    return 0
  shortest = min(len(p) for p in prompts)
  first = prompts[0]
  length = 0
  while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
    length += 1
  return length // multiple * multiple


def split_shared_prefix(prompts: Sequence[Sequence[int]], multiple: int = 64,
                        at_most: int | None = None
                        ) -> tuple[np.ndarray | None, list[list[int]]]:
  """(the shared prefix as int32 tokens, or None when shorter than `multiple`; each prompt's
  rest): what the slot sampler takes (model/slot_sampling.py generate_samples). `at_most`
  caps the prefix (an evaluation's calls then share one prefix length: one compiled shape)."""
  length = shared_prefix_length(prompts, multiple)
  if at_most is not None:
    length = min(length, at_most // multiple * multiple)
  prefix = np.asarray(prompts[0][:length], np.int32) if length else None
  return prefix, [list(p[length:]) for p in prompts]


class _LoopState(NamedTuple):
  """The decode loop's carry: where each row stands after `step` generated tokens."""
  step: jax.Array            # tokens generated so far (same for every row)
  logits_BxV: jax.Array      # next-token logits of each row
  cache: Any                 # the KV cache (model/decoder.py init_cache)
  done_B: jax.Array          # row has stopped (EOS or stop string)
  stop_state_B: jax.Array    # stop-string automaton state (model/stop_matcher.py)
  lengths_B: jax.Array       # tokens kept per row, up to and including its stop
  out_BxN: jax.Array         # generated tokens, 0 after a row's stop
  kv_valid_BxS: jax.Array    # cache slots a query may attend to (left padding is invalid)


def generate(graphdef: nnx.GraphDef, params: Any, prompt_BxP: jax.Array,
             prompt_lengths_B: jax.Array, rng: jax.Array, stop_next_SxV: jax.Array,
             stop_completes_SxV: jax.Array, *, cfg: SamplingConfig,
             eos_id: int) -> tuple[jax.Array, jax.Array]:
  """(generated tokens [B, max_new_tokens] padded with 0 after the stop, lengths [B]).

  A row's length counts its tokens up to and including EOS or the token that completed the
  stop string. Pure function: jit it (see make_generate_fn).
  """
  batch, prompt_len = prompt_BxP.shape
  total_len = prompt_len + cfg.max_new_tokens
  model = nnx.merge(graphdef, params)
  pad_B = prompt_len - prompt_lengths_B
  kv_valid_BxS = jnp.arange(total_len)[None, :] >= pad_B[:, None]
  kv_valid_BxS = kv_valid_BxS & (jnp.arange(total_len)[None, :] < prompt_len)
  positions_BxP = jnp.maximum(jnp.arange(prompt_len)[None, :] - pad_B[:, None], 0)
  cache = init_cache(model.cfg, batch, total_len)
  layers = decode_layers(model)  # once, outside the loop (see decode_layers)
  # Prompts are left-padded, so every row's last prompt token is at the last position.
  logits_Bx1xV, cache = decode_step(model, prompt_BxP, positions_BxP, kv_valid_BxS, cache, 0,
                                    last_only=True, layers=layers)

  def cond(state: _LoopState) -> jax.Array:
    return (state.step < cfg.max_new_tokens) & ~jnp.all(state.done_B)

  def body(state: _LoopState) -> _LoopState:
    step = state.step
    token_B = choose_tokens(state.logits_BxV, jax.random.fold_in(rng, step), cfg)
    token_B = jnp.where(state.done_B, 0, token_B)
    stopped_B = (token_B == eos_id) | stop_completes_SxV[state.stop_state_B, token_B]
    index = prompt_len + step
    kv_valid_BxS = state.kv_valid_BxS.at[:, index].set(True)
    positions_Bx1 = (prompt_lengths_B + step)[:, None]
    logits_Bx1xV, cache = decode_step(model, token_B[:, None], positions_Bx1, kv_valid_BxS,
                                      state.cache, index, layers=layers)
    return _LoopState(
        step=step + 1, logits_BxV=logits_Bx1xV[:, 0], cache=cache,
        done_B=state.done_B | stopped_B,
        stop_state_B=stop_next_SxV[state.stop_state_B, token_B],
        lengths_B=state.lengths_B + (~state.done_B).astype(jnp.int32),
        out_BxN=state.out_BxN.at[:, step].set(token_B), kv_valid_BxS=kv_valid_BxS)

  state = _LoopState(
      step=jnp.int32(0), logits_BxV=logits_Bx1xV[:, 0], cache=cache,
      done_B=jnp.zeros((batch,), jnp.bool_), stop_state_B=jnp.zeros((batch,), jnp.int32),
      lengths_B=jnp.zeros((batch,), jnp.int32),
      out_BxN=jnp.zeros((batch, cfg.max_new_tokens), jnp.int32), kv_valid_BxS=kv_valid_BxS)
  state = jax.lax.while_loop(cond, body, state)
  return state.out_BxN, state.lengths_B


def make_generate_fn(graphdef: nnx.GraphDef, cfg: SamplingConfig, eos_id: int):
  """The jitted `generate` for one sampling config (recompiles only for new shapes)."""
  return jax.jit(functools.partial(generate, graphdef, cfg=cfg, eos_id=eos_id))
