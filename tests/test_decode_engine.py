"""The decode engine (decode/): paged prefill and decode steps give the full forward pass's
logits, and refilled slots draw exactly the samples of the plain one-sample-at-a-time
algorithm, on one device and split over meshes."""
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from decode import engine, kv_pages
from decode.engine import loop_shards, make_sample_fn, problem_rows, sample_keys
from decode.forward import decode_step, prefill
from decode.prompt_rows import right_pad, shared_prefix_length, split_shared_prefix
from decode.stop_matcher import build_stop_table
from decode.token_choice import SamplingConfig, choose_tokens_by_uniforms, draw_uniforms
from model.config import ModelConfig
from model.decoder import Decoder, forward
from model.sharding import make_mesh

CFG = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, d_ff=64)


@pytest.fixture(autouse=True)
def _small_pages(monkeypatch):
  """Pages of 4 positions: the tests' prompts and samples span several."""
  monkeypatch.setattr(kv_pages, "PAGE", 4)


def _model(cfg=CFG, seed=0):
  graphdef, state = nnx.split(Decoder(cfg, nnx.Rngs(seed)))
  return graphdef, nnx.to_pure_dict(state)


def test_page_tables_point_at_the_prefix_the_prompt_and_the_slots_own_pages():
  layout = kv_pages.PageLayout.of(prefix_len=8, prompt_len=12, problems=2, slots=3,
                                  max_new_tokens=5)
  # 2 prefix pages, 3 per prompt, 2 own per slot (a sample starts up to 3 positions into
  # its prompt's last page): Q = 2 + 2 * 3 + 3 * 2 = 14 pages, tables of 2 + 3 + 2.
  assert (layout.pages_per_layer, layout.table_width) == (14, 7)
  tables = kv_pages.page_tables(layout, jnp.array([1, 0, 1]), jnp.array([9, 4, 12]))
  assert tables.tolist() == [
      [0, 1, 5, 6, 8, 9, 9],           # problem 1: 2 whole pages, then slot 0's from 8
      [0, 1, 2, 10, 11, 11, 11],       # problem 0: 1 whole page, then slot 1's from 10
      [0, 1, 5, 6, 7, 12, 13]]         # problem 1 filling its 3 pages, then slot 2's


@pytest.mark.parametrize("kernels", ["cpu", "xla"])
@pytest.mark.parametrize("shared", [0, 8])
def test_paged_decoding_gives_full_forward_logits(kernels, shared):
  cfg = CFG.replace(kernels=kernels)
  graphdef, params = _model(cfg)
  model = nnx.merge(graphdef, params)
  rng = np.random.default_rng(0)
  start = list(rng.integers(1, 64, shared))
  suffixes = [list(rng.integers(1, 64, 5)), list(rng.integers(1, 64, 9))]
  tokens, lengths = right_pad(suffixes, 12)
  steps, problem_S = 6, np.array([0, 1, 1, 0])
  layout = kv_pages.PageLayout.of(prefix_len=shared, prompt_len=12, problems=2, slots=4,
                                  max_new_tokens=steps)

  @jax.jit
  def prefill_all():
    pool = kv_pages.init_pool(cfg, layout)
    if shared:
      _, pool = prefill(model, jnp.asarray([start], jnp.int32), 0, pool, layout, 0, False)
    x, pool = prefill(model, jnp.asarray(tokens), shared, pool, layout, layout.prefix_pages,
                      bool(shared))
    return model.logits(x), pool

  prefill_logits, pool = prefill_all()
  pool = kv_pages.copy_prompt_tails(pool, layout, cfg.num_layers, jnp.ones(4, bool),
                                    jnp.asarray(problem_S), jnp.asarray(lengths)[problem_S], 4)
  table = kv_pages.page_tables(layout, jnp.asarray(problem_S), jnp.asarray(lengths)[problem_S])
  continuation_SxT = rng.integers(1, 64, (4, steps)).astype(np.int32)
  step = jax.jit(functools.partial(decode_step, model, layout=layout))
  step_logits = []
  for t in range(steps):
    logits, pool = step(jnp.asarray(continuation_SxT[:, t]),
                        jnp.asarray(shared + lengths[problem_S] + t), table, pool)
    step_logits.append(np.asarray(logits))
  for s, p in enumerate(problem_S):
    row = start + suffixes[p] + list(continuation_SxT[s])
    full = np.asarray(forward(graphdef, params, jnp.asarray([row])))[0]
    np.testing.assert_allclose(np.asarray(prefill_logits)[p, lengths[p] - 1],
                               full[shared + lengths[p] - 1], atol=2e-5)
    for t in range(steps):
      np.testing.assert_allclose(step_logits[t][s], full[shared + lengths[p] + t], atol=2e-5)


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
        token = int(choose_tokens_by_uniforms(logits, draw_uniforms(keys), cfg)[0])
        generated.append(token)
        if token == eos_id or stop_completes[state, token]:
          break
        state = stop_next[state, token]
      samples.append(generated)
  return samples


_sample_fn = functools.lru_cache(make_sample_fn)  # one compile per shape across the tests


