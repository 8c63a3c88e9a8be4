"""AdamW with linear warmup, a decay schedule and global-norm clipping (optax)."""
from __future__ import annotations

import jax
import ml_collections
import optax


def learning_rate_schedule(opt: ml_collections.ConfigDict, num_train_steps: int) -> optax.Schedule:
  peak = opt.learning_rate
  end = peak * opt.end_learning_rate_fraction
  warmup = min(opt.warmup_steps, num_train_steps)
  decay_steps = max(num_train_steps - warmup, 1)
  if opt.decay == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=opt.end_learning_rate_fraction)
  elif opt.decay == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif opt.decay == "constant":
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f"config.optimizer.decay must be cosine, linear or constant; "
                     f"got {opt.decay!r}")
  warmup_schedule = optax.linear_schedule(0.0, peak, warmup) if warmup else None
  if warmup_schedule is None:
    return decay
  return optax.join_schedules([warmup_schedule, decay], [warmup])


def make_optimizer(opt: ml_collections.ConfigDict,
                   num_train_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = learning_rate_schedule(opt, num_train_steps)
  # Weight decay skips the RMSNorm scales (leaves named "scale"; 1-D per layer, [layers, D]
  # when stacked): decaying them toward 0 only fights the normalisation.
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) != "scale", params)
  chain = []
  if opt.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  chain.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=opt.weight_decay, mask=decay_mask))
  return optax.chain(*chain), schedule
