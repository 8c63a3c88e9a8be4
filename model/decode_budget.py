"""How many sampling slots (rows decoded together) one call gets: from the model's size and
the device's memory, unless the config sets it (eval configs: `batch_size` > 0).

The rule (per device; slots are split over the batch-sharded mesh axes, parameters over
fsdp/tensor):

    free   = memory_fraction * device memory - parameter bytes on the device
    slot   = its generated-token cache (2 * layers * kv_heads * max_new_tokens * head_dim
             * dtype bytes) + its working set in a step (logits and their sampling copies,
             4 * vocab float32; a layer's activations, (4 * d_model + 2 * d_ff) float32)
    prompt = a problem's prompt cache (2 * layers * kv_heads * prompt_len * head_dim * dtype
             bytes) + its prefill activations (prompt_len * (4 * d_model + 2 * d_ff) float32),
             shared by the problem's samples: each slot carries 1 / samples_per_slot of one,
             where a call carries about SAMPLES_PER_SLOT samples per slot
    slots  = free / (slot + prompt * SAMPLES_PER_SLOT / num_samples) * batch shards,
             at most MAX_SLOTS, rounded down to a multiple of the batch shards (at least one
             per shard)

Where the devices report no memory limit (the CPU), a fixed CPU_SLOTS is used: CPU decoding
is bound by matmul throughput, not memory.
"""
from __future__ import annotations

import math

import jax

from model.config import ModelConfig

MEMORY_FRACTION = 0.6   # the rest: XLA's temporaries, fragmentation, the compiled program
CPU_SLOTS = 64
MAX_SLOTS = 1024
# A call carries whole problems, about this many samples per slot (so the slots that idle
# while its last samples finish are few next to its work): evaluation/sampler.py. Replaying
# the tiny model's MBPP sample lengths through the slot sampler's refill rule: 69% of the
# slot-steps busy at 3 problems per 64-slot call (4 samples per slot), 90% at 12 (16).
SAMPLES_PER_SLOT = 16


def bytes_per_slot(cfg: ModelConfig, max_new_tokens: int) -> int:
  itemsize = jax.numpy.dtype(cfg.dtype).itemsize
  cache = 2 * cfg.num_layers * cfg.num_kv_heads * max_new_tokens * cfg.head_dim * itemsize
  working = 4 * (4 * cfg.vocab_size + 4 * cfg.d_model + 2 * cfg.d_ff)
  return cache + working


def bytes_per_problem(cfg: ModelConfig, prompt_len: int) -> int:
  itemsize = jax.numpy.dtype(cfg.dtype).itemsize
  cache = 2 * cfg.num_layers * cfg.num_kv_heads * prompt_len * cfg.head_dim * itemsize
  return cache + 4 * prompt_len * (4 * cfg.d_model + 2 * cfg.d_ff)


def slots_per_call(cfg: ModelConfig, *, max_new_tokens: int, prompt_len: int, num_samples: int,
                   batch_shards: int, param_bytes_per_device: int,
                   memory_bytes: int | None) -> int:
  """The module docstring's rule; a multiple of batch_shards."""
  if memory_bytes is None:
    slots = CPU_SLOTS
  else:
    free = MEMORY_FRACTION * memory_bytes - param_bytes_per_device
    per_slot = (bytes_per_slot(cfg, max_new_tokens) +
                bytes_per_problem(cfg, prompt_len) * SAMPLES_PER_SLOT / num_samples)
    slots = min(MAX_SLOTS, math.floor(max(free, 0) / per_slot) * batch_shards)
  return max(batch_shards, slots // batch_shards * batch_shards)