def _run(graphdef, params, prompts, problem_keys, num_samples, cfg, eos_id, stop, key,
         num_slots, pad_problems=0, prefix_multiple=0):
  """The engine's samples; with prefix_multiple, the prompts' shared start (to a multiple of
  it) goes in as the shared prefix, as evaluation/sampler.py passes it."""
  prefix, rests = (split_shared_prefix(prompts, prefix_multiple) if prefix_multiple
                   else (None, prompts))
  # Each loop shard's rows start with its share of the problems (decode/engine.py).
  num_rows = len(prompts) + pad_problems
  rows = problem_rows(len(prompts), num_rows, loop_shards(jax.sharding.get_abstract_mesh()))
  placed, keys = [[0]] * num_rows, np.zeros((num_rows,), np.int32)
  for row, rest, problem_key in zip(rows, rests, problem_keys):
    placed[row], keys[row] = rest, problem_key
  tokens, lengths = right_pad(placed, 16)
  sample = _sample_fn(graphdef, cfg, eos_id, num_samples, num_slots)
  out, out_lengths = sample(params, jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(keys),
                            jnp.int32(len(prompts)), key, *map(jnp.asarray, stop), prefix)
  out, out_lengths = np.asarray(out), np.asarray(out_lengths)
  assert (np.delete(out_lengths, rows, axis=0) == 0).all()  # padding problems: no samples
  return [list(out[p, i, :out_lengths[p, i]]) for p in rows for i in range(num_samples)]


@functools.lru_cache(maxsize=None)
def _refill_case():
  """3 problems x 4 samples that stop at different lengths, and the plain algorithm's
  samples: (graphdef, params, prompts, problem_keys, cfg, stop, key, plain)."""
  graphdef, params = _model()
  rng = np.random.default_rng(1)
  prompts = [list(rng.integers(2, 64, n)) for n in (3, 7, 8)]
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
  # 12 samples through 3 slots (refilled 9 times), through 5 slots with a padding problem,
  # and through more slots than samples: the plain algorithm's samples every time. Prompts
  # of 3, 7 and 8 tokens in pages of 4: samples continue a partly filled prompt page, or
  # (8 tokens) start a page of their own.
  for num_slots, pad in ((3, 0), (5, 1), (16, 1)):
    assert _run(graphdef, params, prompts, problem_keys, 4, cfg, 1, stop, key, num_slots,
                pad) == plain, num_slots


def test_slots_left_waiting_by_the_refill_limit_draw_the_same_samples(monkeypatch):
  # One slot a step may take a sample: slots freed together wait their turn, and set up
  # their pages (the partly filled prompt page copied) one at a time.
  monkeypatch.setattr(engine, "REFILLS_PER_STEP", 1)
  monkeypatch.setattr(sys.modules[__name__], "_sample_fn", functools.lru_cache(make_sample_fn))
  graphdef, params, prompts, problem_keys, cfg, stop, key, plain = _refill_case()
  assert _run(graphdef, params, prompts, problem_keys, 4, cfg, 1, stop, key, 5, 1) == plain


def test_a_shared_prefix_draws_the_samples_of_the_plain_algorithm():
  graphdef, params = _model()
  rng = np.random.default_rng(4)
  start = list(rng.integers(2, 64, 9))  # a few-shot template's common start
  prompts = [start + list(rng.integers(2, 64, n)) for n in (2, 5, 1, 4)]
  assert shared_prefix_length(prompts, 4) == 8
  problem_keys = [2, 7, 1, 8]
  cfg = SamplingConfig(max_new_tokens=5, temperature=1.0)
  stop = _stop_tables(64, range(40, 60))
  key = jax.random.key(6)
  plain = _plain_samples(graphdef, params, prompts, problem_keys, 2, cfg, 1, stop, key)
  assert len({len(s) for s in plain}) >= 2
  # The first 8 shared tokens (two pages) held once, every prompt's page table starting
  # with them; 3 slots and 8.
  for num_slots in (3, 8):
    assert _run(graphdef, params, prompts, problem_keys, 2, cfg, 1, stop, key, num_slots,
                prefix_multiple=4) == plain, num_slots


def test_greedy_samples_equal_on_one_and_eight_devices():
  graphdef, params = _model()
  rng = np.random.default_rng(3)
  start = list(rng.integers(2, 64, 4))
  prompts = [start + list(rng.integers(2, 64, n)) for n in (3, 8, 5)]
  cfg = SamplingConfig(max_new_tokens=10, temperature=0.0)
  stop = _stop_tables(64, [50])
  args = (graphdef, params, prompts, [0, 1, 2], 4, cfg, 1, stop, jax.random.key(0), 8, 5)
  # Each prompt whole, and the shared start held once; split over 4 x 2 batch shards with
  # one loop each, and over 4 data shards stepping together around 2-way tensor parallelism.
  for prefix_multiple in (0, 4):
    single = _run(*args, prefix_multiple=prefix_multiple)
    for mesh in (make_mesh(4, 2, 1), make_mesh(4, 1, 2)):
      with jax.set_mesh(mesh):
        assert _run(*args, prefix_multiple=prefix_multiple) == single, (prefix_multiple, mesh)


def test_each_batch_shard_runs_its_own_loop_and_draws_the_plain_samples():
  graphdef, params, prompts, problem_keys, cfg, stop, key, plain = _refill_case()
  # 8 shards, one problem each (five padding problems: those shards sample nothing), 1 slot
  # each (refilled), each shard's loop as long as its own samples (no collective in its
  # condition); with tensor parallelism inside, the shards step together: the same samples.
  for mesh, lockstep in ((make_mesh(8, 1, 1), False), (make_mesh(2, 4, 1), False),
                         (make_mesh(4, 1, 2), True)):
    with jax.set_mesh(mesh):
      jaxpr = str(jax.make_jaxpr(_sample_fn(graphdef, cfg, 1, 4, 8))(
          params, jnp.zeros((8, 16), jnp.int32), jnp.ones((8,), jnp.int32),
          jnp.zeros((8,), jnp.int32), jnp.int32(3), key, *map(jnp.asarray, stop), None))
      assert "shard_map" in jaxpr and ("psum" in jaxpr) == lockstep, mesh
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
