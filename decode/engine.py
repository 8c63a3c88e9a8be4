"""One sampling call: P problems, n samples each, through S slots refilled on device.

  1. The call's pages (decode/kv_pages.py): the prefix every prompt starts with is prefilled
     once, then each problem's prompt once (decode/forward.py prefill); a problem's first
     logits come from its prompt's last token.
  2. Samples are numbered u = problem * n + index. The slots take them in order; a slot whose
     sample stops (EOS, the stop string, max_new_tokens) takes the next pending one in the
     same step (its first token is drawn from its problem's first logits), and its page table
     points at that problem's prompt pages: a problem's n samples share its prompt's pages and
     own only their generated tokens' pages. The loop (`lax.while_loop`, no host round trip)
     ends when every sample has stopped.
  3. Sample u's token t is drawn with the uniform of the key fold_in(seed key, problem key,
     sample index, t) (decode/token_choice.py): a sample depends on (seed, problem, index)
     only, not on its slot or its call, so any split into calls, or a resume, draws the same
     samples.

`sample_fn` splits a call over the mesh's batch axes (data, fsdp) with `jax.shard_map`: each
shard prefills and samples its own problems with its own slots and pages, holding the weights
whole (gathered once a call where fsdp splits them; tensor parallelism stays inside, heads
split). Without tensor parallelism the shards never talk, and one that finishes early stops;
with it, the shards step together (their tensor collectives are one collective to XLA).
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from decode import kv_pages
from decode.forward import decode_step, prefill
from decode.prompt_rows import bucket_length, right_pad
from decode.token_choice import SamplingConfig, choose_tokens_by_uniforms, draw_uniforms

BATCH_AXES = ("data", "fsdp")  # model/sharding.py's "batch": the axes a call is split over
REFILLS_PER_STEP = 8


class _Slots(NamedTuple):
  """The loop's carry; u == P * n (U) marks an idle slot, and is the spare output row."""
  sample_S: jax.Array        # the sample each slot holds
  fresh_S: jax.Array         # it took that sample in the last step (its pages not set up yet)
  pos_S: jax.Array           # tokens it has generated so far
  logits_SxV: jax.Array      # its next-token logits
  stop_state_S: jax.Array    # its stop-string automaton state (decode/stop_matcher.py)
  pool: kv_pages.Pool
  next_sample: jax.Array     # the first sample not yet given a slot
  out_RxT: jax.Array         # tokens per sample, 0 after its stop
  lengths_R: jax.Array       # tokens kept per sample, up to and including its stop


def sample_keys(key: jax.Array, problem_key: jax.Array, sample_index: jax.Array,
                position: jax.Array) -> jax.Array:
  """The key of each draw: fold_in(key, problem key, sample index, position), broadcast."""
  fold = lambda p, i, t: jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, p), i), t)
  shape = jnp.broadcast_shapes(jnp.shape(problem_key), jnp.shape(sample_index),
                               jnp.shape(position))
  flat = [jnp.broadcast_to(x, shape).reshape(-1) for x in (problem_key, sample_index, position)]
  return jax.vmap(fold)(*flat).reshape(shape)


