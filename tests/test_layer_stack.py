"""Stacked layers: init values of the per-layer layout, one layer sliced back out, and
checkpoints written before the layers were stacked still load (model/layer_stack.py)."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import base
from model import layer_stack, run_dir
from model.config import ModelConfig
from model.decoder import Block, Decoder, forward, init_params, sharded_abstract_params
from model.sharding import make_mesh
from training import checkpointing
from training.data_checkpoint import ShardedIterator
from training.optimizer import make_optimizer
from training.state import make_layout

CFG = ModelConfig(vocab_size=64, d_model=16, num_layers=3, num_heads=2, num_kv_heads=1,
                  head_dim=8, d_ff=32)


def _per_layer(params):
  """The layout checkpoints had before the layers were stacked: {"blocks": {0: ..., 1: ...}}."""
  blocks = params["blocks"]
  num_layers = jax.tree.leaves(blocks)[0].shape[0]
  layers = {i: jax.tree.map(lambda x, i=i: np.asarray(x[i]), blocks) for i in range(num_layers)}
  return {**{k: v for k, v in params.items() if k != "blocks"}, "blocks": layers}


def test_stacked_init_equals_layer_by_layer_init():
  """Layer i of the stack has the values a Block built i-th from the same stream has, so the
  golden losses (and old runs' seeds) keep their meaning."""
  rngs = nnx.Rngs(5)
  rngs.params()  # the embedding is drawn first
  blocks = [nnx.to_pure_dict(nnx.state(Block(CFG, rngs))) for _ in range(CFG.num_layers)]
  stacked = init_params(CFG, 5)["blocks"]
  for i, block in enumerate(blocks):
    jax.tree.map(lambda want, got, i=i: np.testing.assert_array_equal(got[i], want), block,
                 stacked)
  assert not np.array_equal(stacked["mlp"]["up_DxF"][0], stacked["mlp"]["up_DxF"][1])


def test_layer_of_slices_every_parameter():
  model = Decoder(CFG, nnx.Rngs(0))
  layer = layer_stack.layer_of(model.blocks, 2)
  np.testing.assert_array_equal(layer.attn.q_DxNxH.value, model.blocks.attn.q_DxNxH.value[2])
  np.testing.assert_array_equal(layer.mlp_norm.scale.value, model.blocks.mlp_norm.scale.value[2])


def test_checkpoints_in_the_per_layer_layout_load_stacked_and_sharded(tmp_path):
  cfg = CFG.replace(num_layers=11)  # layer "10" sorts before "2" as a string
  params = jax.tree.map(np.asarray, init_params(cfg, 1))
  old = _per_layer(params)
  assert layer_stack.is_per_layer(old) and not layer_stack.is_per_layer(params)
  run_dir.save_params_checkpoint(str(tmp_path), old, cfg)
  mesh = make_mesh(2, 2, 2)
  graphdef, abstract = sharded_abstract_params(cfg, mesh)
  loaded = run_dir.load_params(str(tmp_path), abstract)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded), params)
  jax.tree.map(lambda x, want: assert_sharding(x, want), loaded, abstract)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 9)))
  np.testing.assert_allclose(np.asarray(forward(graphdef, loaded, tokens)),
                             np.asarray(forward(graphdef, params, tokens)), rtol=1e-6, atol=1e-6)


def assert_sharding(x, want):
  assert x.sharding == want.sharding, (x.sharding, want.sharding)


def test_a_per_layer_checkpoint_of_another_shape_is_refused_by_name(tmp_path):
  old = _per_layer(jax.tree.map(np.asarray, init_params(CFG, 1)))
  run_dir.save_params_checkpoint(str(tmp_path), old, CFG)
  _, abstract = sharded_abstract_params(CFG.replace(d_ff=48), make_mesh(8, 1, 1))
  with pytest.raises(run_dir.CheckpointError, match=r"\['blocks'\]\['0'\]\['mlp'\]\['up_DxF'\]"):
    run_dir.load_params(str(tmp_path), abstract)


def test_optimizer_states_convert_through_namedtuples():
  """The helpers also reach parameter-shaped trees inside optax's namedtuple states."""
  State = collections.namedtuple("State", ["count", "mu"])
  stacked = {"blocks": {"w": np.arange(12.0).reshape(3, 4)}, "embed": np.ones(2)}
  old = State(np.int32(1), _per_layer_like(stacked))
  new = layer_stack.stack_per_layer(old)
  assert isinstance(new, State) and new.count == 1
  np.testing.assert_array_equal(new.mu["blocks"]["w"], stacked["blocks"]["w"])
  target = layer_stack.per_layer_target(
      State(jax.ShapeDtypeStruct((), jnp.int32), jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), stacked)))
  assert target.mu["blocks"][2]["w"].shape == (4,)


def _per_layer_like(tree):
  return {"embed": tree["embed"],
          "blocks": {i: {"w": tree["blocks"]["w"][i]} for i in range(3)}}


class _FakeDataIterator:
  """Stands in for the grain iterator: a state that a checkpoint saves and restores."""

  def __init__(self, position: int):
    self.state = {"parents": [{"position": position}]}

  def get_state(self):
    return self.state

  def set_state(self, state):
    self.state = state

  def __next__(self):  # a restore draws one element to check the position, then rewinds
    self.state = {"parents": [{"position": self.state["parents"][0]["position"] + 1}]}
    return {}


def test_train_checkpoints_in_the_per_layer_layout_resume_stacked(tmp_path):
  """A run checkpointed before the layers were stacked resumes: parameters AND the optimizer's
  per-layer moments come back stacked, in the layout's shardings."""
  cfg = CFG.replace(num_layers=11)
  mesh = make_mesh(2, 2, 2)
  layout = make_layout(cfg, make_optimizer(base.get_config().optimizer, 10)[0], mesh)
  rng = np.random.default_rng(0)
  # Distinct values in every leaf (Adam's moments start at zero, which would hide a mix-up).
  state = jax.tree.map(lambda x: np.asarray(rng.normal(size=x.shape), x.dtype)
                       if jnp.issubdtype(x.dtype, jnp.floating) else np.full(x.shape, 3, x.dtype),
                       layout.abstract_state)
  old = layer_stack._map_blocks(state, lambda blocks: {  # pylint: disable=protected-access
      i: jax.tree.map(lambda x, i=i: x[i], blocks) for i in range(cfg.num_layers)})
  assert layer_stack.is_per_layer(old["params"])
  assert layer_stack.is_per_layer(old["opt_state"][1][0].mu)  # Adam's first moment
  manager = checkpointing.make_manager(str(tmp_path), keep=2, async_save=False)
  checkpointing.save(manager, 3, old, ShardedIterator(_FakeDataIterator(7), [0], 1), cfg)
  manager.wait_until_finished()

  data_iter = ShardedIterator(_FakeDataIterator(0), [0], 1)
  restored = checkpointing.restore(manager, 3, layout.abstract_state, data_iter)
  jax.tree.map(lambda got, want: np.testing.assert_array_equal(np.asarray(got), want),
               restored, state)
  jax.tree.map(assert_sharding, restored, layout.abstract_state)
  assert data_iter.iterator.state == {"parents": [{"position": 7}]}
