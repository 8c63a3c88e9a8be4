"""The eval's sampling call compiled ahead of time from abstract arrays (training/plan.py
--step=sample).

The call evaluation/sampler.py dispatches (decode/engine.py's jitted call), at
the size its rules give it on the target: slots by decode/budget.py's rule for the
device's memory, problems per call as evaluation/call_schedule.py's plan_calls takes them,
prompts at their longest bucket (max_prompt_len, no shared prefix): the largest call an
evaluation makes.
"""
from __future__ import annotations

import re
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from decode import budget as decode_budget
from decode import kv_pages
from decode.engine import loop_shards, make_sample_fn
from decode.prompt_rows import bucket_length
from decode.stop_matcher import build_stop_table
from decode.token_choice import SamplingConfig
from model.config import ModelConfig
from model.decoder import sharded_abstract_params
from model.sharding import batch_shard_count, batch_sharding


def _abstract(x, sharding) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=sharding)


def call_shape(model_cfg: ModelConfig, mesh: Mesh, num_samples: int, max_prompt_len: int,
               max_new_tokens: int, slots: int, memory_bytes: int | None) -> dict[str, int]:
  """{slots, problems, prompt_len, param_bytes_per_device} of an evaluation's largest call."""
  shards = batch_shard_count(mesh)
  _, params = sharded_abstract_params(model_cfg, mesh)
  param_bytes = decode_budget.param_bytes_per_device(params, mesh)
  prompt_len = bucket_length(max_prompt_len)
  # The budget evaluation/sampler.py gives a call on these devices (a CPU estimate: the
  # host's share, as if the fake devices were one host's).
  budget = decode_budget.call_budget_bytes(
      memory_bytes, host_available_bytes=None, host_budget_bytes=0,
      local_devices=mesh.devices.size, calls_at_once=decode_budget.CALLS_IN_FLIGHT)
  if slots:
    slots = max(shards, -(-slots // shards) * shards)
  else:
    slots = decode_budget.slots_per_call(
        model_cfg, max_new_tokens=max_new_tokens, prompt_len=prompt_len,
        num_samples=num_samples, batch_shards=shards, param_bytes_per_device=param_bytes,
        budget_bytes=budget, cpu=memory_bytes is None)
  problems = decode_budget.problems_per_call(
      model_cfg, max_new_tokens=max_new_tokens, prompt_len=prompt_len, prefix_len=0,
      num_samples=num_samples, slots=slots, batch_shards=shards,
      param_bytes_per_device=param_bytes, budget_bytes=budget)
  problems = -(-problems // shards) * shards
  slots = min(slots, -(-problems * num_samples // shards) * shards)
  return {"slots": slots, "problems": problems, "prompt_len": prompt_len,
          "param_bytes_per_device": param_bytes}


def compile_sampler(model_cfg: ModelConfig, mesh: Mesh, shape: dict[str, int],
                    num_samples: int, max_new_tokens: int) -> tuple[Any, float]:
  """(compiled sampling call, seconds to lower and compile)."""
  graphdef, params = sharded_abstract_params(model_cfg, mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  texts = [""] * model_cfg.vocab_size
  stop = build_stop_table(texts, "[DONE]")
  problems, prompt_len = shape["problems"], shape["prompt_len"]
  sample = make_sample_fn(graphdef, SamplingConfig(max_new_tokens=max_new_tokens),
                          eos_id=1, num_samples=num_samples, num_slots=shape["slots"])
  args = (params,
          jax.ShapeDtypeStruct((problems, prompt_len), jnp.int32,
                               sharding=batch_sharding(mesh)),
          jax.ShapeDtypeStruct((problems,), jnp.int32, sharding=batch_sharding(mesh, 1)),
          jax.ShapeDtypeStruct((problems,), jnp.int32, sharding=replicated),
          jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
          _abstract(jax.eval_shape(lambda: jax.random.key(0)), replicated),
          *(_abstract(x, replicated) for x in stop), None)
  started = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = sample.lower(*args).compile()
  return compiled, time.perf_counter() - started


# Custom-call targets of the kernels a compiled program may hold: Pallas on TPU (Mosaic) and on
# GPU (Triton).
_KERNEL_CALLS = {"tpu_custom_call": "pallas (TPU)", "__gpu$xla.gpu.triton": "pallas (Triton)"}


def kernels_in(compiled: Any) -> list[str]:
  """The hand-written kernels (Pallas) a compiled program calls, by kind."""
  text = compiled.as_text()
  return sorted({kind for target, kind in _KERNEL_CALLS.items()
                 if f'custom_call_target="{target}"' in text})


def kv_pool_copies(compiled: Any, model_cfg: ModelConfig, mesh: Mesh, shape: dict[str, int],
                   max_new_tokens: int) -> int | None:
  """Copies of the call's KV pool (decode/kv_pages.py) in the compiled program, besides the
  zeros it starts from: each one passes over the whole cache (on TPU, twice a layer and step
  where the pool's layout and the kernel's differed), so 0 is the only good count. None
  where no array of the pool's shape is in the program."""
  shards = loop_shards(mesh)
  layout = kv_pages.PageLayout.of(
      prefix_len=0, prompt_len=shape["prompt_len"], problems=shape["problems"] // shards,
      slots=shape["slots"] // shards, max_new_tokens=max_new_tokens)
  pool = (rf"\w+\[\d+,{model_cfg.num_layers * layout.pages_per_layer},{layout.page},"
          rf"{model_cfg.head_dim}\]")
  text = compiled.as_text()
  if not re.search(pool, text):  # None, not 0: no pool seen is not no copy seen
    return None
  return len(re.findall(rf"= {pool}\{{[^}}]*\}} copy\((?!%(?:wrapped_)?broadcast)", text))


def decode_step_flops(model_cfg: ModelConfig, slots: int, context: int) -> float:
  """Matmul FLOPs of one decode step of `slots` tokens attending to `context` keys."""
  # A forward pass is 1/3 of training's; flops_per_token counts causal attention over a
  # sequence, on average over half of it.
  per_token = model_cfg.flops_per_token(2 * context) / 3
  return per_token * slots
