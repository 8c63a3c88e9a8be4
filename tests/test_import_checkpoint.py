"""Importing Hugging Face Llama/Gemma checkpoints: exact parity with `transformers`.

Tiny random models of each family are built from a config with transformers (PyTorch, CPU;
nothing is downloaded), saved as sharded safetensors (so the index path is exercised), imported
with interop/import_checkpoint.py and compared: logits within 1e-4 in float32, greedy
generations token for token, on one device and sharded over 8, and tokenizers on MBPP prompts.
"""
import functools
import glob
import io
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece as spm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from data.tasks import load_task_examples  # noqa: E402
from interop import hf_export, hf_families  # noqa: E402
from interop.import_checkpoint import import_checkpoint, main  # noqa: E402
from model.decoder import abstract_model, forward  # noqa: E402
from model.rope import RopeScaling, rope_frequencies  # noqa: E402
from decode.engine import sample_prompts  # noqa: E402
from decode.token_choice import SamplingConfig  # noqa: E402
from model.sharding import make_mesh  # noqa: E402
from model import run_dir  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB = 512
# Fixed token ids for the logits comparison (two rows, no padding).
TOKENS = np.random.default_rng(0).integers(3, VOCAB, size=(2, 19))

# Special ids as the public tokenizers have them.
_SPECIALS = {"llama": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True),
             "gemma": dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3, add_dummy_prefix=False)}


@functools.cache
def _train_sentencepiece(family: str) -> bytes:
  """A family-like SentencePiece BPE model trained on this repo's own source (deterministic)."""
  lines = []
  for path in sorted(glob.glob(str(REPO / "model" / "*.py")) +
                     glob.glob(str(REPO / "data" / "*.py"))):
    lines += pathlib.Path(path).read_text().splitlines(keepends=True)
  buffer = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=buffer, vocab_size=VOCAB, model_type="bpe",
      byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
      split_digits=True, input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,
      minloglevel=2, **_SPECIALS[family])
  return buffer.getvalue()


# Scaled RoPE on the tiny Llama (head_dim 16, theta 5e5, wavelengths 6.3, 33, 167, ...): with a
# pretraining context of 64 positions, "llama3" keeps the first frequency, blends the second and
# divides the rest; "yarn"'s ramp spans the first two dims and its attention factor (1.14,
# from transformers' default) scales cos and sin; "linear" divides them all.
_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
}


def _hf_model(family: str, rope_scaling: str | None = None):
  torch.manual_seed(0)
  if family == "llama":
    rope = {"rope_type": "default", "rope_theta": 500_000.0}
    rope.update(_SCALINGS[rope_scaling] if rope_scaling else {})
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_parameters=rope,
        max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        pad_token_id=None)
    model = transformers.LlamaForCausalLM(config)
  else:
    config = transformers.GemmaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-6,
        hidden_act="gelu_pytorch_tanh", bos_token_id=2, eos_token_id=1, pad_token_id=0)
    model = transformers.GemmaForCausalLM(config)
  with torch.no_grad():
    # Non-trivial norm weights and a larger init, so a wrong (1 + w) convention, a dropped
    # sqrt(d) embedding scale or a swapped projection changes the logits visibly.
    for name, param in model.named_parameters():
      if "norm" in name:
        param.copy_(torch.randn_like(param) * 0.3 + (0.0 if family == "gemma" else 1.0))
      else:
        param.copy_(torch.randn_like(param) * 0.15)
  return model.eval()


@pytest.fixture(scope="module", params=["llama", "gemma"])
def hf_checkpoint(request, tmp_path_factory):
  """(family, HF model, saved checkpoint directory)."""
  family = request.param
  directory = tmp_path_factory.mktemp(f"hf_{family}")
  model = _hf_model(family)
  model.save_pretrained(directory, max_shard_size="40KB")
  (directory / "tokenizer.model").write_bytes(_train_sentencepiece(family))
  assert (directory / "model.safetensors.index.json").exists()
  return family, model, str(directory)


def _hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.as_tensor(tokens)).logits.numpy()


