"""Kernels per platform, behind one switch: `ModelConfig.kernels` = auto | xla | cpu.

Every kernel set has the same four functions, with the same maths and signatures:

    attention(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL, impl) -> out_BxNxLxH
        causal, same-segment softmax attention (grouped-query when K < N)
    gated_mlp(activation, x_BxLxD, gate_DxF, up_DxF, down_FxD) -> out_BxLxD
    lm_head(x_BxLxD, head_DxV) -> float32 logits_BxLxV
    token_nll(logits_BxLxV, targets_BxL) -> per-token cross-entropy, float32

`xla` (model/kernels/xla.py) is the model in plain JAX with autodiff, attention through
`jax.nn.dot_product_attention` (`attention_impl` = "cudnn" picks cuDNN's flash kernel on
GPUs); it is what accelerators run. `cpu` (model/kernels/cpu.py) has hand-written backward
passes that suit XLA:CPU's GEMMs. `auto` picks `cpu` when JAX's default backend is the CPU and
`xla` everywhere else. tests/test_custom_vjps.py checks every kernel of both sets against
autodiff of the textbook formula.
"""
from __future__ import annotations

import types

import jax

from model.config import KERNELS
from model.kernels import cpu, xla

_SETS = {"cpu": cpu, "xla": xla}


def resolve(kernels: str, platform: str | None = None) -> str:
  """The kernel set `kernels` means on `platform` (default: JAX's default backend)."""
  if kernels not in KERNELS:
    raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
  if kernels != "auto":
    return kernels
  return "cpu" if (platform or jax.default_backend()) == "cpu" else "xla"


def kernel_set(kernels: str) -> types.ModuleType:
  """The module holding the four kernels of `kernels` (resolved on the running backend)."""
  return _SETS[resolve(kernels)]
