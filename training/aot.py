"""The train step compiled ahead of time from abstract arrays, and what it needs per device.

`jax.jit(step).lower(abstract state, abstract batch).compile()`: ShapeDtypeStructs carrying
their shardings stand in for the arrays, so nothing is allocated, and XLA's memory analysis
of the compiled program says what one device needs. training/loop.py runs `check_fits`
before its first step (the compiled executable is cached, so the first real step does not
compile again); training/plan.py reports the same numbers for any config and mesh.
"""
from __future__ import annotations

import time
from typing import Any

import jax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from data import packing
from data.pipeline import BATCH_KEYS
from model import sharding, targets
from training.state import StateLayout
from training.step import make_train_step

GIB = 2 ** 30


def abstract_batch(batch_size: int, seq_len: int, sharding: NamedSharding
                   ) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch the step is fed (data/pipeline.py's contract), as sharded abstracts."""
  # The dtypes are the pipeline's own: one empty packed row through its batch builder.
  empty = packing.rows_to_model_batch({
      "tokens": [[0]], "target_mask": [[0]], "tokens_segment_ids": [[0]],
      "tokens_positions": [[0]]})
  return {k: jax.ShapeDtypeStruct((batch_size, seq_len), empty[k].dtype, sharding=sharding)
          for k in BATCH_KEYS}


def jit_train_step(layout: StateLayout, schedule, grad_accum_steps: int,
                   data_sharding: NamedSharding):
  """The jitted train step exactly as training/loop.py runs it (donated state)."""
  replicated = NamedSharding(layout.mesh, PartitionSpec())
  with jax.set_mesh(layout.mesh):
    return jax.jit(make_train_step(layout.graphdef, layout.tx, schedule, grad_accum_steps),
                   in_shardings=(layout.shardings, data_sharding),
                   out_shardings=(layout.shardings, replicated), donate_argnums=0)


def compile_step(train_step, layout: StateLayout, batch_size: int, seq_len: int,
                 data_sharding: NamedSharding) -> tuple[Any, float]:
  """(compiled step, seconds to lower and compile) from abstract state and batch."""
  started = time.perf_counter()
  with jax.set_mesh(layout.mesh):
    compiled = train_step.lower(layout.abstract_state,
                                abstract_batch(batch_size, seq_len, data_sharding)).compile()
  return compiled, time.perf_counter() - started


def bytes_per_device(compiled) -> dict[str, int]:
  """XLA's memory analysis of one device's program. The donated state's outputs reuse its
  argument buffers (`aliased`), so the peak is arguments + temporaries + outputs - aliased."""
  stats = compiled.memory_analysis()
  result = {"arguments": int(stats.argument_size_in_bytes),
            "temporaries": int(stats.temp_size_in_bytes),
            "outputs": int(stats.output_size_in_bytes),
            "aliased": int(stats.alias_size_in_bytes)}
  result["total"] = (result["arguments"] + result["temporaries"] + result["outputs"] -
                     result["aliased"])
  return result


def device_memory_bytes(configured_gib: float) -> int | None:
  """The budget of one device: the configured GiB, else what JAX reports for the device
  (None where it reports nothing, e.g. on CPU)."""
  if configured_gib:
    return int(configured_gib * GIB)
  return sharding.device_memory_bytes()


class DoesNotFit(ValueError):
  """The train step needs more memory per device than the device has."""


def check_fits(train_step, layout: StateLayout, batch_size: int, seq_len: int,
               data_sharding: NamedSharding, device_memory_gib: float) -> dict[str, int] | None:
  """Compiles the step ahead of time and refuses it (DoesNotFit, with the numbers) if one
  device's memory cannot hold it: on a TPU the compiler's own refusal (RESOURCE_EXHAUSTED),
  elsewhere the compiled step's bytes against the device's memory. The compiled executable
  is cached, so the first real step does not compile again. Returns the bytes per device, or
  None where no budget is known."""
  budget = device_memory_bytes(device_memory_gib)
  if budget is None:
    logging.info("Memory check skipped: the devices report no memory limit and "
                 "config.device_memory_gib is 0")
    return None
  try:
    compiled, compile_s = compile_step(train_step, layout, batch_size, seq_len, data_sharding)
  except Exception as e:  # pylint: disable=broad-except
    # A TPU's compiler enforces its HBM itself: its refusal is the verdict, with its numbers.
    if not targets.is_out_of_memory(e):
      raise
    raise DoesNotFit(
        f"The train step does not fit in device memory: the compiler says "
        f"{_first_line_with(str(e), 'RESOURCE_EXHAUSTED')}. {_ADVICE}") from None
  used = bytes_per_device(compiled)
  logging.info("Train step compiled in %.1f s; per device it needs %.2f GiB of %.2f GiB "
               "(arguments %.2f, temporaries %.2f, outputs %.2f, aliased %.2f GiB)",
               compile_s, used["total"] / GIB, budget / GIB, used["arguments"] / GIB,
               used["temporaries"] / GIB, used["outputs"] / GIB, used["aliased"] / GIB)
  if used["total"] > budget:
    raise DoesNotFit(
        f"The train step needs {used['total'] / GIB:.2f} GiB per device, more than the "
        f"{budget / GIB:.2f} GiB available (arguments {used['arguments'] / GIB:.2f}, "
        f"temporaries {used['temporaries'] / GIB:.2f}, outputs {used['outputs'] / GIB:.2f}, "
        f"aliased {used['aliased'] / GIB:.2f} GiB). {_ADVICE} (config.device_memory_gib "
        "overrides the budget.)")
  return used


_ADVICE = ("Shard more (config.mesh.fsdp / tensor), lower batch_size or raise "
           "grad_accum_steps, or set --config.model_overrides.remat=full; `python -m "
           "training.plan --target=...` tries settings without running them.")


def _first_line_with(text: str, needle: str) -> str:
  return next((l.strip() for l in text.splitlines() if needle in l), text.strip()[:500])
