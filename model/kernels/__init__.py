"""Kernels per platform, behind one switch: `ModelConfig.kernels` = auto | xla | cpu | tpu | gpu.

Every kernel set has the same five functions, with the same maths and signatures:

    attention(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segment_ids_BxL, impl) -> out_BxNxLxH
        causal, same-segment softmax attention (grouped-query when K < N)
    gated_mlp(activation, x_BxLxD, gate_DxF, up_DxF, down_FxD) -> out_BxLxD
    lm_head(x_BxLxD, head_DxV) -> float32 logits_BxLxV
    token_nll(logits_BxLxV, targets_BxL) -> per-token cross-entropy, float32
    paged_attention(q_SxNxH, k_pages_KxQxExH, v_pages_KxQxExH, lengths_S, page_table_SxM, *,
                    shared_pages=0, groups=None) -> out_SxNxH
        decode attention: one (pre-scaled) query token per sequence against its keys/values
        in a paged KV cache (model/kernels/xla.py says the layout); shared_pages and groups
        (model/kernels/page_groups.py) say which pages rows share, for a kernel that reads
        shared pages once (the page table alone is complete)

`xla` (model/kernels/xla.py) is the model in plain JAX with autodiff, attention through
`jax.nn.dot_product_attention` (`attention_impl` = "cudnn" picks cuDNN's flash kernel on
GPUs); it is what GPUs run and the reference of the other sets. `cpu` (model/kernels/cpu.py)
has hand-written backward passes that suit XLA:CPU's GEMMs. `tpu` (model/kernels/tpu.py) is
`xla` with JAX's Pallas splash attention and paged attention, `gpu` (model/kernels/gpu.py) is
`xla` with JAX's Pallas (Triton) paged attention. tests/test_custom_vjps.py checks every
training kernel of every set against autodiff of the textbook formula,
tests/test_paged_attention.py every set's paged attention against the xla reference.

`auto` is resolved from the devices the computation is for: the mesh in context
(`jax.set_mesh`, under which the train step, the eval step and the sampler are traced), so a
plan compiled on a CPU host for a TPU mesh traces the TPU kernels; without a mesh, JAX's
default device (where an un-meshed computation runs).
"""
from __future__ import annotations

import importlib
import types

import jax

from model.config import KERNELS

# platform -> the set `auto` means there; every other platform (rocm, ...) gets xla. JAX
# names an NVIDIA GPU's platform "gpu" (its backend "cuda").
_AUTO = {"cpu": "cpu", "tpu": "tpu", "gpu": "gpu", "cuda": "gpu"}


def platform_in_context() -> str:
  """The platform of the mesh in context, else of JAX's first device."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else getattr(mesh, "abstract_device", None)
  return device.platform if device is not None else jax.devices()[0].platform


def resolve(kernels: str, platform: str | None = None) -> str:
  """The kernel set `kernels` means on `platform` (default: platform_in_context())."""
  if kernels not in KERNELS:
    raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
  if kernels != "auto":
    return kernels
  return _AUTO.get(platform or platform_in_context(), "xla")


def kernel_set(kernels: str) -> types.ModuleType:
  """The module holding the kernels of `kernels`, resolved in context (imported on
  first use: the tpu set imports the Pallas TPU kernels)."""
  return importlib.import_module(f"model.kernels.{resolve(kernels)}")
