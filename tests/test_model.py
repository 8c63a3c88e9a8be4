"""Decoder behaviour: parity with an independent implementation, causality, packing."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model.config import ModelConfig
from model.decoder import Decoder, abstract_model, forward
from model.rope import RopeScaling
from tests.reference_decoder import reference_logits

SMALL = ModelConfig(vocab_size=97, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, d_ff=48)


def _model(cfg, seed=0):
  model = Decoder(cfg, nnx.Rngs(seed))
  graphdef, state = nnx.split(model)
  return graphdef, nnx.to_pure_dict(state)


@pytest.mark.parametrize("cfg", [
    SMALL,
    SMALL.replace(num_kv_heads=4),                        # multi-head
    SMALL.replace(num_kv_heads=1, tie_embeddings=False),  # multi-query, untied head
    SMALL.replace(mlp_activation="gelu", embed_scale_by_sqrt_dim=True,
                  norm_weight_plus_one=True),             # Gemma conventions
    SMALL.replace(kernels="xla", num_layers=3),           # the accelerators' kernels
    SMALL.replace(scan_layers=False, remat="save_dots"),  # layers in a Python loop
], ids=["gqa", "mha", "mqa_untied", "gemma_style", "xla_kernels", "unscanned"])
def test_logits_match_independent_numpy_reference(cfg):
  graphdef, params = _model(cfg)
  # Non-trivial norm scales, so a wrong (1 + w) convention would show.
  params = jax.tree.map(np.asarray, params)
  rng = np.random.default_rng(1)
  for path in (("final_norm", "scale"),):
    params[path[0]][path[1]] = rng.normal(0.5, 0.2, params[path[0]][path[1]].shape).astype(
        np.float32)
  tokens = rng.integers(0, cfg.vocab_size, size=(1, 12))
  ours = np.asarray(forward(graphdef, params, jnp.asarray(tokens)))[0]
  ref = reference_logits(jax.tree.map(lambda a: np.asarray(a, np.float64), params), cfg,
                         tokens[0])
  np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-4)


def test_logits_do_not_depend_on_future_tokens():
  graphdef, params = _model(SMALL)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, SMALL.vocab_size, size=(2, 16))
  base = np.asarray(forward(graphdef, params, jnp.asarray(tokens)))
  for t in (0, 5, 14):
    changed = tokens.copy()
    changed[:, t + 1:] = rng.integers(0, SMALL.vocab_size, size=changed[:, t + 1:].shape)
    out = np.asarray(forward(graphdef, params, jnp.asarray(changed)))
    np.testing.assert_array_equal(out[:, :t + 1], base[:, :t + 1])
    assert not np.allclose(out[:, t + 1:], base[:, t + 1:])  # the test can see a change


def test_packed_segments_equal_separate_sequences():
  graphdef, params = _model(SMALL)
  rng = np.random.default_rng(2)
  a, b = rng.integers(1, SMALL.vocab_size, 7), rng.integers(1, SMALL.vocab_size, 9)
  packed = np.concatenate([a, b])[None]
  segments = np.array([[1] * 7 + [2] * 9])
  positions = np.array([list(range(7)) + list(range(9))])
  out = np.asarray(forward(graphdef, params, jnp.asarray(packed), jnp.asarray(positions),
                           jnp.asarray(segments)))[0]
  alone_a = np.asarray(forward(graphdef, params, jnp.asarray(a[None])))[0]
  alone_b = np.asarray(forward(graphdef, params, jnp.asarray(b[None])))[0]
  np.testing.assert_allclose(out[:7], alone_a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[7:], alone_b, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
  cfg = SMALL.replace(dtype="bfloat16")
  graphdef, params = _model(cfg)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  tokens = jnp.asarray(np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 10)))
  logits16 = forward(graphdef, params, tokens)
  graphdef32, _ = _model(SMALL)
  logits32 = forward(graphdef32, params, tokens)
  assert logits16.dtype == jnp.float32  # logits are always float32 for the loss
  np.testing.assert_allclose(np.asarray(logits16), np.asarray(logits32), atol=0.1)


def test_every_parameter_declares_logical_axes_of_its_rank():
  _, shapes, axes = abstract_model(SMALL.replace(tie_embeddings=False))
  flat_shapes = jax.tree.leaves(shapes)
  flat_axes = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
  # The blocks are stacked: 9 parameters with a leading layers axis, plus embed, final norm
  # and head.
  assert len(flat_shapes) == len(flat_axes) == 9 + 3
  for shape, names in zip(flat_shapes, flat_axes):
    assert len(shape.shape) == len(names)
  for shape, names in zip(jax.tree.leaves(shapes["blocks"]),
                          jax.tree.leaves(axes["blocks"], is_leaf=lambda x: isinstance(x, tuple))):
    assert names[0] == "layers" and shape.shape[0] == SMALL.num_layers


def test_invalid_model_config_is_rejected_with_reasons():
  with pytest.raises(ValueError, match="num_heads .* multiple of num_kv_heads"):
    SMALL.replace(num_kv_heads=3)
  with pytest.raises(ValueError, match="Unknown model config field"):
    SMALL.replace(d_modle=3)
  with pytest.raises(ValueError, match="remat must be one of .*no longer a bool"):
    SMALL.replace(remat="True")
  with pytest.raises(ValueError, match="kernels must be one of"):
    SMALL.replace(kernels="pallas")
  with pytest.raises(ValueError, match="attention_impl='cudnn' needs the xla kernels"):
    SMALL.replace(kernels="cpu", attention_impl="cudnn")
  # kernels="auto" resolves to the cpu set on this CPU: refused when the model runs.
  graphdef, params = _model(SMALL.replace(attention_impl="cudnn"))
  with pytest.raises(ValueError, match="needs the xla kernels, but kernels='auto' resolves"):
    forward(graphdef, params, jnp.zeros((1, 4), jnp.int32))


def test_remat_bools_of_older_configs_mean_none_and_full():
  assert SMALL.replace(remat=True).remat == "full"
  assert SMALL.replace(remat=False) == SMALL and SMALL.remat == "none"
  old = json.loads(SMALL.to_json())
  old["remat"] = True
  for field in ("kernels", "attention_impl", "scan_layers"):  # fields added since
    del old[field]
  assert ModelConfig.from_json(json.dumps(old)) == SMALL.replace(remat="full")


def test_model_config_json_round_trips_with_rope_scaling():
  yarn = RopeScaling(kind="yarn", factor=4.0, original_max_positions=64, beta_fast=16.0,
                     truncate=False, attention_factor=1.2)
  for cfg in (SMALL, SMALL.replace(rope_scaling=yarn),
              SMALL.replace(rope_scaling=RopeScaling(kind="linear", factor=2.0))):
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg and hash(again) == hash(cfg)
    assert isinstance(again.rope_scaling, (RopeScaling, type(None)))
  # Run directories written before rope_scaling existed still load.
  old = json.loads(SMALL.to_json())
  del old["rope_scaling"]
  assert ModelConfig.from_json(json.dumps(old)) == SMALL


def test_invalid_rope_scaling_is_rejected_with_reasons():
  with pytest.raises(ValueError, match="Invalid ModelConfig: rope_scaling must be"):
    SMALL.replace(rope_scaling={"kind": "linear", "factor": 2.0})
  with pytest.raises(ValueError, match="kind must be one of"):
    RopeScaling(kind="dynamic", factor=2.0)
  with pytest.raises(ValueError, match="low_freq_factor < high_freq_factor"):
    RopeScaling(kind="llama3", factor=8.0, original_max_positions=64, low_freq_factor=4.0,
                high_freq_factor=1.0)
  with pytest.raises(ValueError, match="original_max_positions must be a positive int"):
    RopeScaling(kind="yarn", factor=4.0)
  with pytest.raises(ValueError, match="attention_factor is not used by 'linear'"):
    RopeScaling(kind="linear", factor=2.0, attention_factor=1.5)
