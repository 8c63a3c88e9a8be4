"""The jitted train and eval steps: pure functions of (state, batch).

The loss is the mean next-token cross-entropy over target tokens only (`loss_mask`, see
data/pipeline.py), computed by the model's kernel set (model/kernels/, like every other
kernel of the step). Gradient accumulation runs inside the step as a scan over microbatches and
normalises by the target tokens of the whole global batch, so any accumulation gives the same
update as one big batch.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from model.kernels import kernel_set

Batch = dict[str, jax.Array]
TrainState = dict[str, Any]  # {"step": int32[], "params": Params, "opt_state": optax state}


def loss_sums(graphdef: nnx.GraphDef, params: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
  """(sum of target-token NLL, number of target tokens) for one (micro)batch."""
  model = nnx.merge(graphdef, params)
  logits_BxLxV = model(batch["inputs"], batch["positions"], batch["segment_ids"])
  nll_BxL = kernel_set(model.cfg.kernels).token_nll(logits_BxLxV, batch["targets"])
  mask_BxL = batch["loss_mask"].astype(jnp.float32)
  return jnp.sum(nll_BxL * mask_BxL), jnp.sum(mask_BxL)


def _split_microbatches(batch: Batch, num_micro: int) -> Batch:
  # Row r goes to microbatch r % num_micro: every device keeps its own rows (the batch
  # dimension stays split the same way), so no data moves between devices.
  def split(x):
    return jnp.swapaxes(x.reshape((x.shape[0] // num_micro, num_micro) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, batch)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, grad_accum_steps: int
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  grad_fn = jax.value_and_grad(lambda p, b: loss_sums(graphdef, p, b), has_aux=True)

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    params = state["params"]
    if grad_accum_steps == 1:
      (nll_sum, tokens), grad_sums = grad_fn(params, batch)
    else:
      def accumulate(carry, micro):
        (nll, tok), grads = grad_fn(params, micro)
        return jax.tree.map(jnp.add, carry, (nll, tok, grads)), None
      zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
      (nll_sum, tokens, grad_sums), _ = jax.lax.scan(
          accumulate, zeros, _split_microbatches(batch, grad_accum_steps))
    denom = jnp.maximum(tokens, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grad_sums)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_state = {"step": state["step"] + 1, "params": optax.apply_updates(params, updates),
                 "opt_state": opt_state}
    metrics = {"loss": nll_sum / denom, "grad_norm": optax.global_norm(grads),
               "target_tokens": tokens, "learning_rate": schedule(state["step"])}
    return new_state, metrics

  return train_step


def make_eval_step(graphdef: nnx.GraphDef) -> Callable[[Any, Batch], tuple[jax.Array, jax.Array]]:
  return lambda params, batch: loss_sums(graphdef, params, batch)
