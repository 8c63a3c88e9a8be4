"""Shared-prompt decoding and continuous batching (model/shared_decode.py,
model/slot_sampling.py): parity with the full forward pass and with the plain algorithm."""
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model import page_pool
from model.config import ModelConfig
from model.decoder import Decoder, forward
from model.sampling import (SamplingConfig, choose_tokens_per_row, left_pad,
                            shared_prefix_length, split_shared_prefix)
from model.shared_decode import (decode_slots, init_generated_cache, prefill_prefix,
                                 prefill_prompts, prefix_for_decoding, to_lanes)
from model.slot_sampling import make_sample_fn, sample_keys
from model.stop_matcher import build_stop_table

CFG = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, d_ff=64)


def _model(cfg=CFG, seed=0):
  graphdef, state = nnx.split(Decoder(cfg, nnx.Rngs(seed)))
  return graphdef, nnx.to_pure_dict(state)


# The MLP and LM head come from the configured kernel set, and the kernel set picks how the
# layers run (cpu: unrolled, per-layer caches; xla: one scan): both must match the forward
# pass, with one lane over two problems (a window of 2) and with a lane per problem, and with
# the prompts' shared start held once (a prefix of 6 tokens) or not.
@pytest.mark.parametrize("kernels", ["cpu", "xla"])
@pytest.mark.parametrize("lanes,problem_S,shared", [(1, [0, 1, 1, 0], 0), (2, [0, 0, 1, 1], 0),
                                                    (1, [0, 1, 1, 0], 6), (2, [0, 0, 1, 1], 6)])
def test_shared_prompt_decoding_gives_full_forward_logits(kernels, lanes, problem_S, shared):
  _check_full_forward_logits(kernels, lanes, problem_S, shared)


# Pages of 2 positions: each slot's 4 tokens span 2 pages, 8 pages in all, the last 4 the
# cold part (page_pool.HOT_FRACTION 1/2), which the slots reach in their last 2 steps.
@pytest.mark.parametrize("kernels", ["cpu", "xla"])
def test_tokens_over_many_pages_give_full_forward_logits(kernels, monkeypatch):
  monkeypatch.setattr(page_pool, "PAGE", 2)
  monkeypatch.setattr(page_pool, "HOT_FRACTION", 1 / 2)
  _check_full_forward_logits(kernels, 1, [0, 1, 1, 0], 6)


def _check_full_forward_logits(kernels, lanes, problem_S, shared):
  cfg = CFG.replace(kernels=kernels)
  graphdef, params = _model(cfg)
  model = nnx.merge(graphdef, params)
  rng = np.random.default_rng(0)
  start = list(rng.integers(1, 64, shared))
  suffixes = [list(rng.integers(1, 64, 5)), list(rng.integers(1, 64, 9))]
  prompts = [start + s for s in suffixes]
  tokens, lengths = left_pad(suffixes, 12)
  prefix = None
  if shared:
    prefix = jax.jit(functools.partial(prefill_prefix, model))(jnp.asarray(start, jnp.int32))
    assert {x.shape[-4:] for x in jax.tree.leaves(prefix)} == {(1, 2, shared, 8)}  # once
  first_PxV, prompt, valid = jax.jit(functools.partial(prefill_prompts, model))(
      jnp.asarray(tokens), jnp.asarray(lengths), prefix=prefix)
  # Once per problem, the shared start left out: [problems, K, L, H] per layer.
  assert {x.shape[-4:] for x in jax.tree.leaves(prompt)} == {(2, 2, 12, 8)}
  prompt = to_lanes(model, prompt, lanes)
  if shared:
    prefix = prefix_for_decoding(model, prefix)
  lengths = lengths + shared
  window = 2 // lanes
  problem_S = np.array(problem_S)
  offset_S = problem_S % window
  step = jax.jit(functools.partial(decode_slots, model, window=window))
  steps = 4
  continuation_SxN = rng.integers(1, 64, (4, steps)).astype(np.int32)
  generated = init_generated_cache(model, 4, steps)
  pages = page_pool.init_pages(4, steps)
  step_logits = []
  for t in range(steps):
    pages = page_pool.take_pages(pages, jnp.ones((4,), bool), jnp.full((4,), t))
    logits, generated = step(
        jnp.asarray(continuation_SxN[:, t]), jnp.asarray(lengths[problem_S] + t), prompt,
        window_start_J=jnp.zeros((lanes,), jnp.int32), prompt_valid_SxL=valid[problem_S],
        window_offset_S=jnp.asarray(offset_S), generated=generated, pages=pages,
        generated_len_S=jnp.full((4,), t), prefix=prefix)
    step_logits.append(np.asarray(logits))
  full_forward = jax.jit(functools.partial(forward, graphdef))
  for slot, problem in enumerate(problem_S):
    prompt_tokens = prompts[problem]
    full = np.asarray(full_forward(params, jnp.asarray(
        [list(prompt_tokens) + list(continuation_SxN[slot])])))[0]
    np.testing.assert_allclose(np.asarray(first_PxV[problem]), full[len(prompt_tokens) - 1],
                               atol=1e-5)
    for t in range(steps):
      np.testing.assert_allclose(step_logits[t][slot], full[len(prompt_tokens) + t], atol=1e-5)