def _load(run):
  cfg = run_dir.load_model_config(run)
  graphdef, shapes, _ = abstract_model(cfg)
  return cfg, graphdef, run_dir.load_params(run, shapes)


def test_logits_and_greedy_generation_match_transformers(hf_checkpoint, tmp_path):
  family, model, source = hf_checkpoint
  mesh = make_mesh(devices=jax.devices()[:1])
  metadata = import_checkpoint(source, str(tmp_path), mesh)
  assert metadata["family"] == family and not metadata["warnings"]
  assert sorted(os.listdir(tmp_path)) == ["checkpoints", "import.json", "model_config.json",
                                          "tokenizer.model"]
  cfg, graphdef, params = _load(str(tmp_path))
  assert cfg.tie_embeddings == (family == "gemma")
  ours = np.asarray(forward(graphdef, params, jnp.asarray(TOKENS)))
  np.testing.assert_allclose(ours, _hf_logits(model, TOKENS), atol=1e-4, rtol=0)

  # Greedy, token for token: full forward passes over a fixed-size buffer (no KV cache; causal
  # attention makes the not-yet-written tail irrelevant; one compilation).
  prompt_len, new_tokens = 7, 12
  expected = _hf_greedy(model, TOKENS[:, :prompt_len], new_tokens)
  tokens = np.zeros((2, prompt_len + new_tokens), np.int32)
  tokens[:, :prompt_len] = TOKENS[:, :prompt_len]
  logits_fn = jax.jit(forward, static_argnums=0)
  for t in range(prompt_len, prompt_len + new_tokens):
    tokens[:, t] = np.argmax(np.asarray(logits_fn(graphdef, params, tokens))[:, t - 1], -1)
  np.testing.assert_array_equal(tokens[:, prompt_len:], expected)


