"""Sampling n completions per problem with a shared prompt cache and continuous batching.

One call takes P problems (prompts left-padded to one bucketed length) and draws n samples of
each through S fixed slots on device:

  * the prompts are prefilled once, their keys/values kept once per problem
    (model/shared_decode.py); a slot holds one sample and only its generated tokens' cache;
    the tokens every prompt starts with (`prefix_C`, a few-shot template's examples) are
    prefilled and kept once for the whole call, and the problems' prompts are what follows;
  * the slots form J lanes of S / J (`lanes_for`: about one lane per n slots), and lane j
    owns problems j * rounds ... (j + 1) * rounds - 1 (P padded to J * rounds): its slots
    draw that lane's samples in order, so a lane's slots attend to a window of W consecutive
    problems of its own (W = 1 when a lane holds one problem, else those its slots fill
    plus WINDOW_OVERLAP), not to all P: the prompt attention costs W times its essential FLOPs;
  * a slot whose sample stops (EOS, the stop string, or max_new_tokens) is refilled in the
    same step with its lane's next pending sample (its first logits are its problem's
    prefill logits), unless that sample's problem is past the lane's window (it waits for the
    window's oldest problem to finish; the overlap lets freed slots run ahead of it); the
    loop (a `lax.while_loop`, no host round trip) ends when every sample is done;
  * sample r's token at position t is drawn with the uniform of the key fold_in(seed key,
    problem key, sample index, t) (all of a call's uniforms drawn before the loop): a sample
    depends on (seed, problem, sample index) only, not on which slot, lane or call it ran in,
    so any chunking or resume draws the same samples;
  * a slot's own tokens' keys/values live in pages of a pool the slots share
    (model/page_pool.py): a slot takes a page per PAGE tokens and frees them when its sample
    stops, so a step reads about the pages in use, not max_new_tokens per slot.

On a purely data-parallel mesh (make_sample_fn under jax.set_mesh), each data shard runs
this whole loop on its own share of the problems and slots (generate_samples_per_shard): the
shards never synchronise, so one that finishes early does not wait inside the loop.

Shapes depend on (P, S, J, prompt length, max_new_tokens): an evaluation compiles a few times.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from model import page_pool
from model.sampling import SamplingConfig, choose_tokens_by_uniforms, draw_uniforms
from model.sharding import DATA_AXIS, data_shards, shard_activation
from model.shared_decode import (decode_slots, init_generated_cache, layers_for_decoding,
                                 prefill_prefix, prefill_prompts, prefix_for_decoding, to_lanes)


def lanes_for(num_slots: int, num_samples: int, num_problems: int) -> int:
  """Lanes for S slots: about S / n (a lane's slots then span ~2 problems), at most P, and
  a divisor of S (every lane has S / J slots)."""
  lanes = max(1, min(num_problems, -(-num_slots // num_samples)))
  while num_slots % lanes:
    lanes -= 1
  return lanes


# Problems a lane's window holds beyond those its slots fill at once. A problem's longest
# samples end last and hold the window's start while the freed slots run ahead. Replaying the
# tiny model's MBPP sample lengths (median 55, a tenth at the 256-token limit) through this
# refill rule at 12 problems per 64-slot call: 72% of the slot-steps busy with room for 1,
# 86% with 2, 90% with 3. A problem in the window costs its prompt's keys (after the shared
# prefix) in every slot's attention, so 3 measured slower than 2 (3,267 against 3,361
# tokens/s on one such call; 2,605 with 1).
WINDOW_OVERLAP = 2


def window_for(slots_per_lane: int, num_samples: int, rounds: int) -> int:
  """Problems a lane's slots may span at once: those its slots fill, plus WINDOW_OVERLAP."""
  return min(rounds, -(-slots_per_lane // num_samples) + WINDOW_OVERLAP)


class _Slots(NamedTuple):
  """The loop's carry. Lane j's samples are numbered u = round * n + sample index (the lane's
  own order; its row in the output is j * rounds * n + u); u == rounds * n is none."""
  sample_S: jax.Array        # the lane sample each slot holds (rounds * n: idle)
  pos_S: jax.Array           # tokens that sample has generated so far
  logits_SxV: jax.Array      # its next-token logits
  stop_state_S: jax.Array    # its stop-string automaton state (model/stop_matcher.py)
  generated: Any             # generated-token page pool, model/page_pool.py
  pages: page_pool.Pages     # which slot holds which page
  next_J: jax.Array          # per lane, the first sample not yet given a slot
  out_RxN: jax.Array         # tokens per sample, 0 after its stop (one spare row for idle slots)
  lengths_R: jax.Array       # tokens kept per sample, up to and including its stop


def sample_keys(key: jax.Array, problem_key_S: jax.Array, sample_index_S: jax.Array,
                position_S: jax.Array) -> jax.Array:
  """The key of each draw: fold_in(key, problem key, sample index, position) (the three
  broadcast together)."""
  fold = lambda p, i, t: jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, p), i), t)
  shape = jnp.broadcast_shapes(jnp.shape(problem_key_S), jnp.shape(sample_index_S),
                               jnp.shape(position_S))
  flat = [jnp.broadcast_to(x, shape).reshape(-1)
          for x in (problem_key_S, sample_index_S, position_S)]
  return jax.vmap(fold)(*flat).reshape(shape)


