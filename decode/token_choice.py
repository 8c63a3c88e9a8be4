"""How a token is picked from next-token logits: temperature, top-k, top-p, one uniform per draw.

A draw consumes one uniform in [0, 1) (decode/engine.py draws each from a key of its sample
and position, so a sample does not depend on the slot or call it ran in) and inverts the
cumulative mass of the tempered, filtered softmax: exact like the Gumbel max of
jax.random.categorical, with one random number per row instead of one per vocabulary entry.
Temperature 0 is greedy (argmax).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


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


def draw_uniforms(keys: jax.Array) -> jax.Array:
  """One uniform in [0, 1) per key (any shape of keys): what a row's draw consumes."""
  return jax.vmap(lambda key: jax.random.uniform(key, (), jnp.float32))(
      keys.reshape(-1)).reshape(keys.shape)


def choose_tokens_by_uniforms(logits_BxV: jax.Array, u_B: jax.Array,
                              cfg: SamplingConfig) -> jax.Array:
  """Next token per row under temperature / top-k / top-p, row b drawn with uniform u_B[b]."""
  if cfg.temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  return _inverse_cdf_sample(filtered_logits(logits_BxV, cfg), 1.0 - u_B[:, None])


def filtered_logits(logits_BxV: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """Logits / temperature, with what top-k and top-p cut set to -inf."""
  logits_BxV = logits_BxV.astype(jnp.float32) / cfg.temperature
  if cfg.top_k:
    kth_Bx1 = jax.lax.top_k(logits_BxV, cfg.top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
  if cfg.top_p < 1.0:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    cumulative_BxV = jnp.cumsum(jax.nn.softmax(sorted_BxV, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    cutoff_index_B = jnp.sum(cumulative_BxV < cfg.top_p, axis=-1)
    cutoff_Bx1 = jnp.take_along_axis(sorted_BxV, cutoff_index_B[:, None], axis=-1)
    logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
  return logits_BxV


_BLOCK = 128  # vocabulary entries per block of the two-level inverse CDF


def _inverse_cdf_sample(logits_BxV: jax.Array, u_Bx1: jax.Array) -> jax.Array:
  """A draw from softmax(logits) per row, by one uniform against the cumulative mass.

  Exact like jax.random.categorical's Gumbel max, but one random number per row instead of
  one per vocabulary entry (B x V threefry draws cost more than a decode step's attention).
  u is in (0, 1], so a token of zero mass (cut by top-k/top-p) is never the first whose
  cumulative mass reaches u * total.

  Two levels (Z blocks of W entries), so no scan runs over the whole vocabulary: the block
  whose running total first reaches the threshold, then the entry within that block.
  """
  batch, vocab = logits_BxV.shape
  mass_BxV = jnp.exp(logits_BxV - jnp.max(logits_BxV, axis=-1, keepdims=True))
  mass_BxZxW = jnp.pad(mass_BxV, ((0, 0), (0, -vocab % _BLOCK))).reshape(batch, -1, _BLOCK)
  block_sums_BxZ = jnp.sum(mass_BxZxW, axis=-1)
  block_cumulative_BxZ = jnp.cumsum(block_sums_BxZ, axis=-1)
  threshold_Bx1 = u_Bx1 * block_cumulative_BxZ[:, -1:]
  # The first block whose running total reaches the threshold (it holds positive mass).
  block_B = jnp.minimum(jnp.sum(block_cumulative_BxZ < threshold_Bx1, axis=-1),
                        block_sums_BxZ.shape[1] - 1)
  before_Bx1 = jnp.take_along_axis(block_cumulative_BxZ - block_sums_BxZ, block_B[:, None], 1)
  in_block_BxW = jnp.take_along_axis(mass_BxZxW, block_B[:, None, None], 1)[:, 0]
  entry_B = jnp.sum(jnp.cumsum(in_block_BxW, axis=-1) < threshold_Bx1 - before_Bx1, axis=-1)
  # Rounding can leave the threshold a hair above the block's last partial sum: stay on the
  # block's last entry of positive mass.
  last_positive_B = _BLOCK - 1 - jnp.argmax((in_block_BxW > 0)[:, ::-1], axis=-1)
  token_B = block_B * _BLOCK + jnp.minimum(entry_B, last_positive_B)
  return token_B.astype(jnp.int32)
