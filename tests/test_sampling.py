"""Drawing tokens (decode/token_choice.py) and the engine's greedy and stopping behaviour
(decode/engine.py sample_prompts) on models whose output is known."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from decode.engine import sample_prompts
from decode.stop_matcher import build_stop_table
from decode.token_choice import SamplingConfig, choose_tokens_by_uniforms
from model.config import ModelConfig
from model.decoder import Decoder, forward

CFG = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, d_ff=64)


def _model(cfg=CFG, seed=0):
  graphdef, state = nnx.split(Decoder(cfg, nnx.Rngs(seed)))
  return graphdef, nnx.to_pure_dict(state)


def _no_stop(vocab):
  return build_stop_table([""] * vocab, "[DONE]")


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
  out = sample_prompts(graphdef, params, prompts, SamplingConfig(max_new_tokens=7,
                                                                   temperature=0.0),
                       eos_id=0, stop_tables=_no_stop(16))
  assert [list(r[0][:6]) for r in out] == [p[:6] for p in prompts]


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
  out = sample_prompts(graphdef, params, [[3, 4, 5], [9], [11]],
                       SamplingConfig(max_new_tokens=6, temperature=0.0), eos_id=1,
                       stop_tables=build_stop_table(texts, "[DONE]"))
  # A sample ends with the token that completes the stop, EOS included.
  assert out == [[[7, 8]], [[10, 1]], [[12, 11, 12, 11, 12, 11]]]


def _draw(logits_BxV, seed, cfg):
  u_B = jax.random.uniform(jax.random.key(seed), (logits_BxV.shape[0],))
  return choose_tokens_by_uniforms(logits_BxV, u_B, cfg)


def test_top_k_and_top_p_only_sample_allowed_tokens():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 2000))
  for cfg, allowed in [(SamplingConfig(temperature=1.0, top_k=2), {0, 1}),
                       (SamplingConfig(temperature=1.0, top_p=0.7), {0, 1}),
                       (SamplingConfig(temperature=1.0, top_p=0.9), {0, 1, 2})]:
    picked = set(np.asarray(_draw(logits, 0, cfg)).tolist())
    assert picked == allowed, cfg


def test_sampled_frequencies_follow_the_tempered_distribution():
  # 20k draws of one row: each token's share is within 4 standard errors of softmax(l / T).
  probs = np.asarray([0.5, 0.3, 0.15, 0.05, 0.0])
  logits = jnp.log(jnp.asarray([probs] * 20_000))
  for temperature in (1.0, 0.5):
    picked = np.asarray(_draw(logits, 1, SamplingConfig(temperature=temperature)))
    tempered = probs ** (1 / temperature) / np.sum(probs ** (1 / temperature))
    share = np.bincount(picked, minlength=5) / len(picked)
    stderr = np.sqrt(tempered * (1 - tempered) / len(picked))
    assert np.all(np.abs(share - tempered) <= 4 * stderr + 1e-12), (temperature, share)
    assert share[4] == 0  # a token of zero probability is never drawn


def test_two_level_draw_equals_the_flat_inverse_cdf():
  # The draw scans blocks of the vocabulary, then one block: the token must be the one a
  # single cumulative sum over the whole vocabulary picks, also where a third of the
  # entries are cut (-inf) and where the vocabulary is not a multiple of the block.
  from decode.token_choice import _inverse_cdf_sample  # pylint: disable=g-import-not-at-top
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
