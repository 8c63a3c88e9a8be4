"""How many sampling slots (rows decoded together) one call gets: from the model's size and
the device's memory, unless the config sets it (eval configs: `batch_size` > 0).

The rule (per device; slots are split over the batch-sharded mesh axes, parameters over
fsdp/tensor):

    free   = memory_fraction * device memory - parameter bytes on the device
    slot   = its generated-token pages (2 * layers * kv_heads * max_new_tokens * head_dim
             * dtype bytes, max_new_tokens rounded up to whole pages, model/page_pool.py)
             + its working set in a step (logits and their sampling copies,
             4 * vocab float32; a layer's activations, (4 * d_model + 2 * d_ff) float32)
             + the uniforms of the samples it carries in a call, drawn before the call's
             loop (SAMPLES_PER_SLOT * max_new_tokens float32; model/slot_sampling.py)
    prompt = a problem's prompt cache (2 * layers * kv_heads * prompt_len * head_dim * dtype
             bytes) + its prefill activations (prompt_len * (4 * d_model + 2 * d_ff) float32),
             shared by the problem's samples: each slot carries 1 / samples_per_slot of one,
             where a call carries about SAMPLES_PER_SLOT samples per slot
    slots  = free / (slot + prompt * SAMPLES_PER_SLOT / num_samples) * batch shards,
             at most MAX_SLOTS, rounded down to a multiple of the batch shards (at least one
             per shard)

Where the devices report no memory limit (the CPU), CPU_SLOTS per device is used: CPU
decoding is bound by compute, not memory, and the host runs one device per core
(model/host_devices.py).
"""
from __future__ import annotations

import math

import jax

from model import page_pool
from model.config import ModelConfig

MEMORY_FRACTION = 0.6   # the rest: XLA's temporaries, fragmentation, the compiled program
# Per CPU device (one per core). The tiny model's full MBPP protocol, 2 devices: 686 s of
# sampling at 32 each (25 problems a call), 668 s at 64 (51 a call, before the even split
# of a call's problems over the shards): alike. Synthetic calls (random weights, 640-token
# shared prefix, 192-token suffixes, 256 new tokens) favoured 64 (8,430 / 8,026 tokens/s
# against 7,436 / 7,221); the real samples' refills and short calls even it out.
CPU_SLOTS = 32
MAX_SLOTS = 1024
# A call carries whole problems, about this many samples per slot (so the slots that idle
# while its last samples finish are few next to its work): evaluation/sampler.py. Replaying
# the tiny model's 40,000 MBPP sample lengths through the refill rule, 2 devices of 32 slots,
# calls pipelined: 89% of the slot-steps busy at 16 samples per slot (12 problems a call),
# 94% at 32 (25); one 64-slot device: 69% at 4, 90% at 16.
SAMPLES_PER_SLOT = 32


def bytes_per_slot(cfg: ModelConfig, max_new_tokens: int) -> int:
  itemsize = jax.numpy.dtype(cfg.dtype).itemsize
  positions = page_pool.pages_per_slot(max_new_tokens) * page_pool.PAGE  # whole pages
  cache = 2 * cfg.num_layers * cfg.num_kv_heads * positions * cfg.head_dim * itemsize
  working = 4 * (4 * cfg.vocab_size + 4 * cfg.d_model + 2 * cfg.d_ff)
  uniforms = 4 * SAMPLES_PER_SLOT * max_new_tokens
  return cache + working + uniforms


def bytes_per_problem(cfg: ModelConfig, prompt_len: int) -> int:
  itemsize = jax.numpy.dtype(cfg.dtype).itemsize
  cache = 2 * cfg.num_layers * cfg.num_kv_heads * prompt_len * cfg.head_dim * itemsize
  return cache + 4 * prompt_len * (4 * cfg.d_model + 2 * cfg.d_ff)


def slots_per_call(cfg: ModelConfig, *, max_new_tokens: int, prompt_len: int, num_samples: int,
                   batch_shards: int, param_bytes_per_device: int,
                   memory_bytes: int | None) -> int:
  """The module docstring's rule; a multiple of batch_shards."""
  if memory_bytes is None:
    slots = CPU_SLOTS * batch_shards
  else:
    free = MEMORY_FRACTION * memory_bytes - param_bytes_per_device
    per_slot = (bytes_per_slot(cfg, max_new_tokens) +
                bytes_per_problem(cfg, prompt_len) * SAMPLES_PER_SLOT / num_samples)
    slots = min(MAX_SLOTS, math.floor(max(free, 0) / per_slot) * batch_shards)
  return max(batch_shards, slots // batch_shards * batch_shards)
