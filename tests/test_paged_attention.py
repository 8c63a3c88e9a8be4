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
from jax.sharding import NamedSharding, PartitionSpec

from model import kernels, targets
from model.kernels import gpu, tpu, xla
from model.kernels.page_groups import PageGroups
from model.sharding import make_mesh

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
  lengths = rng.integers(min(shared_pages * page_size + 1, span), span + 1, num_seqs)
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


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 2), (4, 4)], ids=["gqa", "mha"])
@pytest.mark.parametrize("shared_pages", [0, 2, 5], ids=["no_prefix", "prefix", "all_prefix"])
def test_the_cpu_set_equals_the_reference(num_heads, num_kv_heads, shared_pages):
  """The cpu set scores the shared prefix apart (also for a row shorter than it: length 1)."""
  case = _paged_case(4, num_heads=num_heads, num_kv_heads=num_kv_heads, shared_pages=shared_pages)
  _set_equals_reference("cpu", case, shared_pages)


def _groups_of(case, group, shared_pages, seed):
  """PageGroups of a _paged_case: rows of `group` share its prompt pages (the two table columns
  after the prefix); each row's hint claims 0, 1 or 2 of them (the rest it reads as its own)."""
  table = case[4]
  rows = np.arange(table.shape[0])
  first_rows = rows[::group]
  pages = np.random.default_rng(seed).integers(0, 3, table.shape[0])
  return PageGroups(jnp.asarray(rows // group, jnp.int32),
                    jnp.asarray(table[first_rows, shared_pages:shared_pages + 2], jnp.int32),
                    jnp.asarray(pages, jnp.int32))


@pytest.mark.parametrize("group", [2, 1], ids=["few_groups", "more_groups_than_dense"])
@pytest.mark.parametrize("shared_pages", [0, 2])
def test_the_cpu_set_with_page_groups_equals_the_reference(group, shared_pages):
  """Groups' pages scored once for their rows (3 groups), or read row by row past
  MAX_DENSE_GROUPS (6); with a prefix, and rows of length 1 and of the whole table."""
  case = _paged_case(5, pages_per_seq=6, shared_pages=shared_pages, group=group)
  groups = _groups_of(case, group, shared_pages, seed=5)
  paged = kernels.kernel_set("cpu").paged_attention
  out = jax.jit(lambda *a: paged(*a, shared_pages=shared_pages, groups=groups))(*case)
  np.testing.assert_allclose(out, jax.jit(xla.paged_attention)(*case), rtol=RTOL, atol=ATOL)


def test_the_cpu_set_skips_the_chunks_past_every_rows_length():
  """Rows all within the table's first PAGE_CHUNK pages: the pages after them are never read
  (NaN there would reach the output through the values' 0 * NaN)."""
  chunk = kernels.cpu.PAGE_CHUNK
  q, k_pages, v_pages, lengths, table = _paged_case(7, pages_per_seq=chunk + 3)
  lengths = np.minimum(lengths, chunk * k_pages.shape[2]).astype(np.int32)
  k_pages, v_pages = k_pages.copy(), v_pages.copy()
  k_pages[:, table[:, chunk:].ravel()] = np.nan
  v_pages[:, table[:, chunk:].ravel()] = np.nan
  case = (q, k_pages, v_pages, lengths, table)
  out = jax.jit(kernels.kernel_set("cpu").paged_attention)(*case)
  np.testing.assert_allclose(out, _dense_numpy(*case), rtol=RTOL, atol=ATOL)


def test_the_cpu_set_reads_a_groups_pages_where_page_groups_says():
  """Proof the dense path is taken: a hint naming other pages changes the output."""
  case = _paged_case(6, pages_per_seq=6, group=2)
  groups = _groups_of(case, 2, 0, seed=6)._replace(pages_S=jnp.full((6,), 2, jnp.int32))
  wrong = groups._replace(table_GxW=groups.table_GxW[::-1])
  paged = kernels.kernel_set("cpu").paged_attention
  right_out, wrong_out = (jax.jit(lambda *a, g=g: paged(*a, groups=g))(*case)
                          for g in (groups, wrong))
  np.testing.assert_allclose(right_out, jax.jit(xla.paged_attention)(*case), rtol=RTOL,
                             atol=ATOL)
  assert not np.allclose(wrong_out, right_out, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kernel_set", ["xla", "cpu", "gpu"])
def test_bfloat16_in_bfloat16_out_with_float32_softmax(kernel_set):
  case = _paged_case(9, shared_pages=2)
  as_bf16 = [jnp.asarray(x, jnp.bfloat16) for x in case[:3]]
  paged = kernels.kernel_set(kernel_set).paged_attention
  out = jax.jit(lambda *a: paged(*a, shared_pages=2))(*as_bf16, *case[3:])
  assert out.dtype == jnp.bfloat16
  rounded = [np.asarray(x.astype(jnp.float32)) for x in as_bf16]
  np.testing.assert_allclose(out.astype(jnp.float32), _dense_numpy(*rounded, *case[3:]),
                             rtol=1e-2, atol=1e-2)


def _uses_pallas(kernel_set, case) -> bool:
  paged = kernels.kernel_set(kernel_set).paged_attention
  return "pallas_call" in str(jax.make_jaxpr(paged)(*case))


# The Pallas kernels ignore shared_pages: one case with a shared prefix, one without.
@pytest.mark.parametrize("num_heads,num_kv_heads,shared_pages", [(4, 2, 2), (4, 4, 0)],
                         ids=["gqa-prefix", "mha"])
def test_the_tpu_kernel_equals_the_reference(num_heads, num_kv_heads, shared_pages,
                                            monkeypatch):
  # Blocks of 2 pages: a row walks up to 2 blocks, its softmax carried across them.
  monkeypatch.setattr(tpu, "PAGED_BLOCK_TOKENS", 16)
  # head_dim 128: the kernel's [G, H] tiles need whole 128-lane rows
  case = _paged_case(2, num_seqs=4, num_heads=num_heads, num_kv_heads=num_kv_heads,
                     head_dim=128, shared_pages=shared_pages, pages_per_seq=4)
  assert _uses_pallas("tpu", case)
  _set_equals_reference("tpu", case, shared_pages, round_kv=True)


def test_kernel_blocks_divide_the_page_table():
  assert tpu.pages_per_compute_block(40, 16) == 20  # 320 tokens a block
  assert tpu.pages_per_compute_block(30, 32) == 15 and tpu.pages_per_compute_block(29, 32) == 1
  assert gpu.kernel_blocks(40) == (10, 4) and gpu.kernel_blocks(64) == (16, 4)
  assert gpu.kernel_blocks(29) == (1, 1) and gpu.kernel_blocks(5) == (5, 1)


def test_the_tpu_set_takes_the_reference_for_head_dims_the_kernel_cannot_tile():
  case = _paged_case(3, head_dim=32)
  assert not _uses_pallas("tpu", case)
  _set_equals_reference("tpu", case, 0)


# The Pallas kernels ignore shared_pages: one case with a shared prefix, one without.
@pytest.mark.parametrize("num_heads,num_kv_heads,shared_pages", [(4, 2, 2), (4, 4, 0)],
                         ids=["gqa-prefix", "mha"])
def test_the_gpu_kernel_equals_the_reference(num_heads, num_kv_heads, shared_pages):
  case = _paged_case(6, num_heads=num_heads, num_kv_heads=num_kv_heads,
                     shared_pages=shared_pages)
  assert _uses_pallas("gpu", case)
  _set_equals_reference("gpu", case, shared_pages)


def test_the_gpu_set_takes_the_reference_for_tiles_triton_cannot_make():
  case = _paged_case(7, head_dim=24)
  assert not _uses_pallas("gpu", case)
  _set_equals_reference("gpu", case, 0)


def _as_the_engine_calls_it(paged, shared_pages=0):
  """paged_attention inside a shard_map manual over the batch axes, as the decode engine
  calls it; the mesh's tensor axis (heads) stays auto."""
  manual = {"data", "fsdp"}
  rows, whole = PartitionSpec(("data", "fsdp")), PartitionSpec()
  return jax.shard_map(lambda *a: paged(*a, shared_pages=shared_pages),
                       in_specs=(rows, whole, whole, rows, rows), out_specs=rows,
                       axis_names=manual, check_vma=False)


@pytest.mark.parametrize("num_kv_heads", [4, 2], ids=["kv_heads_split", "kv_heads_repeated"])
def test_a_pallas_kernel_runs_per_device_under_the_engines_shard_map(num_kv_heads):
  """Rows over data, heads over tensor (the kernel's own shard_map); 2 kv heads do not
  split over 4 tensor shards and are repeated to one per query head."""
  case = _paged_case(8, num_seqs=4, num_heads=8, num_kv_heads=num_kv_heads, shared_pages=1)
  with jax.set_mesh(make_mesh(2, 1, 4)):
    out = jax.jit(_as_the_engine_calls_it(kernels.kernel_set("gpu").paged_attention, 1))(*case)
  np.testing.assert_allclose(out, jax.jit(xla.paged_attention)(*case), rtol=RTOL, atol=ATOL)


def test_the_tpu_set_off_a_tpu_takes_the_reference_on_a_mesh_of_several_devices():
  """Pallas' TPU interpreter hangs or crashes XLA:CPU on several devices; the set must still
  run there (CPU tests of an engine on 8 devices with kernels="tpu")."""
  case = _paged_case(10, num_seqs=8, num_heads=8, num_kv_heads=4, head_dim=128)
  with jax.set_mesh(make_mesh(8, 1, 1)):
    paged = _as_the_engine_calls_it(kernels.kernel_set("tpu").paged_attention)
    assert "pallas_call" not in str(jax.make_jaxpr(paged)(*case))
    out = jax.jit(paged)(*case)
  np.testing.assert_allclose(out, jax.jit(xla.paged_attention)(*case), rtol=RTOL, atol=ATOL)


# --- Compiled for the accelerators (compile-only devices, tests/test_plan_targets.py's) ------

_TPU = pytest.mark.skipif(targets.missing_compiler(targets.get("v5e-8")) is not None,
                          reason=str(targets.missing_compiler(targets.get("v5e-8"))))
_GPU = pytest.mark.skipif(targets.missing_compiler(targets.get("h100")) is not None,
                          reason=str(targets.missing_compiler(targets.get("h100"))))


def _compiled_hlo(target_name, mesh_shape, case_shapes, dtype=jnp.bfloat16):
  """The kernels="auto" set's paged_attention, compiled for the target as the engine calls
  it (rows over data, heads over tensor)."""
  mesh = make_mesh(*mesh_shape, devices=targets.compile_devices(target_name))
  q, k_pages, v_pages, lengths, table = case_shapes
  rows = lambda ndim: NamedSharding(mesh, PartitionSpec("data", *(None,) * (ndim - 1)))
  whole = NamedSharding(mesh, PartitionSpec())
  args = (jax.ShapeDtypeStruct(q, dtype, sharding=rows(3)),
          jax.ShapeDtypeStruct(k_pages, dtype, sharding=whole),
          jax.ShapeDtypeStruct(v_pages, dtype, sharding=whole),
          jax.ShapeDtypeStruct(lengths, jnp.int32, sharding=rows(1)),
          jax.ShapeDtypeStruct(table, jnp.int32, sharding=rows(2)))
  with jax.set_mesh(mesh), targets.no_persistent_cache():
    paged = kernels.kernel_set("auto").paged_attention
    return jax.jit(_as_the_engine_calls_it(paged)).lower(*args).compile().as_text()


@_TPU
@pytest.mark.parametrize("num_kv_heads", [8, 2], ids=["kv_heads_split", "kv_heads_repeated"])
def test_the_tpu_kernel_compiles_for_a_v5e_8(num_kv_heads):
  # 1b-like: 128-dim heads, 16 slots per data shard, 40 pages of 16 positions
  shapes = ((32, 8, 128), (num_kv_heads, 700, 16, 128), (num_kv_heads, 700, 16, 128), (32,),
            (32, 40))
  hlo = _compiled_hlo("v5e-8", (2, 1, 4), shapes)
  assert hlo.count('custom_call_target="tpu_custom_call"') == 1, hlo[-3000:]


@_GPU
def test_the_gpu_kernel_compiles_for_an_h100():
  shapes = ((32, 8, 128), (2, 700, 16, 128), (2, 700, 16, 128), (32,), (32, 40))
  hlo = _compiled_hlo("h100", (1, 1, 1), shapes)
  assert hlo.count("__gpu$xla.gpu.triton") == 1, hlo[-3000:]
