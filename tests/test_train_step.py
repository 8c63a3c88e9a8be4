"""The train step: golden values, sharded == single device, gradient accumulation, both kernel
sets, scanned == unscanned layers, every remat policy."""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from model.decoder import abstract_model
from model.presets import PRESETS
from tests.train_utils import optimizer_config, run_steps, synthetic_batch
from training.optimizer import make_optimizer

TINY = PRESETS["tiny"]

# Golden numbers for the tiny preset (seed 0) on synthetic_batch(8, 64, vocab, seed=0), base
# optimizer config without warmup: the loss before any update, after one, after two.
# A change to the model, init, loss or optimizer must update these on purpose.
GOLDEN_LOSSES = [9.0205851, 8.6223001, 8.3333998]
# Mesh-equality tests use a smaller vocabulary: same code paths, a fraction of the compile time.
SMALL_VOCAB = TINY.replace(vocab_size=512)


# Both kernel sets (model/kernels/) and every remat policy compute the same maths, so they
# all meet the same golden losses.
@pytest.mark.parametrize("kernels, remat", [("cpu", "none"), ("xla", "none"), ("cpu", "full"),
                                            ("xla", "save_dots")])
def test_golden_losses_tiny_preset(kernels, remat):
  batch = synthetic_batch(8, 64, TINY.vocab_size)
  losses, _, _ = run_steps(TINY.replace(kernels=kernels, remat=remat), (1, 1, 1), [batch] * 3,
                           devices=jax.devices()[:1], optimizer_overrides={"warmup_steps": 0})
  np.testing.assert_allclose(losses, GOLDEN_LOSSES, rtol=1e-5)


def test_sharded_training_equals_single_device_and_really_shards():
  batches = [synthetic_batch(8, 32, TINY.vocab_size, seed=s) for s in range(3)]
  kw = dict(optimizer_overrides={"warmup_steps": 0})
  single, _, _ = run_steps(TINY, (1, 1, 1), batches, devices=jax.devices()[:1], **kw)
  sharded, state, layout = run_steps(TINY, (2, 2, 2), batches, **kw)
  np.testing.assert_allclose(sharded, single, rtol=2e-6, atol=2e-6)
  assert len(set(single)) == 3  # the steps really changed the model

  # Stacked layers: a leading, unsharded [num_layers] axis, the rest as for one layer.
  gate = state["params"]["blocks"]["mlp"]["gate_DxF"]
  assert gate.sharding.spec == PartitionSpec(None, "fsdp", "tensor")
  assert gate.addressable_shards[0].data.shape == (TINY.num_layers, TINY.d_model // 2,
                                                   TINY.d_ff // 2)
  q = state["params"]["blocks"]["attn"]["q_DxNxH"]
  assert q.sharding.spec == PartitionSpec(None, "fsdp", "tensor")
  embed = state["params"]["embed_VxD"]
  assert embed.sharding.spec == PartitionSpec("tensor", "fsdp")
  mu = state["opt_state"][1][0].mu["blocks"]["mlp"]["gate_DxF"]
  assert mu.sharding.spec == PartitionSpec(None, "fsdp", "tensor")  # optimizer state too
  assert len(jax.tree.leaves(state["params"])[0].sharding.device_set) == 8


def _mesh_batches():
  return [synthetic_batch(8, 32, SMALL_VOCAB.vocab_size, seed=s) for s in range(2)]


@functools.lru_cache(maxsize=1)
def _single_device_losses() -> tuple[float, ...]:
  """The reference every mesh shape must match (computed once for the parametrised test)."""
  losses, _, _ = run_steps(SMALL_VOCAB, (1, 1, 1), _mesh_batches(), devices=jax.devices()[:1],
                           optimizer_overrides={"warmup_steps": 0})
  return tuple(losses)


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (1, 8, 1), (2, 1, 4)])
def test_other_mesh_shapes_match(mesh_shape):
  other, _, _ = run_steps(SMALL_VOCAB, mesh_shape, _mesh_batches(),
                          optimizer_overrides={"warmup_steps": 0})
  np.testing.assert_allclose(other, _single_device_losses(), rtol=2e-6, atol=2e-6)


def test_gradient_accumulation_gives_the_same_update():
  batches = [synthetic_batch(8, 32, SMALL_VOCAB.vocab_size, seed=s) for s in range(3)]
  kw = dict(optimizer_overrides={"warmup_steps": 0}, devices=jax.devices()[:1])
  plain, state_a, _ = run_steps(SMALL_VOCAB, (1, 1, 1), batches, **kw)
  accum, state_b, _ = run_steps(SMALL_VOCAB, (1, 1, 1), batches, grad_accum_steps=4, **kw)
  np.testing.assert_allclose(accum, plain, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=1e-5, atol=2e-5),
               state_a["params"], state_b["params"])


def _assert_same_params(a, b, **tolerance):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                       **tolerance), a, b)


def test_scanned_layers_equal_a_python_loop_over_them_on_the_2x2x2_mesh():
  batches = [synthetic_batch(8, 32, SMALL_VOCAB.vocab_size, seed=s) for s in range(2)]
  kw = dict(optimizer_overrides={"warmup_steps": 0})
  looped_cfg = SMALL_VOCAB.replace(scan_layers=False)
  assert SMALL_VOCAB.scan_layers  # the default
  _, init_scanned, _ = run_steps(SMALL_VOCAB, (2, 2, 2), [], **kw)
  _, init_looped, _ = run_steps(looped_cfg, (2, 2, 2), [], **kw)
  _assert_same_params(init_scanned["params"], init_looped["params"], rtol=0, atol=0)
  scanned, state_scanned, _ = run_steps(SMALL_VOCAB, (2, 2, 2), batches, **kw)
  looped, state_looped, _ = run_steps(looped_cfg, (2, 2, 2), batches, **kw)
  np.testing.assert_allclose(scanned, looped, rtol=2e-6)
  assert scanned[0] != scanned[1]
  _assert_same_params(state_scanned["params"], state_looped["params"], rtol=1e-5, atol=1e-6)


def test_weight_decay_skips_every_layers_norm_scales_only():
  """Stacked norm scales are [layers, D] (2-D), so decay is masked by name, not by rank."""
  tx, _ = make_optimizer(optimizer_config(warmup_steps=0), 10)
  shapes = abstract_model(SMALL_VOCAB.replace(num_layers=2))[1]
  params = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes)
  zero_grads = jax.tree.map(np.zeros_like, params)
  updates = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(zero_grads, params)
  decayed = {jax.tree_util.keystr(path): bool(np.any(np.asarray(u) != 0))
             for path, u in jax.tree_util.tree_leaves_with_path(updates)}
  assert decayed == {k: "scale" not in k for k in decayed}, decayed
  assert decayed["['blocks']['mlp']['up_DxF']"]
  assert not decayed["['blocks']['attn_norm']['scale']"]
