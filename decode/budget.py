"""How much one sampling call takes: its slots (rows decoded together) and its problems
(prompts prefilled together), from the model's size and a memory budget, unless the config
sets the slots (eval configs: `batch_size` > 0).

The budget, per device and per call:
  * accelerators: MEMORY_FRACTION of the device's memory (calls run one after another on it);
  * CPU: HOST_MEMORY_FRACTION of the host's available memory (decode/host_devices.py), at most
    HOST_MEMORY_CAP, or the config's `cpu_sampling_memory_mb`; split over the host's devices
    and over the calls queued at once (XLA:CPU runs them at the same time).

The rule (per device; slots and problems are split over the batch mesh axes, data and fsdp;
parameters only over tensor):

    free    = budget - parameter bytes on the device (whole within a loop shard, split only
              by tensor parallelism: decode/engine.py)
    slot    = its own pages (2 * layers * kv_heads * pages * PAGE * head_dim * dtype bytes,
              decode/kv_pages.py: max_new_tokens plus a prompt's last page)
              + its working set in a step (logits and their sampling copies,
              4 * vocab float32; a layer's activations, (4 * d_model + 2 * d_ff) float32)
    problem = its prompt cache (2 * layers * kv_heads * L * head_dim * dtype bytes)
              + its prefill, L prompt tokens (after the shared prefix of C) at once:
              activations L * (4 * d_model + 2 * d_ff) float32, attention scores
              heads * L * (C + L) float32 (quadratic in the prompt), a layer's [prefix ;
              prompt] keys and values (2 * kv_heads * (C + L) * head_dim * dtype bytes)
              + its first logits (vocab float32)
              + per sample, its uniforms (drawn before the loop, decode/engine.py)
              and its output tokens: 2 * max_new_tokens * 4 bytes
    prefix  = the shared prefix, prefilled and held once a call (a problem of C tokens)
    slots   = free / (slot + problem * SAMPLES_PER_SLOT / num_samples) * batch shards,
              at most MAX_SLOTS, a multiple of the batch shards (at least one per shard);
              CPU: CPU_SLOTS per device, fewer only where the slots alone would take more
              than half the budget (CPU decoding is bound by compute, not memory: a call
              with few problems gets fewer samples per slot, not fewer slots)
    problems per call = min(SAMPLES_PER_SLOT * slots / num_samples,
              (free - slots * slot - prefix) / problem * batch shards), a multiple of the
              batch shards where the budget binds (at least one problem)

The problems per call follow each call's own prompt length (evaluation/call_schedule.py plans
the calls of an evaluation by it): the attention scores of a 768-token prompt cost 36 times
those of a 128-token one.
"""
from __future__ import annotations

import math
from typing import Any

import jax

from decode import kv_pages
from model.config import ModelConfig

MEMORY_FRACTION = 0.6   # the rest: XLA's temporaries, fragmentation, the compiled program
# A CPU host's memory is shared: by the sandbox's workers (sandbox.workers x memory_mb, a GiB
# each by default), this process's own arrays, libraries and compiled programs, and other jobs
# on the machine; and more memory buys a CPU no speed once a call's problems keep its slots
# busy (benchmarks/RESULTS.md). So a quarter of what is available, at most a GiB.
HOST_MEMORY_FRACTION = 0.25
HOST_MEMORY_CAP = 1 << 30
# Calls queued on the devices at once (evaluation/call_schedule.py): with two, a device that
# finishes its share of a call (each loop shard runs its own loop, decode/engine.py) starts
# the next one at once instead of idling while the host collects and dispatches (and a new
# shape's compile overlaps the running call). XLA:CPU runs both at once, so a CPU's budget is
# shared by them.
CALLS_IN_FLIGHT = 2
# Slots per CPU device (one device per core, decode/host_devices.py): CPU decoding is bound by
# compute, and past a few dozen slots a step's matmuls are as efficient as they get.
CPU_SLOTS = 32
MAX_SLOTS = 1024
# A call carries whole problems, about this many samples per slot, so the slots that idle
# while its last samples finish are few next to its work.
SAMPLES_PER_SLOT = 32
_F32 = 4


def bytes_per_slot(cfg: ModelConfig, max_new_tokens: int) -> int:
  itemsize = jax.numpy.dtype(cfg.dtype).itemsize
  positions = kv_pages.slot_pages(max_new_tokens) * kv_pages.PAGE
  cache = 2 * cfg.num_layers * cfg.num_kv_heads * positions * cfg.head_dim * itemsize
  working = _F32 * (4 * cfg.vocab_size + 4 * cfg.d_model + 2 * cfg.d_ff)
  return cache + working


