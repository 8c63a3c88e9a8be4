"""Cached sampling: parity with the full forward pass, greedy copy, meshes, seeds, stopping."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model.config import ModelConfig
from model.decoder import Decoder, decode_step, forward, init_cache
from model.sampling import SamplingConfig, choose_tokens, left_pad, make_generate_fn
from model.stop_matcher import build_stop_table

CFG = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, d_ff=64)


def _model(cfg=CFG, seed=0):
  graphdef, state = nnx.split(Decoder(cfg, nnx.Rngs(seed)))
  return graphdef, nnx.to_pure_dict(state)


def _no_stop(vocab):
  return build_stop_table([""] * vocab, "[DONE]")


# Decoding has one attention core for every kernel set, but the MLP and LM head come from the
# configured set: both must give the full forward pass's logits.
@pytest.mark.parametrize("kernels", ["cpu", "xla"])
def test_cached_decoding_gives_full_forward_logits(kernels):
  cfg = CFG.replace(kernels=kernels)
  graphdef, params = _model(cfg)
  model = nnx.merge(graphdef, params)
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(1, 64, 5)), list(rng.integers(1, 64, 9))]
  continuation = rng.integers(1, 64, (2, 4)).astype(np.int32)
  tokens, lengths = left_pad(prompts, 12)
  total = 12 + 4
  kv_valid = (np.arange(total)[None] >= (12 - lengths)[:, None]) & (np.arange(total) < 12)
  positions = np.maximum(np.arange(12)[None] - (12 - lengths)[:, None], 0)
  cache = init_cache(cfg, 2, total)
  logits, cache = decode_step(model, jnp.asarray(tokens), jnp.asarray(positions),
                              jnp.asarray(kv_valid), cache, 0)
  step_logits = []
  for t in range(4):
    kv_valid[:, 12 + t] = True
    out, cache = decode_step(model, jnp.asarray(continuation[:, t:t + 1]),
                             jnp.asarray((lengths + t)[:, None]), jnp.asarray(kv_valid), cache,
                             12 + t)
    step_logits.append(np.asarray(out[:, 0]))
  for row, prompt in enumerate(prompts):
    full = np.asarray(forward(graphdef, params, jnp.asarray(
        [list(prompt) + list(continuation[row])])))[0]
    np.testing.assert_allclose(np.asarray(logits[row, -1]), full[len(prompt) - 1], atol=1e-5)
    for t in range(4):
      np.testing.assert_allclose(step_logits[t][row], full[len(prompt) + t], atol=1e-5)


def _train_copy_model(steps=400):
  """A tiny model trained to repeat its prompt: x1..x6 SEP x1..x6."""
  import optax  # pylint: disable=g-import-not-at-top
  cfg = CFG.replace(vocab_size=16, d_model=64, head_dim=16, d_ff=128)
  graphdef, params = _model(cfg, seed=1)
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)
  rng = np.random.default_rng(0)

  @jax.jit
  def step(params, opt_state, tokens):
    def loss(p):
      logits = forward(graphdef, p, tokens[:, :-1])[:, 7:]
      return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 8:]).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  for _ in range(steps):
    x = rng.integers(2, 16, (32, 6))
    tokens = np.concatenate([x, np.ones((32, 1), int), x, np.ones((32, 1), int)], 1)
    params, opt_state = step(params, opt_state, jnp.asarray(tokens, jnp.int32))
  return cfg, graphdef, params


@pytest.mark.slow
def test_greedy_decoding_of_a_copy_model_returns_the_copy():
  cfg, graphdef, params = _train_copy_model()
  rng = np.random.default_rng(5)
  prompts = [list(rng.integers(2, 16, 6)) + [1] for _ in range(8)]
  tokens, lengths = left_pad(prompts, 8)
  generate = make_generate_fn(graphdef, SamplingConfig(max_new_tokens=7, temperature=0.0),
                              eos_id=0)
  out, out_lengths = generate(params, jnp.asarray(tokens), jnp.asarray(lengths),
                              jax.random.key(0), *map(jnp.asarray, _no_stop(16)))
  out = np.asarray(out)
  assert [list(r[:6]) for r in out] == [p[:6] for p in prompts]


def _next_token_model(next_token: dict[int, int]):
  """A decoder whose greedy next token is `next_token[current token]`, whatever came before.

  Attention outputs and MLP outputs are zeroed, so the residual stream is the current
  token's embedding; each used token embeds as its own basis vector, and the (untied) head
  maps that direction to the chosen next token.
  """
  cfg = CFG.replace(tie_embeddings=False)
  graphdef, params = _model(cfg)
  params = jax.tree.map(np.zeros_like, params)
  for norm in ("attn_norm", "mlp_norm"):  # [layers, D]: every layer's scales
    params["blocks"][norm]["scale"] = np.ones_like(params["blocks"][norm]["scale"])
  params["final_norm"]["scale"] = np.ones_like(params["final_norm"]["scale"])
  for dim, (token, following) in enumerate(sorted(next_token.items())):
    params["embed_VxD"][token, dim] = 1.0
    params["head_DxV"][dim, following] = 10.0
  return graphdef, params


def test_stop_string_and_eos_end_rows_on_device():
  texts = [""] * 64
  texts[7], texts[8] = "[DO", "NE]"
  # Row 0 writes "[DO" "NE]" (the stop string, over two tokens), row 1 writes EOS (1) after
  # one token, row 2 cycles 11 -> 12 -> 11 ... and runs to the length limit.
  graphdef, params = _next_token_model({5: 7, 7: 8, 8: 9, 9: 10, 10: 1, 1: 2, 11: 12, 12: 11})
  tokens, lengths = left_pad([[3, 4, 5], [9], [11]], 4)
  generate = make_generate_fn(graphdef, SamplingConfig(max_new_tokens=6, temperature=0.0),
                              eos_id=1)
  out, out_len = generate(params, jnp.asarray(tokens), jnp.asarray(lengths), jax.random.key(0),
                          *map(jnp.asarray, build_stop_table(texts, "[DONE]")))
  # A row's length counts its tokens up to and including the stop; the rest is padding (0).
  np.testing.assert_array_equal(np.asarray(out_len), [2, 2, 6])
  np.testing.assert_array_equal(np.asarray(out), [[7, 8, 0, 0, 0, 0], [10, 1, 0, 0, 0, 0],
                                                  [12, 11, 12, 11, 12, 11]])


def test_seed_reproduces_samples_and_different_seeds_differ():
  graphdef, params = _model()
  tokens, lengths = left_pad([[3, 4, 5], [9, 10], [11]], 4)
  generate = make_generate_fn(graphdef, SamplingConfig(max_new_tokens=12, temperature=1.0),
                              eos_id=-1)
  args = (jnp.asarray(tokens), jnp.asarray(lengths))
  stop = tuple(map(jnp.asarray, _no_stop(64)))
  a = np.asarray(generate(params, *args, jax.random.key(1), *stop)[0])
  b = np.asarray(generate(params, *args, jax.random.key(1), *stop)[0])
  c = np.asarray(generate(params, *args, jax.random.key(2), *stop)[0])
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()


def test_greedy_tokens_equal_on_one_and_eight_devices():
  from model.sharding import batch_sharding, make_mesh  # pylint: disable=g-import-not-at-top
  graphdef, params = _model()
  rng = np.random.default_rng(3)
  tokens, lengths = left_pad([list(rng.integers(2, 64, n)) for n in (3, 8, 5, 1, 7, 2, 6, 4)],
                             8)
  generate = make_generate_fn(graphdef, SamplingConfig(max_new_tokens=10, temperature=0.0),
                              eos_id=-1)
  stop = tuple(map(jnp.asarray, _no_stop(64)))
  single = np.asarray(generate(params, jnp.asarray(tokens), jnp.asarray(lengths),
                               jax.random.key(0), *stop)[0])
  mesh = make_mesh(4, 1, 2)
  with jax.set_mesh(mesh):
    sharded = generate(params, jax.device_put(tokens, batch_sharding(mesh)),
                       jax.device_put(lengths, batch_sharding(mesh, 1)), jax.random.key(0),
                       *stop)[0]
  np.testing.assert_array_equal(np.asarray(sharded), single)


def test_top_k_and_top_p_only_sample_allowed_tokens():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 2000))
  for cfg, allowed in [(SamplingConfig(temperature=1.0, top_k=2), {0, 1}),
                       (SamplingConfig(temperature=1.0, top_p=0.7), {0, 1}),
                       (SamplingConfig(temperature=1.0, top_p=0.9), {0, 1, 2})]:
    picked = set(np.asarray(choose_tokens(logits, jax.random.key(0), cfg)).tolist())
    assert picked == allowed, cfg


def test_sampled_frequencies_follow_the_tempered_distribution():
  # 20k draws of one row: each token's share is within 4 standard errors of softmax(l / T).
  probs = np.asarray([0.5, 0.3, 0.15, 0.05, 0.0])
  logits = jnp.log(jnp.asarray([probs] * 20_000))
  for temperature in (1.0, 0.5):
    picked = np.asarray(choose_tokens(logits, jax.random.key(1),
                                      SamplingConfig(temperature=temperature)))
    tempered = probs ** (1 / temperature) / np.sum(probs ** (1 / temperature))
    share = np.bincount(picked, minlength=5) / len(picked)
    stderr = np.sqrt(tempered * (1 - tempered) / len(picked))
    assert np.all(np.abs(share - tempered) <= 4 * stderr + 1e-12), (temperature, share)
    assert share[4] == 0  # a token of zero probability is never drawn


def test_two_level_draw_equals_the_flat_inverse_cdf():
  # The draw scans blocks of the vocabulary, then one block: the token must be the one a
  # single cumulative sum over the whole vocabulary picks, also where a third of the
  # entries are cut (-inf) and where the vocabulary is not a multiple of the block.
  from model.sampling import _inverse_cdf_sample  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for vocab in (5, 130, 8192):
    logits = rng.normal(size=(300, vocab)).astype(np.float32) * 3
    logits[:, ::3] = -np.inf
    u = 1 - rng.uniform(size=(300, 1)).astype(np.float32)
    mass = np.exp(logits - logits.max(-1, keepdims=True)).astype(np.float64)
    cumulative = np.cumsum(mass, -1)
    flat = np.sum(cumulative < u * cumulative[:, -1:], -1)
    drawn = np.asarray(jax.jit(_inverse_cdf_sample)(jnp.asarray(logits), jnp.asarray(u)))
    assert np.isfinite(logits[np.arange(300), drawn]).all()
    np.testing.assert_array_equal(drawn, flat, err_msg=str(vocab))
