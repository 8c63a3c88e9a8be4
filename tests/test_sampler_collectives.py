"""Ahead-of-time check of what the slot sampler's decode loop sends between devices on a mesh
that is not purely data-parallel (there one loop is partitioned by XLA: model/slot_sampling.py).

Compiled for 8 CPU devices as (data 2, fsdp 4): every step may all-gather the fsdp-sharded
weights (that is what fsdp means; sampling wants mesh.tensor, see README) and exchange the
slots' few integers, but nothing else: no piece of the prompt cache, of a problem's prefill
logits or of its prompt mask may cross devices inside the loop. (Before the lanes carried the
prompt cache's sharding, every step ran an all-to-all and collective-permutes of the window's
keys and values, and all-gathered the call's prefill logits.)
"""
import re

import jax
import jax.numpy as jnp
import numpy as np

from model.config import ModelConfig
from model.decoder import sharded_abstract_params
from model.sampling import SamplingConfig, left_pad
from model.sharding import batch_sharding, make_mesh
from model.slot_sampling import make_sample_fn
from model.stop_matcher import build_stop_table

# Sizes chosen so that no activation has the element count of a parameter.
CFG = ModelConfig(vocab_size=384, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=16, d_ff=128)
_COLLECTIVE = re.compile(r"= (\S+\[[^\]]*\][^ ]*|\([^)]*\)) (all-gather|all-reduce|all-to-all|"
                         r"collective-permute|reduce-scatter)(-start)?\(")


def _loop_collectives(text: str) -> list[tuple[str, str, str]]:
  """(kind, result type, op name) of each collective the loop body runs."""
  found = []
  for line in text.splitlines():
    match = _COLLECTIVE.search(line)
    name = re.search(r'op_name="([^"]*)"', line)
    if match and name and "/while/body/" in name.group(1):
      found.append((match.group(2), match.group(1), name.group(1).split("/while/body/")[-1]))
  return found


def _elements(hlo_type: str) -> int:
  dims = re.search(r"\[([^\]]*)\]", hlo_type).group(1)
  return int(np.prod([int(d) for d in dims.split(",") if d]))


def test_the_decode_loop_moves_only_weights_and_slot_indices():
  mesh = make_mesh(2, 4, 1)
  graphdef, abstract = sharded_abstract_params(CFG, mesh)
  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        abstract)
  texts = [""] * CFG.vocab_size
  texts[50] = "[DONE]"
  stop = build_stop_table(texts, "[DONE]")
  problems = 8
  tokens, lengths = left_pad([[3] * 20] * problems, 32)
  sample = make_sample_fn(graphdef, SamplingConfig(max_new_tokens=64, temperature=0.5),
                          eos_id=1, num_samples=4, num_slots=16)
  with jax.set_mesh(mesh):
    compiled = sample.lower(
        params, jax.device_put(tokens, batch_sharding(mesh)),
        jax.device_put(lengths, batch_sharding(mesh, 1)), jnp.arange(problems, dtype=jnp.int32),
        jnp.int32(problems), jax.random.key(0), *map(jnp.asarray, stop),
        jnp.full((64,), 5, jnp.int32)).compile()
  moved = _loop_collectives(compiled.as_text())
  assert moved, "no collectives found: the check no longer sees the loop"
  # A layer's weights are sliced from the stacked [layers, ...] ones.
  weight_sizes = {int(np.prod(x.shape[skip:])) for x in jax.tree.leaves(abstract)
                  for skip in (0, 1)}
  for kind, hlo_type, op in moved:
    assert kind not in ("all-to-all", "collective-permute"), (kind, hlo_type, op)
    if hlo_type.startswith(("f32", "(f32")):
      # Floats move only as whole weights gathered from their fsdp shards.
      assert kind == "all-gather" and _elements(hlo_type) in weight_sizes, (kind, hlo_type, op)
