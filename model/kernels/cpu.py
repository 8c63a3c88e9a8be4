"""Kernels for XLA:CPU: the model's maths with hand-written backward passes.

XLA:CPU runs each dot as a GEMM and wants every operand with its contracting axis where a
plain [M, K] @ [K, N] has it; autodiff's backward passes contract over tokens and make it
transpose the big [T, F] / [T, V] operands (re-running the elementwise op that produced them,
now with strided writes), and walk the [L, L] attention scores more often than needed. Here
each backward is written so that only small operands are transposed, materialised behind an
`optimization_barrier` so XLA does not fold the transpose back into the dot. On a CPU this makes
attention and the MLP about twice as fast as autodiff (benchmarks/RESULTS.md); on GPUs and
TPUs none of it helps, so `auto` uses model/kernels/xla.py there.

Same signatures and maths as model/kernels/xla.py (tests/test_custom_vjps.py checks both
against autodiff).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from model.kernels import xla
from model.kernels.page_groups import PageGroups
from model.sharding import shard_activation

# Queries are processed in chunks of this many rows; chunk i only needs the keys up to its
# own end, which skips the fully masked upper-right blocks of the causal [L, L] scores
# (a quarter of the score work at 2 chunks, 3/8 at 4) at the price of more, smaller ops.
QUERY_CHUNK = 128


def weight_grad(x_BxLxD: jax.Array, dy_BxLxF: jax.Array) -> jax.Array:
  """sum over tokens of x^T dy: the [D, F] gradient of a `bld,df->blf` weight.

  Materialising the small [D, T] transpose, behind a barrier so it is not folded back into
  the dot, leaves the big [T, F] operand untouched (see the module docstring).
  """
  x_DxBL = jax.lax.optimization_barrier(x_BxLxD.reshape(-1, x_BxLxD.shape[-1]).T)
  return jnp.dot(x_DxBL, dy_BxLxF.reshape(-1, dy_BxLxF.shape[-1]),
                 preferred_element_type=jnp.float32).astype(dy_BxLxF.dtype)


# --- Attention -----------------------------------------------------------------------------

def _query_chunks(length: int) -> list[tuple[int, int]]:
  return [(start, min(start + QUERY_CHUNK, length)) for start in range(0, length, QUERY_CHUNK)]


def _chunk_mask(segment_ids_BxL: jax.Array, start: int, end: int) -> jax.Array:
  """[B, 1, 1, L, U] mask of queries start..end against keys 0..end.

  Built from iota and compares so XLA fuses it into the score pass instead of reading a
  materialised mask per layer.
  """
  query_LxU = jax.lax.broadcasted_iota(jnp.int32, (end - start, end), 0) + start
  key_LxU = jax.lax.broadcasted_iota(jnp.int32, (end - start, end), 1)
  same_BxLxU = segment_ids_BxL[:, start:end, None] == segment_ids_BxL[:, None, :end]
  return ((key_LxU <= query_LxU)[None] & same_BxLxU)[:, None, None]


def _chunk_fwd(q_BxKxGxLxH, k_BxKxUxH, v_BxKxUxH, mask):
  scores = jnp.einsum("bkgth,bksh->bkgts", q_BxKxGxLxH, k_BxKxUxH,
                      preferred_element_type=jnp.float32)
  # The diagonal is always visible (same token, same segment), so every row has a finite
  # max and masked entries become exactly 0 after exp.
  scores = jnp.where(mask, scores, -jnp.inf)
  probs_un = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
  inv_sum_BxKxGxL = 1.0 / jnp.sum(probs_un, axis=-1)
  # Normalise the [L, H] output rather than the [L, U] probabilities: one fewer pass over
  # the big tensor, same maths.
  out_un = jnp.einsum("bkgts,bksh->bkgth", probs_un.astype(v_BxKxUxH.dtype), v_BxKxUxH,
                      preferred_element_type=jnp.float32)
  out_BxKxGxLxH = (out_un * inv_sum_BxKxGxL[..., None]).astype(q_BxKxGxLxH.dtype)
  return out_BxKxGxLxH, probs_un, inv_sum_BxKxGxL


def _chunk_bwd(q, k, v, probs_un, inv_sum, out, dout):
  dout32 = dout.astype(jnp.float32)
  # dV = P^T dO with P = probs_un * inv_sum: fold 1/sum into dO (a [T, H] tensor).
  dv = jnp.einsum("bkgts,bkgth->bksh", probs_un.astype(v.dtype),
                  (dout32 * inv_sum[..., None]).astype(v.dtype),
                  preferred_element_type=jnp.float32)
  dprobs = jnp.einsum("bkgth,bksh->bkgts", dout, v, preferred_element_type=jnp.float32)
  # Softmax backward: dS = P * (dP - rowsum(dO * O)); rowsum(dP * P) == rowsum(dO * O).
  row_dot = jnp.sum(dout32 * out.astype(jnp.float32), axis=-1, keepdims=True)
  dscores = (probs_un * inv_sum[..., None] * (dprobs - row_dot)).astype(q.dtype)
  dq = jnp.einsum("bkgts,bksh->bkgth", dscores, k, preferred_element_type=jnp.float32)
  dk = jnp.einsum("bkgts,bkgth->bksh", dscores, q, preferred_element_type=jnp.float32)
  return dq, dk, dv


@jax.custom_vjp
def _attend(q_BxKxGxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL):
  """softmax(q k^T + mask) v; q arrives pre-scaled by 1/sqrt(head_dim)."""
  return _attend_fwd(q_BxKxGxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL)[0]


def _attend_fwd(q_BxKxGxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL):
  outs, saved = [], []
  for start, end in _query_chunks(q_BxKxGxLxH.shape[3]):
    out, probs_un, inv_sum = _chunk_fwd(
        q_BxKxGxLxH[:, :, :, start:end], k_BxKxLxH[:, :, :end], v_BxKxLxH[:, :, :end],
        _chunk_mask(segment_ids_BxL, start, end))
    outs.append(out)
    saved.append((probs_un, inv_sum))
  out_BxKxGxLxH = jnp.concatenate(outs, axis=3) if len(outs) > 1 else outs[0]
  return out_BxKxGxLxH, (q_BxKxGxLxH, k_BxKxLxH, v_BxKxLxH, saved, out_BxKxGxLxH)


def _attend_bwd(residuals, dout_BxKxGxLxH):
  q, k, v, saved, out = residuals
  length = q.shape[3]
  pad = lambda x, end: jnp.pad(x, ((0, 0), (0, 0), (0, length - end), (0, 0)))
  dqs, dk, dv = [], 0.0, 0.0
  for (start, end), (probs_un, inv_sum) in zip(_query_chunks(length), saved):
    dq_c, dk_c, dv_c = _chunk_bwd(q[:, :, :, start:end], k[:, :, :end], v[:, :, :end], probs_un,
                                  inv_sum, out[:, :, :, start:end],
                                  dout_BxKxGxLxH[:, :, :, start:end])
    dqs.append(dq_c)
    # Chunk i saw keys 0..end_i only: its key/value gradients cover that prefix.
    dk = dk + pad(dk_c, end)
    dv = dv + pad(dv_c, end)
  dq = jnp.concatenate(dqs, axis=3) if len(dqs) > 1 else dqs[0]
  return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None)


_attend.defvjp(_attend_fwd, _attend_bwd)


def attention(q_BxNxLxH: jax.Array, k_BxKxLxH: jax.Array, v_BxKxLxH: jax.Array,
              segment_ids_BxL: jax.Array, impl: str = "xla") -> jax.Array:
  """Causal, same-segment softmax attention; [B, N, L, H] out, heads-major layout.

  `impl` is the xla set's choice (ModelConfig.attention_impl); this set has one kernel.
  """
  del impl
  batch, num_heads, length, head_dim = q_BxNxLxH.shape
  num_kv_heads = k_BxKxLxH.shape[1]
  group = num_heads // num_kv_heads
  # Query heads n = kv * group + g share K/V head kv (the usual GQA grouping).
  q_BxKxGxLxH = (q_BxNxLxH * jnp.asarray(head_dim ** -0.5, q_BxNxLxH.dtype)).reshape(
      batch, num_kv_heads, group, length, head_dim)
  out = _attend(q_BxKxGxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL)
  return out.reshape(batch, num_heads, length, head_dim)


# --- Gated MLP -----------------------------------------------------------------------------

def _gated_mlp_fwd(activation, x_BxLxD, gate_DxF, up_DxF, down_FxD):
  gate_BxLxF = jnp.einsum("bld,df->blf", x_BxLxD, gate_DxF)
  up_BxLxF = jnp.einsum("bld,df->blf", x_BxLxD, up_DxF)
  hidden_BxLxF = shard_activation(activation(gate_BxLxF) * up_BxLxF,
                                  ("batch", "length", "act_mlp"))
  out_BxLxD = jnp.einsum("blf,fd->bld", hidden_BxLxF, down_FxD)
  return out_BxLxD, (x_BxLxD, gate_DxF, up_DxF, down_FxD, gate_BxLxF, up_BxLxF)


def _gated_mlp_bwd(activation, residuals, dout_BxLxD):
  x_BxLxD, gate_DxF, up_DxF, down_FxD, gate_BxLxF, up_BxLxF = residuals
  # The activation is recomputed (elementwise, cheap) rather than saved.
  act_BxLxF, act_vjp = jax.vjp(activation, gate_BxLxF)
  hidden_BxLxF = act_BxLxF * up_BxLxF
  dhidden_BxLxF = jnp.einsum("bld,fd->blf", dout_BxLxD, down_FxD)
  axes = ("batch", "length", "act_mlp")
  dgate_BxLxF = shard_activation(act_vjp(dhidden_BxLxF * up_BxLxF)[0], axes)
  dup_BxLxF = shard_activation(dhidden_BxLxF * act_BxLxF, axes)
  dx_BxLxD = (jnp.einsum("blf,df->bld", dgate_BxLxF, gate_DxF) +
              jnp.einsum("blf,df->bld", dup_BxLxF, up_DxF))
  dgate_DxF = weight_grad(x_BxLxD, dgate_BxLxF)
  dup_DxF = weight_grad(x_BxLxD, dup_BxLxF)
  # down^T's gradient dout^T hidden: the small [D, T] side is the one transposed.
  ddown_FxD = weight_grad(dout_BxLxD, hidden_BxLxF).T
  return dx_BxLxD, dgate_DxF, dup_DxF, ddown_FxD


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def gated_mlp(activation, x_BxLxD, gate_DxF, up_DxF, down_FxD):
  """down(act(x gate) * (x up)), with a hand-written backward (see weight_grad).

  `activation` is a static (hashed) argument: pass module-level functions, not lambdas, so
  equal activations compare equal across layers and traces.
  """
  return _gated_mlp_fwd(activation, x_BxLxD, gate_DxF, up_DxF, down_FxD)[0]


gated_mlp.defvjp(_gated_mlp_fwd, _gated_mlp_bwd)


# --- LM head -------------------------------------------------------------------------------

@jax.custom_vjp
def lm_head(x_BxLxD: jax.Array, head_DxV: jax.Array) -> jax.Array:
  """float32 logits x @ head, with a backward that suits XLA:CPU's GEMMs.

  The [T, V] logit gradient is by far the largest tensor of the step: autodiff's backward
  transposes it (recomputing the loss gradient a second time, with strided writes) for the
  head's gradient; here only x [T, D] and the head [D, V] are transposed.
  """
  return jnp.einsum("bld,dv->blv", x_BxLxD, head_DxV, preferred_element_type=jnp.float32)


def _lm_head_fwd(x_BxLxD, head_DxV):
  return lm_head(x_BxLxD, head_DxV), (x_BxLxD, head_DxV)


def _lm_head_bwd(residuals, dlogits_BxLxV):
  x_BxLxD, head_DxV = residuals
  dlogits_BxLxV = dlogits_BxLxV.astype(x_BxLxD.dtype)
  head_VxD = jax.lax.optimization_barrier(head_DxV.T)
  dx_BxLxD = jnp.einsum("blv,vd->bld", dlogits_BxLxV, head_VxD,
                        preferred_element_type=jnp.float32).astype(x_BxLxD.dtype)
  return dx_BxLxD, weight_grad(x_BxLxD, dlogits_BxLxV).astype(head_DxV.dtype)


lm_head.defvjp(_lm_head_fwd, _lm_head_bwd)


# --- Loss ----------------------------------------------------------------------------------

def _label_logit(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  return jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]


@jax.custom_vjp
def token_nll(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """Per-token cross-entropy logsumexp(logits) - logits[target]: the same float ops as
  optax.softmax_cross_entropy_with_integer_labels, with a one-pass backward.

  Autodiff would transpose the label gather into a scatter into a zero [B, L, V] tensor;
  the backward below is a single elementwise pass (softmax - onehot, from an iota compare).
  """
  return jax.nn.logsumexp(logits_BxLxV, axis=-1) - _label_logit(logits_BxLxV, targets_BxL)


def _token_nll_fwd(logits_BxLxV, targets_BxL):
  lse_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
  return lse_BxL - _label_logit(logits_BxLxV, targets_BxL), (logits_BxLxV, targets_BxL, lse_BxL)


def _token_nll_bwd(residuals, g_BxL):
  logits_BxLxV, targets_BxL, lse_BxL = residuals
  # d nll / d logits = softmax - onehot, in one elementwise pass over the [B, L, V] logits.
  vocab_1x1xV = jax.lax.broadcasted_iota(targets_BxL.dtype, (1, 1, logits_BxLxV.shape[-1]), 2)
  probs = jnp.exp(logits_BxLxV - lse_BxL[..., None])
  onehot = (vocab_1x1xV == targets_BxL[..., None]).astype(logits_BxLxV.dtype)
  return (probs - onehot) * g_BxL[..., None], None


token_nll.defvjp(_token_nll_fwd, _token_nll_bwd)


# --- Decode attention over the paged KV cache ----------------------------------------------

# Table columns (pages) a decode attention reads per step of its walk: small enough that a
# chunk's gathered keys stay in cache, and that chunks past the longest sequence are skipped.
PAGE_CHUNK = 3
# Groups of rows (PageGroups) whose shared pages are scored as one matmul for all rows: each
# row then also scores the other groups' pages (masked), so this pays only while they are
# few; past it, each row reads its group's pages like its own.
MAX_DENSE_GROUPS = 4


def paged_attention(q_SxNxH: jax.Array, k_pages_KxQxExH: jax.Array, v_pages_KxQxExH: jax.Array,
                    lengths_S: jax.Array, page_table_SxM: jax.Array, *,
                    shared_pages: int = 0, groups: PageGroups | None = None) -> jax.Array:
  """xla.paged_attention's maths, reading each page as few times as it can.

  The reference gathers each sequence's whole table into one key row. On XLA:CPU that copy,
  not the arithmetic, is most of the cost: pages many rows share are copied once per row, and
  a table is as wide as the longest sample may grow while most rows end a few pages in. Here:
    * the prefix every sequence shares (`shared_pages`, few-shot examples) is gathered once
      and every sequence's queries of a kv head are the rows of one [S * G, H] x [H, C]
      matmul;
    * with at most MAX_DENSE_GROUPS `groups` (a problem's prompt pages, PageGroups), each
      group's pages likewise, every row masked to its own group's;
    * the rest of each row's table is walked PAGE_CHUNK pages at a time (small gathers that
      stay in cache), and a chunk that starts past every row's length is skipped
      (`lax.cond`: the walk ends where the longest row does, not the table).
  Where XLA partitions the call (tensor parallelism), no groups and no skipping: its
  partitioner would gather their operands whole on every device.
  The parts meet in an online softmax (running max, sum and unnormalised weighted values,
  rescaled when the max grows), divided once, on [.., H].
  """
  seqs, num_heads, head_dim = q_SxNxH.shape
  kv_heads, _, page, _ = k_pages_KxQxExH.shape
  group = num_heads // kv_heads
  f32 = dict(preferred_element_type=jnp.float32)
  v_dtype = v_pages_KxQxExH.dtype
  q_KxSxGxH = q_SxNxH.reshape(seqs, kv_heads, group, head_dim).transpose(1, 0, 2, 3)
  q_KxSGxH = q_KxSxGxH.reshape(kv_heads, seqs * group, head_dim)

  def merged(state, scores_KxSxGxU, values_of):
    """The softmax state with a block of scores (masked ones -inf) and its values added."""
    top_KxSxGx1, total_KxSxGx1, out_KxSxGxH = state
    new_top = jnp.maximum(top_KxSxGx1, jnp.max(scores_KxSxGxU, -1, keepdims=True))
    # A row with nothing valid yet keeps a -inf max: shift by 0 there, no inf - inf.
    shift = jnp.where(jnp.isfinite(new_top), new_top, 0.0)
    rescale = jnp.exp(top_KxSxGx1 - shift)
    exp_KxSxGxU = jnp.exp(scores_KxSxGxU - shift)
    return (new_top, total_KxSxGx1 * rescale + jnp.sum(exp_KxSxGxU, -1, keepdims=True),
            out_KxSxGxH * rescale + values_of(exp_KxSxGxU.astype(v_dtype)))

  def merged_shared(state, pages_C, valid_SxC):
    """Pages read once for all rows (one matmul per kv head), valid_SxC per row."""
    read = lambda pages: pages[:, pages_C].reshape(kv_heads, -1, head_dim)
    scores = jnp.einsum("kqh,kch->kqc", q_KxSGxH, read(k_pages_KxQxExH),
                        **f32).reshape(kv_heads, seqs, group, -1)
    return merged(state, jnp.where(valid_SxC[None, :, None], scores, -jnp.inf),
                  lambda exp: jnp.einsum(
                      "kqc,kch->kqh", exp.reshape(kv_heads, seqs * group, -1),
                      read(v_pages_KxQxExH), **f32).reshape(kv_heads, seqs, group, head_dim))

  # Where XLA partitions the call (heads split over tensor, say), its partitioner would gather
  # a cond's operands, and the group-masked scores, whole on every device: read row by row.
  mesh = jax.sharding.get_abstract_mesh()
  partitioned = not mesh.empty and any(
      size > 1 for name, size in mesh.shape.items() if name not in mesh.manual_axes)
  state = (jnp.full((kv_heads, seqs, group, 1), -jnp.inf, jnp.float32),
           jnp.zeros((kv_heads, seqs, group, 1), jnp.float32),
           jnp.zeros((kv_heads, seqs, group, head_dim), jnp.float32))
  if shared_pages:
    state = merged_shared(state, page_table_SxM[0, :shared_pages],
                          jnp.arange(shared_pages * page)[None] < lengths_S[:, None])
  # Row s's rest: its table from column rest_first_S[s] on, rest_width columns (past the
  # table: positions past every length, masked; the entry read is the last, a valid page).
  rest_first_S = jnp.full((seqs,), shared_pages)
  rest_width = page_table_SxM.shape[1] - shared_pages
  table_SxM = page_table_SxM[:, shared_pages:]
  if (groups is not None and groups.table_GxW.shape[0] <= MAX_DENSE_GROUPS
      and not partitioned):
    num_groups, width = groups.table_GxW.shape
    offset_U = jnp.arange(width * page)
    valid_SxGxU = ((jnp.arange(num_groups)[None, :, None] == groups.group_S[:, None, None])
                   & (offset_U < groups.pages_S[:, None] * page)[:, None]
                   & (shared_pages * page + offset_U < lengths_S[:, None])[:, None])
    state = merged_shared(state, groups.table_GxW.reshape(-1),
                          valid_SxGxU.reshape(seqs, -1))
    rest_first_S = shared_pages + groups.pages_S
    table_SxM = jnp.take_along_axis(page_table_SxM, jnp.minimum(
        rest_first_S[:, None] + jnp.arange(rest_width)[None], page_table_SxM.shape[1] - 1), 1)
  longest = jnp.max(lengths_S - rest_first_S * page)
  for first in range(0, table_SxM.shape[1], PAGE_CHUNK):
    last = min(first + PAGE_CHUNK, table_SxM.shape[1])

    def chunk(state, first=first, last=last):
      rows = lambda pages: pages[:, table_SxM[:, first:last]].reshape(
          kv_heads, seqs, -1, head_dim)
      scores = jnp.einsum("ksgh,ksuh->ksgu", q_KxSxGxH, rows(k_pages_KxQxExH), **f32)
      positions_SxU = ((rest_first_S[:, None] + first) * page
                       + jnp.arange(scores.shape[-1])[None])
      valid = (positions_SxU < lengths_S[:, None])[None, :, None]
      return merged(state, jnp.where(valid, scores, -jnp.inf), lambda exp: jnp.einsum(
          "ksgu,ksuh->ksgh", exp, rows(v_pages_KxQxExH), **f32))

    if partitioned:
      state = chunk(state)
    else:
      state = jax.lax.cond(first * page < longest, chunk, lambda state: state, state)
  _, total_KxSxGx1, out_KxSxGxH = state
  out_KxSxGxH = out_KxSxGxH / total_KxSxGx1
  return out_KxSxGxH.transpose(1, 0, 2, 3).reshape(q_SxNxH.shape).astype(q_SxNxH.dtype)
