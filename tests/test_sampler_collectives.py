"""Ahead-of-time check of what the decode engine's loop sends between devices.

Compiled for 8 CPU devices as (data 2, fsdp 4): each of the 8 batch shards runs its own loop
over its own problems, slots and pages with the weights gathered whole once, before the loop
(decode/engine.py), so nothing at all may cross devices inside the loop: no weight, no page,
no slot index. With tensor parallelism (data 2, tensor 4) the loop moves a shard's
activations between its tensor devices and the shards' one "still busy" flag, but no weight
and no piece of the cache (no all-to-all, no collective-permute).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np

from decode.engine import make_sample_fn
from decode.prompt_rows import right_pad
from decode.stop_matcher import build_stop_table
from decode.token_choice import SamplingConfig
from model.config import ModelConfig
from model.decoder import sharded_abstract_params
from model.sharding import batch_sharding, make_mesh

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
    if match and name and "decode/while/body/" in name.group(1):
      found.append((match.group(2), match.group(1),
                    name.group(1).split("decode/while/body/")[-1]))
  return found


def _elements(hlo_type: str) -> int:
  dims = re.search(r"\[([^\]]*)\]", hlo_type).group(1)
  return int(np.prod([int(d) for d in dims.split(",") if d]))


def _compiled_loop(mesh):
  graphdef, abstract = sharded_abstract_params(CFG, mesh)
  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        abstract)
  texts = [""] * CFG.vocab_size
  texts[50] = "[DONE]"
  stop = build_stop_table(texts, "[DONE]")
  problems = 8
  tokens, lengths = right_pad([[3] * 20] * problems, 32)
  sample = make_sample_fn(graphdef, SamplingConfig(max_new_tokens=64, temperature=0.5),
                          eos_id=1, num_samples=4, num_slots=16)
  with jax.set_mesh(mesh):
    compiled = sample.lower(
        params, jax.device_put(tokens, batch_sharding(mesh)),
        jax.device_put(lengths, batch_sharding(mesh, 1)), jnp.arange(problems, dtype=jnp.int32),
        jnp.int32(problems), jax.random.key(0), *map(jnp.asarray, stop),
        jnp.full((64,), 5, jnp.int32)).compile()
  text = compiled.as_text()
  assert "decode/while/body/" in text, "the check no longer sees the decode loop"
  return abstract, _loop_collectives(text)


def test_batch_shards_loops_move_nothing():
  _, moved = _compiled_loop(make_mesh(2, 4, 1))
  assert moved == []


def test_a_tensor_parallel_loop_moves_no_page_and_no_weight():
  abstract, moved = _compiled_loop(make_mesh(2, 1, 4))
  assert moved, "no collectives found: the check no longer sees the tensor-parallel loop"
  weight_sizes = {int(np.prod(x.shape[skip:])) for x in jax.tree.leaves(abstract)
                  for skip in (0, 1)}
  for kind, hlo_type, op in moved:
    assert kind not in ("all-to-all", "collective-permute"), (kind, hlo_type, op)
    if hlo_type.startswith(("f32", "(f32")):
      assert _elements(hlo_type) not in weight_sizes, (kind, hlo_type, op)
      assert "kv_pages" not in op, (kind, hlo_type, op)
