"""An independent NumPy implementation of the decoder's forward pass, for parity tests.

Written from the maths (pre-norm RMSNorm, rotate-half RoPE, softmax attention with grouped
K/V heads repeated per group, gated MLP), not from model/: it shares only the parameter names.
"""
import math

import numpy as np


def _rms_norm(x, scale, eps, plus_one):
  normed = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
  return normed * ((scale + 1.0) if plus_one else scale)


def _rope(x_LxNxH, theta):
  length, _, head_dim = x_LxNxH.shape
  half = head_dim // 2
  out = np.empty_like(x_LxNxH)
  for pos in range(length):
    for i in range(half):
      angle = pos * theta ** (-2.0 * i / head_dim)
      c, s = math.cos(angle), math.sin(angle)
      a, b = x_LxNxH[pos, :, i], x_LxNxH[pos, :, i + half]
      out[pos, :, i] = a * c - b * s
      out[pos, :, i + half] = b * c + a * s
  return out


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _layer(stacked, index):
  """Layer `index` of the stacked block parameters (each leaf has a leading layers axis)."""
  if isinstance(stacked, dict):
    return {k: _layer(v, index) for k, v in stacked.items()}
  return stacked[index]


def reference_logits(params, cfg, tokens_L):
  """Logits [L, V] for one unpacked sequence."""
  p = params
  x = p["embed_VxD"][tokens_L].astype(np.float64)
  if cfg.embed_scale_by_sqrt_dim:
    x = x * math.sqrt(cfg.d_model)
  length = len(tokens_L)
  group = cfg.num_heads // cfg.num_kv_heads
  for layer in range(cfg.num_layers):
    b = _layer(p["blocks"], layer)
    h = _rms_norm(x, b["attn_norm"]["scale"], cfg.norm_eps, cfg.norm_weight_plus_one)
    q = _rope(np.einsum("ld,dnh->lnh", h, b["attn"]["q_DxNxH"]), cfg.rope_theta)
    k = _rope(np.einsum("ld,dkh->lkh", h, b["attn"]["k_DxKxH"]), cfg.rope_theta)
    v = np.einsum("ld,dkh->lkh", h, b["attn"]["v_DxKxH"])
    out = np.zeros_like(q)
    for head in range(cfg.num_heads):
      kv = head // group
      scores = q[:, head] @ k[:, kv].T / math.sqrt(cfg.head_dim)
      scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
      weights = np.exp(scores - scores.max(-1, keepdims=True))
      weights /= weights.sum(-1, keepdims=True)
      out[:, head] = weights @ v[:, kv]
    x = x + np.einsum("lnh,nhd->ld", out, b["attn"]["o_NxHxD"])
    h = _rms_norm(x, b["mlp_norm"]["scale"], cfg.norm_eps, cfg.norm_weight_plus_one)
    gate = h @ b["mlp"]["gate_DxF"]
    act = gate / (1 + np.exp(-gate)) if cfg.mlp_activation == "silu" else _gelu_tanh(gate)
    x = x + (act * (h @ b["mlp"]["up_DxF"])) @ b["mlp"]["down_FxD"]
  x = _rms_norm(x, p["final_norm"]["scale"], cfg.norm_eps, cfg.norm_weight_plus_one)
  head = p["embed_VxD"].T if cfg.tie_embeddings else p["head_DxV"]
  return x @ head