def _stop_tables(vocab, stop_tokens):
  texts = [""] * vocab
  for token in stop_tokens:
    texts[token] = "[DONE]"
  return build_stop_table(texts, "[DONE]")


def _plain_samples(graphdef, params, prompts, problem_keys, num_samples, cfg, eos_id, stop,
                   key):
  """The plain algorithm, without any cache: each sample alone, every token from the full
  forward pass of prompt + its generated tokens, drawn with the sample's own key."""
  stop_next, stop_completes = stop
  # Right padding to one length (one compile): causal logits before it do not change.
  logits_at = jax.jit(lambda p, tokens, n: forward(graphdef, p, tokens)[:, n - 1])
  length = max(map(len, prompts)) + cfg.max_new_tokens
  samples = []
  for prompt, problem_key in zip(prompts, problem_keys):
    for index in range(num_samples):
      generated, state = [], 0
      for t in range(cfg.max_new_tokens):
        row = prompt + generated
        logits = logits_at(params, jnp.asarray([row + [0] * (length - len(row))]), len(row))
        keys = sample_keys(key, jnp.asarray([problem_key]), jnp.asarray([index]),
                           jnp.asarray([t]))
        token = int(choose_tokens_per_row(logits, keys, cfg)[0])
        generated.append(token)
        if token == eos_id or stop_completes[state, token]:
          break
        state = stop_next[state, token]
      samples.append(generated)
  return samples


_sample_fn = functools.lru_cache(make_sample_fn)  # one compile per shape across the tests


def _run(graphdef, params, prompts, problem_keys, num_samples, cfg, eos_id, stop, key,
         num_slots, pad_problems=0, prefix_multiple=0):
  """The slot sampler's samples; with prefix_multiple, the prompts' shared start (to a
  multiple of it) goes in as the shared prefix, as evaluation/sampler.py passes it."""
  prefix, rests = (split_shared_prefix(prompts, prefix_multiple) if prefix_multiple
                   else (None, prompts))
  tokens, lengths = left_pad(rests + [[]] * pad_problems, 16)
  keys = np.asarray(list(problem_keys) + [0] * pad_problems, np.int32)
  sample = _sample_fn(graphdef, cfg, eos_id, num_samples, num_slots)
  out, out_lengths = sample(params, jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(keys),
                            jnp.int32(len(prompts)), key, *map(jnp.asarray, stop), prefix)
  out, out_lengths = np.asarray(out), np.asarray(out_lengths)
  assert (out_lengths[len(prompts):] == 0).all()  # padding problems are not sampled
  return [list(out[p, i, :out_lengths[p, i]]) for p in range(len(prompts))
          for i in range(num_samples)]


@functools.lru_cache(maxsize=None)
def _refill_case():
  """3 problems x 4 samples that stop at different lengths, and the plain algorithm's
  samples: (graphdef, params, prompts, problem_keys, cfg, stop, key, plain)."""
  graphdef, params = _model()
  rng = np.random.default_rng(1)
  prompts = [list(rng.integers(2, 64, n)) for n in (3, 7, 5)]
  problem_keys = [11, 4, 7]
  cfg = SamplingConfig(max_new_tokens=6, temperature=1.0)
  # A third of the vocabulary ends a sample (EOS 1, or a piece that completes the stop
  # string), so samples stop at different lengths and slots are refilled mid-loop.
  stop = _stop_tables(64, range(40, 60))
  key = jax.random.key(3)
  plain = _plain_samples(graphdef, params, prompts, problem_keys, 4, cfg, 1, stop, key)
  return graphdef, params, prompts, problem_keys, cfg, stop, key, plain