def _hf_greedy(model, prompt, new_tokens):
  model.generation_config.eos_token_id = None  # never stop early: compare every token
  with torch.no_grad():
    out = model.generate(torch.as_tensor(prompt), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
  return out.numpy()[:, prompt.shape[1]:]


def _engine_greedy(graphdef, params, cfg, prompt, new_tokens):
  """The decode engine's greedy samples (paged prefill, paged decode steps, one call)."""
  no_stops = (np.zeros((1, cfg.vocab_size), np.int32), np.zeros((1, cfg.vocab_size), bool))
  out = sample_prompts(graphdef, params, [list(row) for row in prompt],
                       SamplingConfig(max_new_tokens=new_tokens, temperature=0.0), eos_id=-1,
                       stop_tables=no_stops)
  return np.asarray([samples[0] for samples in out])


def test_sampler_greedy_matches_transformers_generate(hf_checkpoint, tmp_path):
  """The decode engine against transformers' generate, token for token."""
  _, model, source = hf_checkpoint
  import_checkpoint(source, str(tmp_path), make_mesh(devices=jax.devices()[:1]))
  cfg, graphdef, params = _load(str(tmp_path))
  prompt, new_tokens = TOKENS[:, :7], 12
  got = _engine_greedy(graphdef, params, cfg, prompt, new_tokens)
  assert got.shape == (2, new_tokens)  # no early stop
  np.testing.assert_array_equal(got, _hf_greedy(model, prompt, new_tokens))


def test_sharded_import_matches_and_is_really_sharded(hf_checkpoint, tmp_path):
  family, model, source = hf_checkpoint
  mesh = make_mesh(data=1, fsdp=4, tensor=2)
  main(["--source", source, "--output", str(tmp_path), "--mesh_fsdp", "4",
        "--mesh_tensor", "2"])
  cfg = run_dir.load_model_config(str(tmp_path))
  graphdef, shapes, logical_axes = abstract_model(cfg)
  from model.sharding import param_shardings  # pylint: disable=g-import-not-at-top
  shardings = param_shardings(logical_axes, shapes, mesh)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          shapes, shardings)
  params = run_dir.load_params(str(tmp_path), abstract)
  q = params["blocks"]["attn"]["q_DxNxH"]  # [layers, D, N, H]
  # d_model over fsdp=4 and heads over tensor=2: each device holds an eighth of every layer.
  assert q.addressable_shards[0].data.shape == (cfg.num_layers, 16, 2, q.shape[3])
  assert params["embed_VxD"].addressable_shards[0].data.shape == (VOCAB // 2, 16)
  with jax.set_mesh(mesh):
    ours = np.asarray(jax.jit(forward, static_argnums=0)(graphdef, params, jnp.asarray(TOKENS)))
  np.testing.assert_allclose(ours, _hf_logits(model, TOKENS), atol=1e-4, rtol=0)


def test_export_round_trips_through_transformers(hf_checkpoint, tmp_path):
  family, model, source = hf_checkpoint
  import_checkpoint(source, str(tmp_path / "run"), make_mesh(devices=jax.devices()[:1]))
  hf_export.export_checkpoint(str(tmp_path / "run"), str(tmp_path / "hf"))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
  np.testing.assert_allclose(_hf_logits(reloaded, TOKENS), _hf_logits(model, TOKENS),
                             atol=1e-5, rtol=0)


@pytest.fixture(scope="module", params=sorted(_SCALINGS))
def scaled_checkpoint(request, tmp_path_factory):
  """(scaling kind, HF Llama with that RoPE scaling, saved checkpoint directory)."""
  kind = request.param
  directory = tmp_path_factory.mktemp(f"hf_llama_{kind}")
  model = _hf_model("llama", rope_scaling=kind)
  assert model.model.rotary_emb.rope_type == kind
  model.save_pretrained(directory)
  (directory / "tokenizer.model").write_bytes(_train_sentencepiece("llama"))
  return kind, model, str(directory)


def test_scaled_rope_logits_and_greedy_generation_match_transformers(scaled_checkpoint,
                                                                      tmp_path):
  kind, model, source = scaled_checkpoint
  import_checkpoint(source, str(tmp_path), make_mesh(devices=jax.devices()[:1]))
  cfg, graphdef, params = _load(str(tmp_path))
  assert cfg.rope_scaling.kind == kind
  expected = _hf_logits(model, TOKENS)
  ours = np.asarray(forward(graphdef, params, jnp.asarray(TOKENS)))
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
  # The same weights with plain RoPE are far off: the comparison above can fail.
  plain_graphdef, _, _ = abstract_model(cfg.replace(rope_scaling=None))
  plain = np.asarray(forward(plain_graphdef, params, jnp.asarray(TOKENS)))
  assert np.abs(plain - expected).max() > 1e-2

  # The decode engine against transformers' generate.
  prompt, new_tokens = TOKENS[:, :7], 12
  np.testing.assert_array_equal(_engine_greedy(graphdef, params, cfg, prompt, new_tokens),
                                _hf_greedy(model, prompt, new_tokens))


def test_scaled_rope_export_round_trips_through_transformers(scaled_checkpoint, tmp_path):
  kind, model, source = scaled_checkpoint
  import_checkpoint(source, str(tmp_path / "run"), make_mesh(devices=jax.devices()[:1]))
  hf_export.export_checkpoint(str(tmp_path / "run"), str(tmp_path / "hf"))
  exported = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert exported["rope_parameters"]["rope_type"] == kind
  assert hf_families.model_config(exported) == run_dir.load_model_config(
      str(tmp_path / "run"))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
  np.testing.assert_allclose(_hf_logits(reloaded, TOKENS), _hf_logits(model, TOKENS),
                             atol=1e-5, rtol=0)


_LLAMA = {"model_type": "llama", "vocab_size": 32, "hidden_size": 4096,
          "intermediate_size": 11008, "num_hidden_layers": 1, "num_attention_heads": 32}


@pytest.mark.parametrize("config", [
    # Llama 3.1's config.json (transformers 4.x layout: rope_scaling, top-level rope_theta).
    dict(_LLAMA, rope_theta=500_000.0, max_position_embeddings=131072,
         rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
    dict(_LLAMA, rope_theta=1e6, rope_scaling={"type": "linear", "factor": 4}),
    # yarn with every default: beta 32/1, truncation, attention factor from factor alone.
    dict(_LLAMA, max_position_embeddings=131072,
         rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                          "original_max_position_embeddings": 32768}),
    # yarn without factor (max / original, where a top-level original wins) and with mscale.
    dict(_LLAMA, max_position_embeddings=16384, original_max_position_embeddings=2048,
         rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": None,
                          "original_max_position_embeddings": 4096, "mscale": 0.707,
                          "mscale_all_dim": 1.0, "beta_fast": 16, "truncate": False}),
], ids=["llama3_4x", "linear_4x", "yarn_defaults", "yarn_no_factor_mscale"])
def test_scaled_rope_frequencies_equal_transformers(config):
  """Our import-time defaulting + model/rope.py against transformers' own rope init."""
  theirs = transformers.LlamaConfig.from_dict(json.loads(json.dumps(config)))
  kind = theirs.rope_parameters["rope_type"]
  inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[kind](theirs)
  cfg = hf_families.model_config(config)
  ours, our_factor = rope_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
  np.testing.assert_allclose(ours, inv_freq.numpy(), rtol=1e-6, atol=0)
  assert our_factor == pytest.approx(attention_factor, rel=1e-12)
  assert not np.allclose(ours, rope_frequencies(
      cfg.head_dim, cfg.rope_theta, RopeScaling(kind="linear", factor=1.0))[0])