def _pad_problems(multiple: int, *arrays: jax.Array) -> tuple[jax.Array, ...]:
  """Arrays with their leading (problems) axis zero-padded to a multiple of `multiple`."""
  extra = -arrays[0].shape[0] % multiple
  return tuple(jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1)) for x in arrays)


def generate_samples(graphdef: nnx.GraphDef, params: Any, prompt_PxL: jax.Array,
                     prompt_lengths_P: jax.Array, problem_keys_P: jax.Array,
                     num_problems: jax.Array, key: jax.Array, stop_next_SxV: jax.Array,
                     stop_completes_SxV: jax.Array, prefix_C: jax.Array | None = None, *,
                     cfg: SamplingConfig, eos_id: int, num_samples: int, num_slots: int
                     ) -> tuple[jax.Array, jax.Array]:
  """(tokens [P, n, max_new_tokens], 0 after each stop; lengths [P, n]).

  Only the first `num_problems` problems are sampled (the rest pad P to a shardable size and
  come back empty). A length counts tokens up to and including EOS or the token that
  completed the stop string. The slots form lanes_for(...) lanes. `prefix_C`: tokens that
  come before every prompt (model.sampling.shared_prefix_length); prompt_PxL then holds the
  rest of each prompt. Pure function: jit it (make_sample_fn).
  """
  model = nnx.merge(graphdef, params)
  num_out_problems = prompt_PxL.shape[0]
  n, max_new = num_samples, cfg.max_new_tokens
  lanes = lanes_for(num_slots, n, num_out_problems)
  per_lane = num_slots // lanes
  prompt_PxL, prompt_lengths_P, problem_keys_P = _pad_problems(
      lanes, prompt_PxL, prompt_lengths_P, problem_keys_P)
  rounds = prompt_PxL.shape[0] // lanes
  window = window_for(per_lane, n, rounds)
  lane_samples = rounds * n            # U: samples per lane, and the idle marker
  num_rows = lanes * lane_samples      # R: the spare output row for idle slots
  layers = layers_for_decoding(model)  # once, outside the loop
  prefix_len = 0 if prefix_C is None else prefix_C.shape[0]
  prefix = prefill_prefix(model, prefix_C, layers) if prefix_len else None
  first_logits_PxV, prompt, prompt_valid_PxL = prefill_prompts(model, prompt_PxL,
                                                               prompt_lengths_P, layers, prefix)
  prompt = to_lanes(model, prompt, lanes)
  # What the loop looks up by each slot's problem, whole on every device (a call's P rows,
  # gathered once here; split over the batch shards, every step all-gathered them).
  whole = lambda x: shard_activation(x, (None,) * x.ndim)
  first_logits_PxV, prompt_valid_PxL, prompt_lengths_P = map(
      whole, (first_logits_PxV, prompt_valid_PxL, prompt_lengths_P))
  if prefix is not None:
    prefix = prefix_for_decoding(model, prefix)
  lane_S = jnp.arange(num_slots) // per_lane
  # Real samples per lane: its problems below num_problems, n each.
  real_J = jnp.clip(num_problems - jnp.arange(lanes) * rounds, 0, rounds) * n
  round_of = lambda sample_S: jnp.minimum(sample_S // n, rounds - 1)
  problem_of = lambda sample_S: lane_S * rounds + round_of(sample_S)
  by_lane = lambda x_S: x_S.reshape(lanes, per_lane)
  # Every draw's uniform, before the loop: [P, n, max_new_tokens]. Drawn in the loop, the
  # four threefry hashes of sample_keys cost 3% of a decode step (tiny model, XLA:CPU).
  uniforms_PxNxT = jnp.zeros((prompt_PxL.shape[0], 1, 1))
  if cfg.temperature > 0:
    uniforms_PxNxT = draw_uniforms(sample_keys(
        key, problem_keys_P[:, None, None], jnp.arange(n)[None, :, None],
        jnp.arange(max_new)[None, None, :]))

  def refill(sample_S, continues_S, next_J):
    """Every free slot takes its lane's next pending sample, in order, within the window."""
    busy_JxS = by_lane(continues_S)
    oldest_J = jnp.minimum(jnp.min(jnp.where(busy_JxS, by_lane(sample_S) // n, rounds), 1),
                           next_J // n)
    limit_J = jnp.minimum(real_J, (oldest_J + window) * n)
    candidate_JxS = next_J[:, None] + jnp.cumsum(~busy_JxS, axis=1) - 1
    takes_JxS = ~busy_JxS & (candidate_JxS < limit_J[:, None])
    refilled_S = jnp.where(continues_S, sample_S,
                           jnp.where(takes_JxS, candidate_JxS, lane_samples).reshape(-1))
    return refilled_S, next_J + jnp.sum(takes_JxS, axis=1)

  def cond(state: _Slots) -> jax.Array:
    return jnp.any(state.sample_S < lane_samples)

  def body(state: _Slots) -> _Slots:
    active_S = state.sample_S < lane_samples
    problem_S = problem_of(state.sample_S)
    u_S = uniforms_PxNxT[problem_S, state.sample_S % n, jnp.minimum(state.pos_S, max_new - 1)]
    token_S = choose_tokens_by_uniforms(state.logits_SxV, u_S, cfg)
    stopped_S = active_S & ((token_S == eos_id) |
                            stop_completes_SxV[state.stop_state_S, token_S] |
                            (state.pos_S + 1 >= max_new))
    # Idle slots write to the spare row num_rows, dropped at the end.
    row_S = jnp.where(active_S, lane_S * lane_samples + state.sample_S, num_rows)
    out_RxN = state.out_RxN.at[row_S, state.pos_S].set(token_S)
    lengths_R = state.lengths_R.at[row_S].set(state.pos_S + 1)
    # Each lane's window starts at its oldest problem in flight (the refills keep every slot
    # of the lane within `window` problems of it).
    round_S = jnp.where(active_S, state.sample_S // n, rounds)
    start_J = jnp.minimum(jnp.min(by_lane(round_S), axis=1), rounds - window)
    pages = page_pool.take_pages(state.pages, active_S, state.pos_S)
    logits_SxV, generated = decode_slots(
        model, token_S, prefix_len + prompt_lengths_P[problem_S] + state.pos_S, prompt,
        start_J, window, prompt_valid_PxL[problem_S],
        jnp.clip(round_S - start_J[lane_S], 0, window - 1), state.generated, pages,
        state.pos_S, layers, prefix)
    continues_S = active_S & ~stopped_S
    # A stopped sample's pages are free for the next step's new blocks.
    pages = page_pool.release_pages(pages, active_S & stopped_S)
    sample_S, next_J = refill(state.sample_S, continues_S, state.next_J)
    first_SxV = first_logits_PxV[problem_of(sample_S)]
    return _Slots(
        sample_S=sample_S, pos_S=jnp.where(continues_S, state.pos_S + 1, 0),
        logits_SxV=jnp.where(continues_S[:, None], logits_SxV, first_SxV),
        stop_state_S=jnp.where(continues_S, stop_next_SxV[state.stop_state_S, token_S], 0),
        generated=generated, pages=pages, next_J=next_J, out_RxN=out_RxN,
        lengths_R=lengths_R)

  none_S = jnp.zeros((num_slots,), jnp.bool_)
  sample_S, next_J = refill(jnp.full((num_slots,), lane_samples), none_S,
                            jnp.zeros((lanes,), jnp.int32))
  state = _Slots(
      sample_S=sample_S, pos_S=jnp.zeros((num_slots,), jnp.int32),
      logits_SxV=first_logits_PxV[problem_of(sample_S)],
      stop_state_S=jnp.zeros((num_slots,), jnp.int32),
      generated=init_generated_cache(model, num_slots, max_new),
      pages=page_pool.init_pages(num_slots, max_new), next_J=next_J,
      out_RxN=jnp.zeros((num_rows + 1, max_new), jnp.int32),
      lengths_R=jnp.zeros((num_rows + 1,), jnp.int32))
  state = jax.lax.while_loop(cond, body, state)
  rows = num_out_problems * n
  return (state.out_RxN[:rows].reshape(num_out_problems, n, max_new),
          state.lengths_R[:rows].reshape(num_out_problems, n))


def problem_rows(num_problems: int, num_rows: int, shards: int) -> np.ndarray:
  """The row of each of `num_problems` real problems among `num_rows` split over `shards`
  data shards: shard d's block of rows holds its even share first (one more for the first
  num_problems % shards shards), padding after; generate_samples_per_shard samples each
  shard's share. With one shard: rows 0 ... num_problems - 1."""
  per_shard = num_rows // shards
  counts = [num_problems // shards + (d < num_problems % shards) for d in range(shards)]
  if num_rows % shards or max(counts) > per_shard:
    raise ValueError(f"{num_problems} problems do not fit {num_rows} rows over {shards} shards")
  return np.concatenate([d * per_shard + np.arange(c) for d, c in enumerate(counts)])


def generate_samples_per_shard(graphdef: nnx.GraphDef, params: Any, prompt_PxL: jax.Array,
                               prompt_lengths_P: jax.Array, problem_keys_P: jax.Array,
                               num_problems: jax.Array, key: jax.Array, *stop_and_prefix: Any,
                               cfg: SamplingConfig, eos_id: int, num_samples: int,
                               num_slots: int) -> tuple[jax.Array, jax.Array]:
  """generate_samples with the problems and slots split over the data axis of a purely
  data-parallel mesh (the jax.set_mesh mesh; model/sharding.py data_shards): each data shard
  runs its own loop over its own P / D problems with S / D slots, and the shards never talk
  (a shard_map manual over that axis). Any other mesh runs one loop partitioned by XLA. A
  shard that finishes first stops; no step waits for another shard's slots. Samples are keyed
  by (seed, problem, index), so they are the same whatever the split. The `num_problems` real
  problems are laid out as `problem_rows` places them (each shard's block of rows starts with
  its even share), so a call of fewer problems than rows keeps every shard busy.

  Why: a data-parallel mesh has whole parameters on every device. On accelerators, a
  partitioned loop synchronises every step (its stop test and refills span all slots); on a
  CPU, XLA:CPU runs a decode step's small ops on about one core, and one CPU device per core
  (model/host_devices.py) samples 1.45x faster on 2 cores (d_model 128, 12 MBPP 3-shot
  prompts x 80 samples: 3,613 -> 5,254 tokens/s).
  """
  run = functools.partial(generate_samples, graphdef, cfg=cfg, eos_id=eos_id,
                          num_samples=num_samples)
  shards = data_shards(jax.sharding.get_abstract_mesh())
  if shards == 1:
    return run(params, prompt_PxL, prompt_lengths_P, problem_keys_P, num_problems, key,
               *stop_and_prefix, num_slots=num_slots)
  if num_slots % shards or prompt_PxL.shape[0] % shards:
    raise ValueError(f"{num_slots} slots and {prompt_PxL.shape[0]} problems must both split "
                     f"evenly over the mesh's {shards} {DATA_AXIS} shards")

  def shard(params, prompt_PxL, prompt_lengths_P, problem_keys_P, num_problems, key,
            *stop_and_prefix):
    index = jax.lax.axis_index(DATA_AXIS)
    real = num_problems // shards + (index < num_problems % shards)  # problem_rows' share
    return run(params, prompt_PxL, prompt_lengths_P, problem_keys_P, real, key,
               *stop_and_prefix, num_slots=num_slots // shards)

  split, whole = PartitionSpec(DATA_AXIS), PartitionSpec()
  return jax.shard_map(
      shard, in_specs=(whole, split, split, split, whole, whole) + (whole,) * len(stop_and_prefix),
      out_specs=(split, split), axis_names={DATA_AXIS}, check_vma=False)(
          params, prompt_PxL, prompt_lengths_P, problem_keys_P, num_problems, key,
          *stop_and_prefix)


def make_sample_fn(graphdef: nnx.GraphDef, cfg: SamplingConfig, eos_id: int, num_samples: int,
                   num_slots: int):
  """The jitted `generate_samples_per_shard` (recompiles only for new shapes or meshes)."""
  return jax.jit(functools.partial(generate_samples_per_shard, graphdef, cfg=cfg,
                                   eos_id=eos_id, num_samples=num_samples,
                                   num_slots=num_slots))
