"""Every kernel of every kernel set (model/kernels/) against plain autodiff of the textbook
maths: values and gradients, with packed segments, grouped-query heads and (for the cpu set's
chunked attention) more than one query chunk.

The cpu set's hand-written backward passes exist for XLA:CPU's sake (model/kernels/cpu.py
says why) and the xla set is what accelerators run; both must compute exactly what autodiff
of the formula computes.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from model import kernels
from model.kernels import cpu, tpu, xla
from model.layers import _gelu_tanh, _silu

RTOL, ATOL = 2e-5, 2e-5
KERNEL_SETS = ["cpu", "xla", "tpu"]


def _normal(key, shape, scale=1.0):
  return scale * jax.random.normal(jax.random.key(key), shape, jnp.float32)


def _assert_same(ours, reference, args, argnums):
  """Equal values, and equal gradients of a random projection of the output (jitted: one
  compilation each instead of one per op)."""
  out, ref = jax.jit(ours)(*args), jax.jit(reference)(*args)
  np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
  cotangent = _normal(99, out.shape)
  loss = lambda f: lambda *a: jnp.sum(f(*a) * cotangent)
  grads = jax.jit(jax.grad(loss(ours), argnums))(*args)
  ref_grads = jax.jit(jax.grad(loss(reference), argnums))(*args)
  for index, got, want in zip(argnums, grads, ref_grads):
    assert np.abs(want).max() > 0, f"argument {index} gets no gradient: the check is vacuous"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"argument {index}")


def test_auto_picks_the_kernels_of_the_platform():
  assert kernels.resolve("auto", "cpu") == "cpu" and kernels.resolve("auto", "tpu") == "tpu"
  assert kernels.resolve("auto", "gpu") == kernels.resolve("auto", "cuda") == "gpu"
  assert kernels.resolve("auto", "rocm") == "xla"
  assert kernels.resolve("xla", "cpu") == "xla" and kernels.resolve("cpu", "gpu") == "cpu"
  assert kernels.kernel_set("auto") is cpu  # this suite runs on CPU
  with pytest.raises(ValueError, match="kernels must be one of"):
    kernels.resolve("pallas")


@pytest.mark.parametrize("kernel_set", KERNEL_SETS)
def test_token_nll_is_optax_cross_entropy(kernel_set):
  logits, targets = _normal(0, (2, 7, 33), 3.0), jax.random.randint(jax.random.key(1), (2, 7),
                                                                     0, 33)
  reference = lambda l: optax.softmax_cross_entropy_with_integer_labels(l, targets)
  token_nll = kernels.kernel_set(kernel_set).token_nll
  _assert_same(lambda l: token_nll(l, targets), reference, (logits,), (0,))


@pytest.mark.parametrize("kernel_set", KERNEL_SETS)
def test_lm_head_is_a_plain_matmul(kernel_set):
  x, head = _normal(0, (2, 5, 16)), _normal(1, (16, 40), 0.2)
  reference = lambda x, h: jnp.einsum("bld,dv->blv", x, h)
  _assert_same(kernels.kernel_set(kernel_set).lm_head, reference, (x, head), (0, 1))


@pytest.mark.parametrize("kernel_set", KERNEL_SETS)
@pytest.mark.parametrize("activation", [_silu, _gelu_tanh])
def test_gated_mlp_is_down_of_act_gate_times_up(kernel_set, activation):
  x = _normal(0, (2, 6, 16))
  gate, up, down = _normal(1, (16, 24), 0.3), _normal(2, (16, 24), 0.3), _normal(3, (24, 16), 0.3)
  reference = lambda x, g, u, d: (activation(x @ g) * (x @ u)) @ d
  gated_mlp = kernels.kernel_set(kernel_set).gated_mlp
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


@pytest.mark.parametrize("kernel_set", KERNEL_SETS)
# One and two cpu chunks; three tpu splash blocks (lengths no block divides take the xla
# attention in the tpu set).
@pytest.mark.parametrize("length", [9, cpu.QUERY_CHUNK + 37, 3 * tpu.SPLASH_BLOCKS[-1]])
def test_attention_is_masked_softmax_attention(kernel_set, length):
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
  attention = kernels.kernel_set(kernel_set).attention
  _assert_same(lambda q, k, v: attention(q, k, v, segments),
               lambda q, k, v: _reference_attention(q, k, v, segments), (q, k, v), (0, 1, 2))


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (1, 2, 4)])
def test_tpu_splash_attention_on_a_mesh_is_the_xla_sets(mesh_shape):
  """The tpu set's splash kernel (Pallas interpret mode on this CPU) under its shard_map
  over a (data, fsdp, tensor) mesh: rows split over data x fsdp, heads over tensor; with 2 kv
  heads on tensor=4 each device needs kv heads it does not hold."""
  from model.sharding import make_mesh  # pylint: disable=g-import-not-at-top
  batch, num_heads, num_kv_heads, length, head_dim = 4, 8, 2, 256, 16
  q = _normal(0, (batch, num_heads, length, head_dim))
  k = _normal(1, (batch, num_kv_heads, length, head_dim))
  v = _normal(2, (batch, num_kv_heads, length, head_dim))
  segments = np.ones((batch, length), np.int32)
  segments[0, 100:], segments[1, 30:200], segments[2, 250:] = 2, 2, 0
  segments = jnp.asarray(segments)
  with jax.set_mesh(make_mesh(*mesh_shape)):
    assert kernels.resolve("auto") == "cpu"  # the mesh's devices are this host's CPUs
    _assert_same(lambda q, k, v: tpu.attention(q, k, v, segments),
                 lambda q, k, v: xla.attention(q, k, v, segments), (q, k, v),
                 (0, 1, 2))