def bytes_per_sample(max_new_tokens: int) -> int:
  """A sample's uniforms and output tokens, held for its whole call."""
  return 2 * _F32 * max_new_tokens


def bytes_per_problem(cfg: ModelConfig, prompt_len: int, prefix_len: int = 0) -> int:
  """A problem's prompt cache, its prefill's working set and its first logits (the module
  docstring's `problem`, without its samples)."""
  itemsize = jax.numpy.dtype(cfg.dtype).itemsize
  cache = 2 * cfg.num_layers * cfg.num_kv_heads * prompt_len * cfg.head_dim * itemsize
  activations = _F32 * prompt_len * (4 * cfg.d_model + 2 * cfg.d_ff)
  scores = _F32 * cfg.num_heads * prompt_len * (prefix_len + prompt_len)
  layer_keys = 2 * cfg.num_kv_heads * (prefix_len + prompt_len) * cfg.head_dim * itemsize
  return cache + activations + scores + layer_keys + _F32 * cfg.vocab_size


def param_bytes_per_device(params: Any, mesh: Any) -> int:
  """The parameters' bytes on one device while sampling: whole, but for what tensor
  parallelism splits (decode/engine.py gathers what the batch axes split, once a call)."""
  total = 0
  for x in jax.tree.leaves(params):
    spec = getattr(getattr(x, "sharding", None), "spec", ())
    axes = {a for entry in spec if entry for a in ((entry,) if isinstance(entry, str) else entry)}
    split = math.prod(mesh.shape[a] for a in axes if a not in ("data", "fsdp"))
    total += x.size * x.dtype.itemsize // split
  return total


def call_budget_bytes(device_memory_bytes: int | None, *, host_available_bytes: int | None,
                      host_budget_bytes: int, local_devices: int, calls_at_once: int) -> int:
  """The bytes one call may take on each device (the module docstring's budget).

  device_memory_bytes: an accelerator's memory (None on a CPU); host_available_bytes: the
  host's available memory (None where unknown: HOST_MEMORY_CAP); host_budget_bytes: the
  config's CPU budget for the whole host (0: derived); calls_at_once: calls queued together.
  """
  if device_memory_bytes is not None:
    return int(MEMORY_FRACTION * device_memory_bytes)
  host = host_budget_bytes
  if not host:
    host = HOST_MEMORY_CAP if host_available_bytes is None else min(
        HOST_MEMORY_CAP, int(HOST_MEMORY_FRACTION * host_available_bytes))
  return host // (max(1, local_devices) * max(1, calls_at_once))


def _free(budget_bytes: int, param_bytes_per_device: int) -> int:
  return max(0, budget_bytes - param_bytes_per_device)


def slots_per_call(cfg: ModelConfig, *, max_new_tokens: int, prompt_len: int, num_samples: int,
                   batch_shards: int, param_bytes_per_device: int, budget_bytes: int,
                   cpu: bool = False) -> int:
  """The module docstring's rule for slots; a multiple of batch_shards."""
  free = _free(budget_bytes, param_bytes_per_device)
  slot = bytes_per_slot(cfg, max_new_tokens)
  if cpu:
    per_shard = min(CPU_SLOTS, math.floor(free / 2 / slot))
  else:
    problem = bytes_per_problem(cfg, prompt_len) + num_samples * bytes_per_sample(max_new_tokens)
    per_shard = math.floor(free / (slot + problem * SAMPLES_PER_SLOT / num_samples))
    per_shard = min(per_shard, MAX_SLOTS // batch_shards)
  return max(1, per_shard) * batch_shards


def problems_per_call(cfg: ModelConfig, *, max_new_tokens: int, prompt_len: int,
                      prefix_len: int, num_samples: int, slots: int, batch_shards: int,
                      param_bytes_per_device: int, budget_bytes: int) -> int:
  """The module docstring's rule for a call's problems (prompts of prompt_len tokens after a
  shared prefix of prefix_len); at least 1."""
  wanted = max(1, SAMPLES_PER_SLOT * slots // num_samples)
  free = (_free(budget_bytes, param_bytes_per_device)
          - slots // batch_shards * bytes_per_slot(cfg, max_new_tokens)
          - (bytes_per_problem(cfg, prefix_len) if prefix_len else 0))
  problem = (bytes_per_problem(cfg, prompt_len, prefix_len)
             + num_samples * bytes_per_sample(max_new_tokens))
  fits = math.floor(max(free, 0) / problem) * batch_shards
  return max(1, min(wanted, fits))
