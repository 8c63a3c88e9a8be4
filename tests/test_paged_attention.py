"""Decode attention over a paged KV cache (`paged_attention` of every kernel set,
model/kernels/): each set equals the xla reference, and the reference equals dense softmax
attention over each sequence's gathered keys, on page tables shaped like the engine's (a
prefix's pages in every row, a problem's prompt pages in its samples' rows, pages of their
own after), ragged lengths from 1 to the full table, grouped-query and plain heads.

The Pallas sets run their very kernels here, interpreted on the CPU; compiled for a TPU v5e
and an H100 on compile-only devices (tests/test_plan_targets.py's compilers), the Pallas
custom call must be in the program.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import kernels
from model.kernels import xla

RTOL, ATOL = 2e-5, 2e-5


def _paged_case(seed, num_seqs=6, num_heads=4, num_kv_heads=2, head_dim=32, page_size=8,
                pages_per_seq=5, shared_pages=0, group=2):
  """q, k_pages, v_pages, lengths, page_table. Rows come in groups of `group` (a problem's
  samples) sharing their first pages after the `shared_pages` prefix; the rest are their own.
  The pool holds spare pages, and the table's entries past a row's length point anywhere."""
  rng = np.random.default_rng(seed)
  prompt_pages = 2
  num_groups = num_seqs // group
  num_pages = shared_pages + num_groups * prompt_pages + num_seqs * pages_per_seq + 3
  order = rng.permutation(num_pages)  # pages scattered over the pool
  prefix, rest = order[:shared_pages], order[shared_pages:]
  prompts = rest[:num_groups * prompt_pages].reshape(num_groups, prompt_pages)
  own = rest[num_groups * prompt_pages:][:num_seqs * pages_per_seq].reshape(num_seqs, -1)
  table = np.concatenate([np.broadcast_to(prefix, (num_seqs, shared_pages)),
                          np.repeat(prompts, group, axis=0), own], axis=1)[:, :pages_per_seq]
  span = pages_per_seq * page_size
  lengths = rng.integers(shared_pages * page_size + 1, span + 1, num_seqs)
  lengths[0], lengths[-1] = 1, span  # one token, and a full table
  normal = lambda shape: rng.normal(size=shape).astype(np.float32)
  pool = (num_kv_heads, num_pages, page_size, head_dim)
  return (normal((num_seqs, num_heads, head_dim)) * head_dim ** -0.5, normal(pool), normal(pool),
          lengths.astype(np.int32), table.astype(np.int32))


def _dense_numpy(q, k_pages, v_pages, lengths, table):
  """Each sequence's keys/values gathered position by position, then textbook attention."""
  num_heads, (num_kv_heads, _, page_size, _) = q.shape[1], k_pages.shape
  out = np.zeros_like(q)
  for s, length in enumerate(lengths):
    pages, offsets = table[s, np.arange(length) // page_size], np.arange(length) % page_size
    for n in range(num_heads):
      kv = n // (num_heads // num_kv_heads)
      k, v = k_pages[kv, pages, offsets], v_pages[kv, pages, offsets]  # [length, H]
      scores = k.astype(np.float64) @ q[s, n]
      weights = np.exp(scores - scores.max())
      out[s, n] = (weights / weights.sum()) @ v
  return out


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 2), (4, 4)], ids=["gqa", "mha"])
@pytest.mark.parametrize("shared_pages", [0, 2])
def test_the_reference_is_dense_attention_over_each_sequences_pages(num_heads, num_kv_heads,
                                                                    shared_pages):
  case = _paged_case(0, num_heads=num_heads, num_kv_heads=num_kv_heads,
                     shared_pages=shared_pages)
  out = jax.jit(xla.paged_attention)(*case)
  np.testing.assert_allclose(out, _dense_numpy(*case), rtol=RTOL, atol=ATOL)


def test_pages_past_a_sequences_length_do_not_matter():
  q, k_pages, v_pages, lengths, table = _paged_case(1)
  other_table = table.copy()
  for s, length in enumerate(lengths):
    first_unused = -(-length // k_pages.shape[2])
    other_table[s, first_unused:] = (table[s, first_unused:] + 1) % k_pages.shape[1]
  out = jax.jit(xla.paged_attention)(q, k_pages, v_pages, lengths, table)
  np.testing.assert_array_equal(
      out, jax.jit(xla.paged_attention)(q, k_pages, v_pages, lengths, other_table))


def _set_equals_reference(kernel_set, case, shared_pages, rtol=RTOL, atol=ATOL, round_kv=False):
  paged = kernels.kernel_set(kernel_set).paged_attention
  out = jax.jit(lambda *a: paged(*a, shared_pages=shared_pages))(*case)
  q, k_pages, v_pages, lengths, table = case
  if round_kv:  # the kernel reads K/V as bfloat16: the same rounding on the reference's input
    k_pages, v_pages = (np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
                        for x in (k_pages, v_pages))
  reference = jax.jit(xla.paged_attention)(q, k_pages, v_pages, lengths, table)
  assert out.dtype == q.dtype
  np.testing.assert_allclose(out, reference, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shared_pages", [0, 2])
def test_the_cpu_set_equals_the_reference(shared_pages):
  _set_equals_reference("cpu", _paged_case(4, shared_pages=shared_pages), shared_pages)


def _uses_pallas(kernel_set, case) -> bool:
  paged = kernels.kernel_set(kernel_set).paged_attention
  return "pallas_call" in str(jax.make_jaxpr(paged)(*case))


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 2), (4, 4)], ids=["gqa", "mha"])
@pytest.mark.parametrize("shared_pages", [0, 2])
def test_the_tpu_kernel_equals_the_reference(num_heads, num_kv_heads, shared_pages):
  # head_dim 128: the kernel's [G, H] tiles need whole 128-lane rows
  case = _paged_case(2, num_seqs=4, num_heads=num_heads, num_kv_heads=num_kv_heads,
                     head_dim=128, shared_pages=shared_pages, pages_per_seq=4)
  assert _uses_pallas("tpu", case)
  _set_equals_reference("tpu", case, shared_pages, round_kv=True)


def test_the_tpu_set_takes_the_reference_for_head_dims_the_kernel_cannot_tile():
  case = _paged_case(3, head_dim=32)
  assert not _uses_pallas("tpu", case)
  _set_equals_reference("tpu", case, 0)