def test_refilled_slots_draw_the_samples_of_the_plain_algorithm():
  graphdef, params, prompts, problem_keys, cfg, stop, key, plain = _refill_case()
  lengths = sorted({len(s) for s in plain})
  assert len(lengths) >= 3 and lengths[0] < cfg.max_new_tokens, lengths
  # 12 samples through 3 slots (refilled 9 times) and through 5 slots with a padding
  # problem: the same samples as the plain algorithm both times.
  for num_slots, pad in ((3, 0), (5, 1)):
    assert _run(graphdef, params, prompts, problem_keys, 4, cfg, 1, stop, key, num_slots,
                pad) == plain, num_slots


def test_page_pool_takes_the_lowest_free_pages_and_frees_stopped_samples():
  pages = page_pool.init_pages(3, 64)  # 2 pages a slot of 32 positions: 6 pages, one group
  owner = lambda: pages.owner_GxP[0].tolist()
  pages = page_pool.take_pages(pages, jnp.array([True, False, True]), jnp.array([0, 0, 0]))
  assert owner() == [0, 2, 3, 3, 3, 3] and pages.current_GxS[0].tolist() == [0, 6, 1]
  # Slot 1 starts, slot 2 enters its second block (position 32), slot 0 is mid-block.
  pages = page_pool.take_pages(pages, jnp.array([True, True, True]), jnp.array([5, 0, 32]))
  assert owner() == [0, 2, 1, 2, 3, 3] and pages.block_GxP[0].tolist()[:4] == [0, 0, 0, 1]
  assert not page_pool.cold_needed(pages)  # hot part: the first ceil(6 * 9 / 16) = 4 pages
  # Slot 2's sample stops: both its pages are free, and the next block takes page 1 first.
  pages = page_pool.release_pages(pages, jnp.array([False, False, True]))
  assert owner() == [0, 3, 1, 3, 3, 3] and pages.current_GxS[0].tolist()[2] == 6
  pages = page_pool.take_pages(pages, jnp.array([True, True, True]), jnp.array([32, 7, 0]))
  assert owner() == [0, 0, 1, 2, 3, 3] and pages.current_GxS[0].tolist() == [1, 2, 3]
  # Slot 1 enters its second block: the first free page is past the hot part.
  pages = page_pool.take_pages(pages, jnp.array([True, True, True]), jnp.array([40, 32, 1]))
  assert owner() == [0, 0, 1, 2, 1, 3] and page_pool.cold_needed(pages)


def test_small_pages_draw_the_samples_of_the_plain_algorithm(monkeypatch):
  # Pages of 2 positions: samples of up to 6 tokens span up to 3 pages, taken and given back
  # as samples stop and slots refill, with the cold part (past 5 of the 9 pages) in use.
  monkeypatch.setattr(page_pool, "PAGE", 2)
  monkeypatch.setattr(page_pool, "HOT_FRACTION", 1 / 2)
  monkeypatch.setattr(sys.modules[__name__], "_sample_fn", functools.lru_cache(make_sample_fn))
  graphdef, params, prompts, problem_keys, cfg, stop, key, plain = _refill_case()
  assert _run(graphdef, params, prompts, problem_keys, 4, cfg, 1, stop, key, 3) == plain


def test_lanes_draw_the_samples_of_the_plain_algorithm():
  graphdef, params = _model()
  rng = np.random.default_rng(2)
  prompts = [list(rng.integers(2, 64, n)) for n in (4, 2, 6, 3, 5)]
  problem_keys = [3, 1, 4, 1, 5]
  cfg = SamplingConfig(max_new_tokens=5, temperature=1.0)
  stop = _stop_tables(64, range(40, 60))
  key = jax.random.key(5)
  plain = _plain_samples(graphdef, params, prompts, problem_keys, 2, cfg, 1, stop, key)
  assert len({len(s) for s in plain}) >= 2
  # 4 slots: 2 lanes of 2 slots over 3 problems each (the last one padding), each lane's
  # window 2 of its 3 problems (a gather per lane); 6 slots: 3 lanes over 2 problems each.
  for num_slots in (4, 6):
    assert _run(graphdef, params, prompts, problem_keys, 2, cfg, 1, stop, key,
                num_slots) == plain, num_slots


