"""Every hand-written backward pass against plain autodiff of the same maths: values and
gradients, with packed segments, grouped-query heads and more than one query chunk.

The custom VJPs exist for XLA:CPU's sake (model/layers.py weight_grad explains why); what they
compute must be exactly what autodiff of the textbook formula computes.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from model import attention
from model.decoder import lm_head
from model.layers import _gelu_tanh, _silu, gated_mlp
from training.step import token_nll

RTOL, ATOL = 2e-5, 2e-5


def _normal(key, shape, scale=1.0):
  return scale * jax.random.normal(jax.random.key(key), shape, jnp.float32)


def _assert_same(ours, reference, args, argnums):
  """Equal values, and equal gradients of a random projection of the output."""
  out, ref = ours(*args), reference(*args)
  np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
  cotangent = _normal(99, out.shape)
  loss = lambda f: lambda *a: jnp.sum(f(*a) * cotangent)
  grads = jax.grad(loss(ours), argnums)(*args)
  ref_grads = jax.grad(loss(reference), argnums)(*args)
  for index, got, want in zip(argnums, grads, ref_grads):
    assert np.abs(want).max() > 0, f"argument {index} gets no gradient: the check is vacuous"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"argument {index}")


def test_token_nll_is_optax_cross_entropy():
  logits, targets = _normal(0, (2, 7, 33), 3.0), jax.random.randint(jax.random.key(1), (2, 7),
                                                                     0, 33)
  reference = lambda l: optax.softmax_cross_entropy_with_integer_labels(l, targets)
  _assert_same(lambda l: token_nll(l, targets), reference, (logits,), (0,))


def test_lm_head_is_a_plain_matmul():
  x, head = _normal(0, (2, 5, 16)), _normal(1, (16, 40), 0.2)
  reference = lambda x, h: jnp.einsum("bld,dv->blv", x, h)
  _assert_same(lm_head, reference, (x, head), (0, 1))


@pytest.mark.parametrize("activation", [_silu, _gelu_tanh])
def test_gated_mlp_is_down_of_act_gate_times_up(activation):
  x = _normal(0, (2, 6, 16))
  gate, up, down = _normal(1, (16, 24), 0.3), _normal(2, (16, 24), 0.3), _normal(3, (24, 16), 0.3)
  reference = lambda x, g, u, d: (activation(x @ g) * (x @ u)) @ d
  _assert_same(lambda *a: gated_mlp(activation, *a), reference, (x, gate, up, down),
               (0, 1, 2, 3))


def _reference_attention(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL):
  """Textbook causal, same-segment softmax attention, key/value heads repeated for GQA."""
  group = q_BxNxLxH.shape[1] // k_BxKxLxH.shape[1]
  k = jnp.repeat(k_BxKxLxH, group, axis=1)
  v = jnp.repeat(v_BxKxLxH, group, axis=1)
  scores = jnp.einsum("bnqh,bnkh->bnqk", q_BxNxLxH, k) / np.sqrt(q_BxNxLxH.shape[-1])
  length = q_BxNxLxH.shape[2]
  causal = jnp.tril(jnp.ones((length, length), bool))
  same = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
  scores = jnp.where((causal & same)[:, None], scores, -jnp.inf)
  return jnp.einsum("bnqk,bnkh->bnqh", jax.nn.softmax(scores, axis=-1), v)


@pytest.mark.parametrize("length", [9, attention.QUERY_CHUNK + 37])  # one and two chunks
def test_attention_core_is_masked_softmax_attention(length):
  batch, num_heads, num_kv_heads, head_dim = 2, 4, 2, 8
  q = _normal(0, (batch, num_heads, length, head_dim))
  k = _normal(1, (batch, num_kv_heads, length, head_dim))
  v = _normal(2, (batch, num_kv_heads, length, head_dim))
  # Row 0: three packed documents; row 1: one document then padding (segment 0).
  cut = length // 3
  segments = np.ones((batch, length), np.int32)
  segments[0, cut:2 * cut], segments[0, 2 * cut:] = 2, 3
  segments[1, length - 4:] = 0
  segments = jnp.asarray(segments)
  _assert_same(lambda q, k, v: attention.attention_core(q, k, v, segments),
               lambda q, k, v: _reference_attention(q, k, v, segments), (q, k, v), (0, 1, 2))