def _config(cls, **overrides):
  return json.loads(cls(**overrides).to_json_string())


@pytest.mark.parametrize("config, refused", [
    (_config(transformers.LlamaConfig,
             rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}),
     "rope scaling 'dynamic' (dynamic NTK"),
    ({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
      "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
                       "original_max_position_embeddings": 64}}, "rope scaling 'longrope'"),
    ({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
      "rope_scaling": {"rope_type": "su", "factor": 2.0}}, "rope scaling 'su' (supported"),
    ({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
      "rope_parameters": {"rope_type": "llama3", "factor": 8.0,
                          "original_max_position_embeddings": 64}},
     "llama3 needs 0 < low_freq_factor"),
    ({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
      "partial_rotary_factor": 0.5}, "partial_rotary_factor != 1"),
    (_config(transformers.MistralConfig, sliding_window=4096, max_position_embeddings=32768),
     "sliding_window=4096"),
    (_config(transformers.Gemma2Config), "model_type 'gemma2'"),
    (_config(transformers.LlamaConfig, attention_bias=True), "attention_bias"),
    (_config(transformers.LlamaConfig, hidden_act="gelu"), "activation 'gelu'"),
    ({"model_type": "gpt2"}, "model_type 'gpt2'"),
])
def test_unsupported_features_are_refused_by_name(config, refused):
  with pytest.raises(hf_families.UnsupportedCheckpointError, match=refused.replace("(", ".")):
    hf_families.model_config(config)


def test_supported_configs_map_exactly():
  mistral = hf_families.model_config(_config(transformers.MistralConfig, sliding_window=None))
  assert (mistral.num_kv_heads, mistral.head_dim, mistral.tie_embeddings) == (8, 128, False)
  llama = hf_families.model_config({"model_type": "llama", "vocab_size": 32016,
                                    "hidden_size": 4096, "intermediate_size": 11008,
                                    "num_hidden_layers": 32, "num_attention_heads": 32,
                                    "rope_theta": 1e6, "rope_scaling": None,
                                    "rms_norm_eps": 1e-5})  # CodeLlama-7b, transformers 4.x
  assert (llama.rope_theta, llama.num_kv_heads, llama.norm_eps) == (1e6, 32, 1e-5)
  gemma = hf_families.model_config(_config(transformers.GemmaConfig))
  assert gemma.embed_scale_by_sqrt_dim and gemma.norm_weight_plus_one and gemma.tie_embeddings
  assert gemma.mlp_activation == "gelu"


