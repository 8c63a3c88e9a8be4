"""The train step: golden values, sharded == single device, gradient accumulation."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from model.presets import PRESETS
from tests.train_utils import run_steps, synthetic_batch

TINY = PRESETS["tiny"]

# Golden numbers for the tiny preset (seed 0) on synthetic_batch(8, 64, vocab, seed=0), base
# optimizer config without warmup: the loss before any update, after one, after two.
# A change to the model, init, loss or optimizer must update these on purpose.
GOLDEN_LOSSES = [9.0205851, 8.6223001, 8.3333998]
# Mesh-equality tests use a smaller vocabulary: same code paths, a fraction of the compile time.
SMALL_VOCAB = TINY.replace(vocab_size=512)


def test_golden_losses_tiny_preset():
  batch = synthetic_batch(8, 64, TINY.vocab_size)
  losses, _, _ = run_steps(TINY, (1, 1, 1), [batch] * 3, devices=jax.devices()[:1],
                           optimizer_overrides={"warmup_steps": 0})
  np.testing.assert_allclose(losses, GOLDEN_LOSSES, rtol=1e-5)


def test_sharded_training_equals_single_device_and_really_shards():
  batches = [synthetic_batch(8, 32, TINY.vocab_size, seed=s) for s in range(3)]
  kw = dict(optimizer_overrides={"warmup_steps": 0})
  single, _, _ = run_steps(TINY, (1, 1, 1), batches, devices=jax.devices()[:1], **kw)
  sharded, state, layout = run_steps(TINY, (2, 2, 2), batches, **kw)
  np.testing.assert_allclose(sharded, single, rtol=2e-6, atol=2e-6)
  assert len(set(single)) == 3  # the steps really changed the model

  gate = state["params"]["blocks"][0]["mlp"]["gate_DxF"]
  assert gate.sharding.spec == PartitionSpec("fsdp", "tensor")
  assert gate.addressable_shards[0].data.shape == (TINY.d_model // 2, TINY.d_ff // 2)
  q = state["params"]["blocks"][0]["attn"]["q_DxNxH"]
  assert q.sharding.spec == PartitionSpec("fsdp", "tensor")
  embed = state["params"]["embed_VxD"]
  assert embed.sharding.spec == PartitionSpec("tensor", "fsdp")
  mu = state["opt_state"][1][0].mu["blocks"][0]["mlp"]["gate_DxF"]
  assert mu.sharding.spec == PartitionSpec("fsdp", "tensor")  # optimizer state sharded too
  assert len(jax.tree.leaves(state["params"])[0].sharding.device_set) == 8


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (1, 8, 1), (2, 1, 4)])
def test_other_mesh_shapes_match(mesh_shape):
  batches = [synthetic_batch(8, 32, SMALL_VOCAB.vocab_size, seed=s) for s in range(2)]
  kw = dict(optimizer_overrides={"warmup_steps": 0})
  single, _, _ = run_steps(SMALL_VOCAB, (1, 1, 1), batches, devices=jax.devices()[:1], **kw)
  other, _, _ = run_steps(SMALL_VOCAB, mesh_shape, batches, **kw)
  np.testing.assert_allclose(other, single, rtol=2e-6, atol=2e-6)


def test_gradient_accumulation_gives_the_same_update():
  batches = [synthetic_batch(8, 32, SMALL_VOCAB.vocab_size, seed=s) for s in range(3)]
  kw = dict(optimizer_overrides={"warmup_steps": 0}, devices=jax.devices()[:1])
  plain, state_a, _ = run_steps(SMALL_VOCAB, (1, 1, 1), batches, **kw)
  accum, state_b, _ = run_steps(SMALL_VOCAB, (1, 1, 1), batches, grad_accum_steps=4, **kw)
  np.testing.assert_allclose(accum, plain, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=1e-5, atol=2e-5),
               state_a["params"], state_b["params"])
