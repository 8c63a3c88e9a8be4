"""Sampling n completions per problem with a shared prompt cache and continuous batching.

One call takes P problems (prompts left-padded to one bucketed length) and draws n samples of
each, R = P * n rows, through S fixed slots on device:

  * the prompts are prefilled once, their keys/values kept once per problem
    (model/shared_decode.py); a slot holds one sample and only its generated tokens' cache;
  * a slot whose sample stops (EOS, the stop string, or max_new_tokens) is refilled in the
    same step with the next pending sample (its first logits are its problem's prefill
    logits), so no slot idles while samples are pending; the loop (a `lax.while_loop`, no
    host round trip) ends when every sample is done;
  * sample r's token at position t is drawn with the key fold_in(seed key, problem key,
    sample index, t): a sample depends on (seed, problem, sample index) only, not on which
    slot or batch it ran in, so any chunking or resume draws the same samples.

Shapes depend on (P, S, prompt length, max_new_tokens): an evaluation compiles a few times.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from model.sampling import SamplingConfig, choose_tokens_per_row
from model.shared_decode import decode_slots, init_generated_cache, prefill_prompts


class _Slots(NamedTuple):
  """The loop's carry. Samples are numbered r = problem * n + sample index; r == R is none."""
  sample_S: jax.Array        # the sample each slot holds (R: idle)
  pos_S: jax.Array           # tokens that sample has generated so far
  logits_SxV: jax.Array      # its next-token logits
  stop_state_S: jax.Array    # its stop-string automaton state (model/stop_matcher.py)
  generated: Any             # generated-token cache, model/shared_decode.py
  next_sample: jax.Array     # the first sample not yet given a slot
  out_RxN: jax.Array         # tokens per sample, 0 after its stop (one spare row for idle slots)
  lengths_R: jax.Array       # tokens kept per sample, up to and including its stop


def sample_keys(key: jax.Array, problem_key_S: jax.Array, sample_index_S: jax.Array,
                position_S: jax.Array) -> jax.Array:
  """The key of each row's draw: fold_in(key, problem key, sample index, position)."""
  fold = lambda k, p, i, t: jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(k, p), i), t)
  return jax.vmap(fold, in_axes=(None, 0, 0, 0))(key, problem_key_S, sample_index_S, position_S)


def generate_samples(graphdef: nnx.GraphDef, params: Any, prompt_PxL: jax.Array,
                     prompt_lengths_P: jax.Array, problem_keys_P: jax.Array,
                     num_problems: jax.Array, key: jax.Array, stop_next_SxV: jax.Array,
                     stop_completes_SxV: jax.Array, *, cfg: SamplingConfig, eos_id: int,
                     num_samples: int, num_slots: int) -> tuple[jax.Array, jax.Array]:
  """(tokens [P, n, max_new_tokens], 0 after each stop; lengths [P, n]).

  Only the first `num_problems` problems are sampled (the rest pad P to a shardable size and
  come back empty). A length counts tokens up to and including EOS or the token that
  completed the stop string. Pure function: jit it (make_sample_fn).
  """
  model = nnx.merge(graphdef, params)
  num_rows = prompt_PxL.shape[0] * num_samples
  real_rows = num_problems * num_samples
  max_new = cfg.max_new_tokens
  first_logits_PxV, prompt, prompt_valid_PxL = prefill_prompts(model, prompt_PxL,
                                                               prompt_lengths_P)
  problem_of = lambda sample_S: jnp.minimum(sample_S // num_samples, prompt_PxL.shape[0] - 1)

  def cond(state: _Slots) -> jax.Array:
    return jnp.any(state.sample_S < num_rows)

  def body(state: _Slots) -> _Slots:
    active_S = state.sample_S < num_rows
    problem_S = problem_of(state.sample_S)
    keys_S = sample_keys(key, problem_keys_P[problem_S], state.sample_S % num_samples,
                         state.pos_S)
    token_S = choose_tokens_per_row(state.logits_SxV, keys_S, cfg)
    stopped_S = active_S & ((token_S == eos_id) |
                            stop_completes_SxV[state.stop_state_S, token_S] |
                            (state.pos_S + 1 >= max_new))
    # Idle slots write to the spare row num_rows, dropped at the end.
    out_RxN = state.out_RxN.at[state.sample_S, state.pos_S].set(token_S)
    lengths_R = state.lengths_R.at[state.sample_S].set(state.pos_S + 1)
    positions_S = prompt_lengths_P[problem_S] + state.pos_S
    logits_SxV, generated = decode_slots(model, token_S, positions_S, prompt, prompt_valid_PxL,
                                         problem_S, state.generated,
                                         jnp.minimum(state.pos_S, max_new - 1))
    # Refill every free slot (stopped now, or idle) with the next pending samples, in order.
    continues_S = active_S & ~stopped_S
    free_S = ~continues_S
    candidate_S = state.next_sample + jnp.cumsum(free_S) - 1
    takes_S = free_S & (candidate_S < real_rows)
    sample_S = jnp.where(continues_S, state.sample_S, jnp.where(takes_S, candidate_S, num_rows))
    first_SxV = first_logits_PxV[problem_of(sample_S)]
    return _Slots(
        sample_S=sample_S, pos_S=jnp.where(continues_S, state.pos_S + 1, 0),
        logits_SxV=jnp.where(continues_S[:, None], logits_SxV, first_SxV),
        stop_state_S=jnp.where(continues_S, stop_next_SxV[state.stop_state_S, token_S], 0),
        generated=generated, next_sample=state.next_sample + jnp.sum(takes_S),
        out_RxN=out_RxN, lengths_R=lengths_R)

  slots = jnp.arange(num_slots)
  sample_S = jnp.where(slots < real_rows, slots, num_rows)
  state = _Slots(
      sample_S=sample_S, pos_S=jnp.zeros((num_slots,), jnp.int32),
      logits_SxV=first_logits_PxV[problem_of(sample_S)],
      stop_state_S=jnp.zeros((num_slots,), jnp.int32),
      generated=init_generated_cache(model, num_slots, max_new),
      next_sample=jnp.minimum(num_slots, real_rows).astype(jnp.int32),
      out_RxN=jnp.zeros((num_rows + 1, max_new), jnp.int32),
      lengths_R=jnp.zeros((num_rows + 1,), jnp.int32))
  state = jax.lax.while_loop(cond, body, state)
  shape = (prompt_PxL.shape[0], num_samples)
  return (state.out_RxN[:num_rows].reshape(shape + (max_new,)),
          state.lengths_R[:num_rows].reshape(shape))


def make_sample_fn(graphdef: nnx.GraphDef, cfg: SamplingConfig, eos_id: int, num_samples: int,
                   num_slots: int):
  """The jitted `generate_samples` (recompiles only for new shapes)."""
  return jax.jit(functools.partial(generate_samples, graphdef, cfg=cfg, eos_id=eos_id,
                                   num_samples=num_samples, num_slots=num_slots))