def test_unexpected_tensors_are_refused(hf_checkpoint, tmp_path):
  family, model, _ = hf_checkpoint
  with torch.no_grad():
    model.model.layers[0].self_attn.q_proj.bias = torch.nn.Parameter(torch.zeros(4 * 16))
  try:
    model.save_pretrained(tmp_path)
  finally:
    del model.model.layers[0].self_attn.q_proj.bias
    model.model.layers[0].self_attn.q_proj.register_parameter("bias", None)
  (tmp_path / "tokenizer.model").write_bytes(_train_sentencepiece(family))
  with pytest.raises(hf_families.UnsupportedCheckpointError, match="q_proj.bias"):
    import_checkpoint(str(tmp_path), str(tmp_path / "out"), make_mesh(devices=jax.devices()[:1]))


def test_tokenizer_matches_transformers_on_mbpp_prompts(hf_checkpoint, mbpp_dirs, tmp_path):
  family, _, source = hf_checkpoint
  import_checkpoint(source, str(tmp_path), make_mesh(devices=jax.devices()[:1]))
  ours = run_dir.load_tokenizer(tmp_path / "tokenizer.model")
  cls = transformers.LlamaTokenizer if family == "llama" else transformers.GemmaTokenizer
  theirs = cls.from_pretrained(source)
  prompts = [e["prompt"] for e in load_task_examples("mbpp_synthesis", "test", **mbpp_dirs)]
  assert len(prompts) == 500
  for prompt in prompts:
    ids = ours.encode(prompt)
    assert ids == theirs(prompt, add_special_tokens=False).input_ids
    assert ours.decode(ids) == theirs.decode(ids) == prompt
  # Imported models start prompts with BOS; the special ids are the family's own.
  assert ours.imported and ours.add_bos
  assert ours.encode_prompt(prompts[0]) == [ours.bos_id] + ours.encode(prompts[0])
  assert (ours.bos_id, ours.eos_id) == ((1, 2) if family == "llama" else (2, 1))


def test_continuations_encode_without_the_dummy_prefix_space(hf_checkpoint, tmp_path):
  family, _, source = hf_checkpoint
  (tmp_path / "import.json").write_text(json.dumps({"tokenizer": {"add_bos": True}}))
  (tmp_path / "tokenizer.model").write_bytes(pathlib.Path(source, "tokenizer.model").read_bytes())
  tokenizer = run_dir.load_tokenizer(tmp_path / "tokenizer.model")
  prompt, target = "Write a function.\n", "def f(x):\n    return x + 1\n"
  # Llama's tokenizer prefixes every encode() with a space piece; a target encoded that way
  # after its prompt would decode with a stray space, so continuations skip it.
  joined = tokenizer.encode(prompt) + tokenizer.encode_continuation(target)
  assert tokenizer.decode(joined) == prompt + target
  assert (tokenizer.encode(target) != tokenizer.encode_continuation(target)) == (
      family == "llama")


def test_bfloat16_checkpoints_import_exactly(hf_checkpoint, tmp_path):
  """Public checkpoints are mostly bf16 (which safetensors' numpy reader cannot read)."""
  family, model, source = hf_checkpoint
  bf16 = _hf_model(family).to(torch.bfloat16)
  bf16.save_pretrained(tmp_path / "hf")
  (tmp_path / "hf" / "tokenizer.model").write_bytes(
      pathlib.Path(source, "tokenizer.model").read_bytes())
  metadata = import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"),
                               make_mesh(devices=jax.devices()[:1]))
  assert metadata["source_dtypes"] == ["BF16"]
  _, _, params = _load(str(tmp_path / "run"))
  up = bf16.model.layers[1].mlp.up_proj.weight.float().detach().numpy()
  np.testing.assert_array_equal(np.asarray(params["blocks"]["mlp"]["up_DxF"][1]), up.T)
  q = bf16.model.layers[0].self_attn.q_proj.weight.float().detach().numpy()
  np.testing.assert_array_equal(np.asarray(params["blocks"]["attn"]["q_DxNxH"][0]),
                                q.reshape(4, -1, 64).transpose(2, 0, 1))