def generate_samples(graphdef: nnx.GraphDef, params: Any, prompt_PxL: jax.Array,
                     prompt_lengths_P: jax.Array, problem_keys_P: jax.Array,
                     num_problems: jax.Array, key: jax.Array, stop_next_AxV: jax.Array,
                     stop_completes_AxV: jax.Array, prefix_C: jax.Array | None = None, *,
                     cfg: SamplingConfig, eos_id: int, num_samples: int, num_slots: int,
                     lockstep_axes: tuple[str, ...] = ()) -> tuple[jax.Array, jax.Array]:
  """(tokens [P, n, max_new_tokens], 0 after each stop; lengths [P, n]) of one call.

  prompt_PxL: each prompt after the shared prefix prefix_C (None: no prefix), right-padded,
  prompt_lengths_P real tokens each (>= 1). Only the first num_problems problems are sampled
  (the rest pad P and come back empty). A length counts tokens up to and including EOS or the
  token that completed the stop string. lockstep_axes: mesh axes whose shards must run as
  many steps as each other (the loop ends when all of theirs have ended).
  """
  model = nnx.merge(graphdef, params)
  problems, prompt_len = prompt_PxL.shape
  n, max_new = num_samples, cfg.max_new_tokens
  prefix_len = 0 if prefix_C is None else prefix_C.shape[0]
  layout = kv_pages.PageLayout.of(prefix_len=prefix_len, prompt_len=prompt_len,
                                  problems=problems, slots=num_slots, max_new_tokens=max_new)
  with jax.named_scope("prefill"):  # names in profiles and in the compiled program
    pool = kv_pages.init_pool(model.cfg, layout)
    if prefix_len:
      _, pool = prefill(model, prefix_C[None], 0, pool, layout, 0, with_prefix=False)
    x_PxLxD, pool = prefill(model, prompt_PxL, prefix_len, pool, layout, layout.prefix_pages,
                            with_prefix=bool(prefix_len))
    last_Px1xD = jnp.take_along_axis(
        x_PxLxD, jnp.maximum(prompt_lengths_P - 1, 0)[:, None, None], axis=1)
    first_logits_PxV = model.logits(last_Px1xD)[:, 0]
  idle = problems * n                       # U: no sample, and the spare output row
  real = num_problems * n
  # Every draw's uniform, before the loop (the threefry hashes in the loop would cost every
  # step): [P, n, max_new_tokens].
  uniforms_PxNxT = jnp.zeros((problems, 1, 1))
  if cfg.temperature > 0:
    uniforms_PxNxT = draw_uniforms(sample_keys(
        key, problem_keys_P[:, None, None], jnp.arange(n)[None, :, None],
        jnp.arange(max_new)[None, None, :]))
  problem_of = lambda sample_S: jnp.minimum(sample_S // n, problems - 1)
  # Slots that may take a sample in one step (all of them before the loop): each copies a
  # page per layer, so a step costs the same whatever stopped in it. An eighth of the slots
  # (at least REFILLS_PER_STEP) keeps up with samples of 8 tokens on average; a slot left
  # free waits a step, which changes when a sample runs, never what it draws.
  refills = min(num_slots, max(REFILLS_PER_STEP, num_slots // 8))

  def refill(sample_S, continues_S, next_sample, most):
    """Up to `most` free slots take the next pending samples, in slot order."""
    free_S = ~continues_S
    rank_S = jnp.cumsum(free_S)
    candidate_S = next_sample + rank_S - 1
    takes_S = free_S & (candidate_S < real) & (rank_S <= most)
    sample_S = jnp.where(continues_S, sample_S, jnp.where(takes_S, candidate_S, idle))
    return sample_S, takes_S, next_sample + jnp.sum(takes_S)

  def set_up_pages(pool, problem_S, fresh_S, most):
    """The fresh samples' prompt's partly filled last page, copied into their slot's first
    own page. First thing in a step: then nothing else has read the pool yet, and XLA
    updates it in place (after the step's attention read it, XLA copied the whole pool)."""
    return kv_pages.copy_prompt_tails(pool, layout, model.cfg.num_layers, fresh_S, problem_S,
                                      prompt_lengths_P[problem_S], most)

  def cond(state: _Slots) -> jax.Array:
    busy = jnp.any(state.sample_S < idle)
    if lockstep_axes:
      busy = jax.lax.psum(busy.astype(jnp.int32), lockstep_axes) > 0
    return busy

  def body(state: _Slots) -> _Slots:
    problem_S = problem_of(state.sample_S)
    pool = set_up_pages(state.pool, problem_S, state.fresh_S, refills)
    active_S = state.sample_S < idle
    u_S = uniforms_PxNxT[problem_S, state.sample_S % n, jnp.minimum(state.pos_S, max_new - 1)]
    token_S = choose_tokens_by_uniforms(state.logits_SxV, u_S, cfg)
    stopped_S = active_S & ((token_S == eos_id) |
                            stop_completes_AxV[state.stop_state_S, token_S] |
                            (state.pos_S + 1 >= max_new))
    row_S = jnp.where(active_S, state.sample_S, idle)  # idle slots write the spare row
    out_RxT = state.out_RxT.at[row_S, state.pos_S].set(token_S)
    lengths_R = state.lengths_R.at[row_S].set(state.pos_S + 1)
    prompt_len_S = prompt_lengths_P[problem_S]
    table_SxM = kv_pages.page_tables(layout, problem_S, prompt_len_S)
    logits_SxV, pool = decode_step(model, token_S, prefix_len + prompt_len_S + state.pos_S,
                                   table_SxM, pool, layout,
                                   kv_pages.prompt_groups(layout, problem_S, prompt_len_S))
    continues_S = active_S & ~stopped_S
    sample_S, fresh_S, next_sample = refill(state.sample_S, continues_S, state.next_sample,
                                            refills)
    return _Slots(
        sample_S=sample_S, fresh_S=fresh_S, pos_S=jnp.where(continues_S, state.pos_S + 1, 0),
        logits_SxV=jnp.where(continues_S[:, None], logits_SxV,
                             first_logits_PxV[problem_of(sample_S)]),
        stop_state_S=jnp.where(continues_S, stop_next_AxV[state.stop_state_S, token_S], 0),
        pool=pool, next_sample=next_sample, out_RxT=out_RxT, lengths_R=lengths_R)

  with jax.named_scope("decode"):
    sample_S, fresh_S, next_sample = refill(jnp.full((num_slots,), idle),
                                            jnp.zeros((num_slots,), bool), jnp.int32(0),
                                            num_slots)
    pool = set_up_pages(pool, problem_of(sample_S), fresh_S, num_slots)
    state = jax.lax.while_loop(cond, body, _Slots(
        sample_S=sample_S, fresh_S=jnp.zeros((num_slots,), bool),
        pos_S=jnp.zeros((num_slots,), jnp.int32),
        logits_SxV=first_logits_PxV[problem_of(sample_S)],
        stop_state_S=jnp.zeros((num_slots,), jnp.int32), pool=pool, next_sample=next_sample,
        out_RxT=jnp.zeros((idle + 1, max_new), jnp.int32),
        lengths_R=jnp.zeros((idle + 1,), jnp.int32)))
  return (state.out_RxT[:idle].reshape(problems, n, max_new),
          state.lengths_R[:idle].reshape(problems, n))


def loop_shards(mesh: jax.sharding.AbstractMesh | jax.sharding.Mesh) -> int:
  """Shards a call is split into on `mesh`: each runs its own loop (the batch axes' sizes)."""
  if mesh.empty:
    return 1
  return math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names)


def problem_rows(num_problems: int, num_rows: int, shards: int) -> np.ndarray:
  """The row of each of `num_problems` real problems among `num_rows` split over `shards`
  loop shards: shard d's block of rows holds its even share first (one more for the first
  num_problems % shards shards), padding after. With one shard: rows 0 ... num_problems - 1."""
  per_shard = num_rows // shards
  counts = [num_problems // shards + (d < num_problems % shards) for d in range(shards)]
  if num_rows % shards or max(counts) > per_shard:
    raise ValueError(f"{num_problems} problems do not fit {num_rows} rows over {shards} shards")
  return np.concatenate([d * per_shard + np.arange(c) for d, c in enumerate(counts)])


def generate_samples_on_mesh(graphdef: nnx.GraphDef, params: Any, prompt_PxL: jax.Array,
                             prompt_lengths_P: jax.Array, problem_keys_P: jax.Array,
                             num_problems: jax.Array, key: jax.Array, *stop_and_prefix: Any,
                             **static: Any) -> tuple[jax.Array, jax.Array]:
  """generate_samples with the problems and slots split over the batch axes of the mesh in
  context (module docstring). The num_problems real problems are in the rows problem_rows
  gives them: each shard's block of rows starts with its even share (so a call of fewer
  problems than rows keeps every shard busy)."""
  mesh = jax.sharding.get_abstract_mesh()
  shards = loop_shards(mesh)
  num_slots = static.pop("num_slots")
  if shards == 1:
    return generate_samples(graphdef, params, prompt_PxL, prompt_lengths_P, problem_keys_P,
                            num_problems, key, *stop_and_prefix, num_slots=num_slots, **static)
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  if num_slots % shards or prompt_PxL.shape[0] % shards:
    raise ValueError(f"{num_slots} slots and {prompt_PxL.shape[0]} problems must both split "
                     f"evenly over the mesh's {shards} batch shards {axes}")
  # Any other axis (tensor) spans the shards' collectives: they must step together.
  lockstep = axes if any(size > 1 for name, size in mesh.shape.items()
                         if name not in axes) else ()

  def shard(params, prompt_PxL, prompt_lengths_P, problem_keys_P, num_problems, key,
            *stop_and_prefix):
    index = jax.lax.axis_index(axes)
    real = num_problems // shards + (index < num_problems % shards)  # problem_rows' share
    return generate_samples(graphdef, params, prompt_PxL, prompt_lengths_P, problem_keys_P,
                            real, key, *stop_and_prefix, num_slots=num_slots // shards,
                            lockstep_axes=lockstep, **static)

  split, whole = PartitionSpec(axes), PartitionSpec()
  return jax.shard_map(
      shard, in_specs=(whole, split, split, split, whole, whole) + (whole,) * len(stop_and_prefix),
      out_specs=(split, split), axis_names=set(axes), check_vma=False)(
          params, prompt_PxL, prompt_lengths_P, problem_keys_P, num_problems, key,
          *stop_and_prefix)


def make_sample_fn(graphdef: nnx.GraphDef, cfg: SamplingConfig, eos_id: int, num_samples: int,
                   num_slots: int):
  """The jitted call (recompiles only for new shapes or meshes): trace it under
  jax.set_mesh(mesh) to split it over that mesh."""
  return jax.jit(functools.partial(generate_samples_on_mesh, graphdef, cfg=cfg, eos_id=eos_id,
                                   num_samples=num_samples, num_slots=num_slots))


def sample_prompts(graphdef: nnx.GraphDef, params: Any, prompts: list[list[int]],
                   cfg: SamplingConfig, *, eos_id: int, stop_tables: tuple[Any, Any],
                   key: jax.Array | None = None, num_samples: int = 1, num_slots: int = 0
                   ) -> list[list[list[int]]]:
  """Each prompt's num_samples samples (token ids, up to and including their stop), in one
  call on the default device, num_slots slots (0: one per sample): the engine for a script
  or a check (evaluation/call_schedule.py plans the calls of an evaluation)."""
  tokens, lengths = right_pad(prompts, bucket_length(max(map(len, prompts)),
                                                          minimum=kv_pages.PAGE))
  sample = make_sample_fn(graphdef, cfg, eos_id, num_samples,
                          num_slots or len(prompts) * num_samples)
  out, out_lengths = sample(params, tokens, lengths, np.arange(len(prompts), dtype=np.int32),
                            np.int32(len(prompts)),
                            jax.random.key(0) if key is None else key, *stop_tables, None)
  out, out_lengths = np.asarray(out), np.asarray(out_lengths)
  return [[list(out[p, i, :out_lengths[p, i]]) for i in range(num_samples)]
          for p in range(len(prompts))]
