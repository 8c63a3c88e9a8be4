"""Shared pieces for training tests: a fixed synthetic batch and a one-call step runner."""
import jax
import ml_collections
import numpy as np

from model.config import ModelConfig
from model.sharding import batch_sharding, make_mesh
from training.optimizer import make_optimizer
from training.state import init_state, make_layout
from training.step import make_train_step


def synthetic_batch(batch: int, length: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Two packed segments per row, a prompt part with no loss: exercises every batch field."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, vocab, size=(batch, length + 1)).astype(np.int32)
  split = length // 2
  segment_ids = np.where(np.arange(length) < split, 1, 2)[None].repeat(batch, 0).astype(np.int32)
  positions = np.concatenate([np.arange(split), np.arange(length - split)])[None].repeat(
      batch, 0).astype(np.int32)
  loss_mask = np.ones((batch, length), np.float32)
  loss_mask[:, :3] = 0.0                 # a "prompt"
  loss_mask[:, split - 1] = 0.0          # no target across the segment boundary
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": loss_mask,
          "segment_ids": segment_ids, "positions": positions}


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
  from configs import base  # pylint: disable=g-import-not-at-top
  opt = base.get_config().optimizer
  opt.update(overrides)
  return opt


def run_steps(model_cfg: ModelConfig, mesh_shape: tuple[int, int, int], batches, *,
              grad_accum_steps: int = 1, num_train_steps: int = 100, devices=None,
              optimizer_overrides=None):
  """Runs the jitted train step on `batches`; returns (losses, final state, layout)."""
  mesh = make_mesh(*mesh_shape, devices=devices)
  tx, schedule = make_optimizer(optimizer_config(**(optimizer_overrides or {})),
                                num_train_steps)
  layout = make_layout(model_cfg, tx, mesh)
  state = init_state(layout, seed=0)
  data_sharding = batch_sharding(mesh)
  with jax.set_mesh(mesh):
    step = jax.jit(make_train_step(layout.graphdef, tx, schedule, grad_accum_steps),
                   in_shardings=(layout.shardings, data_sharding), donate_argnums=0)
    losses = []
    for batch in batches:
      global_batch = {k: jax.device_put(v, data_sharding) for k, v in batch.items()}
      state, metrics = step(state, global_batch)
      losses.append(float(metrics["loss"]))
  return losses, state, layout