def test_a_shared_prefix_draws_the_samples_of_the_plain_algorithm():
  graphdef, params = _model()
  rng = np.random.default_rng(4)
  start = list(rng.integers(2, 64, 9))  # a few-shot template's common start
  prompts = [start + list(rng.integers(2, 64, n)) for n in (2, 5, 1, 4)]
  assert shared_prefix_length(prompts, 4) == 8 and shared_prefix_length(prompts, 1) == 9
  problem_keys = [2, 7, 1, 8]
  cfg = SamplingConfig(max_new_tokens=5, temperature=1.0)
  stop = _stop_tables(64, range(40, 60))
  key = jax.random.key(6)
  plain = _plain_samples(graphdef, params, prompts, problem_keys, 2, cfg, 1, stop, key)
  assert len({len(s) for s in plain}) >= 2
  # The first 8 or all 9 shared tokens held once; one lane (3 slots) and two lanes (4).
  for num_slots, multiple in ((3, 4), (4, 1)):
    assert _run(graphdef, params, prompts, problem_keys, 2, cfg, 1, stop, key, num_slots,
                prefix_multiple=multiple) == plain, num_slots


def test_greedy_samples_equal_on_one_and_eight_devices():
  from model.sharding import make_mesh  # pylint: disable=g-import-not-at-top
  graphdef, params = _model()
  rng = np.random.default_rng(3)
  start = list(rng.integers(2, 64, 4))
  prompts = [start + list(rng.integers(2, 64, n)) for n in (3, 8, 5)]
  cfg = SamplingConfig(max_new_tokens=10, temperature=0.0)
  stop = _stop_tables(64, [50])
  args = (graphdef, params, prompts, [0, 1, 2], 4, cfg, 1, stop, jax.random.key(0), 8, 1)
  # Each prompt whole, and the shared start held once (replicated over the mesh).
  for prefix_multiple in (0, 4):
    single = _run(*args, prefix_multiple=prefix_multiple)
    with jax.set_mesh(make_mesh(4, 1, 2)):
      sharded = _run(*args, prefix_multiple=prefix_multiple)
    assert sharded == single, prefix_multiple


def test_each_data_shard_runs_its_own_loop_and_draws_the_plain_samples():
  from model.sharding import make_mesh  # pylint: disable=g-import-not-at-top
  graphdef, params, prompts, problem_keys, cfg, stop, key, plain = _refill_case()
  # 8 data shards, one problem each (five padding problems: those shards sample nothing),
  # 1 slot each (refilled), each shard's loop as long as its own samples. With fsdp or
  # tensor > 1 the whole mesh runs one partitioned loop instead (model/sharding.py
  # data_shards): the same samples.
  for mesh, per_shard in ((make_mesh(8, 1, 1), True), (make_mesh(4, 1, 2), False)):
    with jax.set_mesh(mesh):
      jaxpr = str(jax.make_jaxpr(_sample_fn(graphdef, cfg, 1, 4, 8))(
          params, jnp.zeros((8, 16), jnp.int32), jnp.ones((8,), jnp.int32),
          jnp.zeros((8,), jnp.int32), jnp.int32(3), key, *map(jnp.asarray, stop), None))
      assert ("shard_map" in jaxpr) == per_shard
      assert _run(graphdef, params, prompts, problem_keys, 4, cfg, 1, stop, key, 8, 5) == plain
  # Slots that do not split over the shards are refused.
  with jax.set_mesh(make_mesh(8, 1, 1)), pytest.raises(ValueError, match="split evenly"):
    _run(graphdef, params, prompts, problem_keys, 4, cfg, 1, stop, key, 12, 5)


def test_samples_depend_on_seed_problem_key_and_index():
  graphdef, params = _model()
  prompts = [[3, 4, 5], [3, 4, 5]]
  cfg = SamplingConfig(max_new_tokens=8, temperature=1.0)
  stop = _stop_tables(64, [])
  run = lambda keys, seed: _run(graphdef, params, prompts, keys, 2, cfg, -1, stop,
                                jax.random.key(seed), 4)
  a = run([5, 6], 0)
  assert a == run([5, 6], 0)
  assert a[0] != a[1] and a[0] != a[2]   # another sample index, another problem key
  assert a[2:] == run([6, 5], 0)[:2]     # the same prompt under key 6: the same samples
  assert a != run([5, 6], 1)
