"""The decoder's hyperparameters: one frozen dataclass, serialisable to JSON.

Named presets (tiny ... 137b) are instances of it, in model/presets.py.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from model.rope import RopeScaling

_ACTIVATIONS = ("silu", "gelu")  # gated MLP: SwiGLU (Llama) or GeGLU (Gemma, the paper's LaMDA)
_DTYPES = ("float32", "bfloat16")
# Kernel sets (model/kernels/): auto = the set of the platform of the mesh in context (cpu,
# tpu, gpu on NVIDIA GPUs; xla elsewhere).
KERNELS = ("auto", "xla", "cpu", "tpu", "gpu")
# jax.nn.dot_product_attention implementations, for the xla kernels.
ATTENTION_IMPLS = ("xla", "cudnn")
# What the backward pass of a layer may reuse from its forward pass (model/decoder.py):
# none = everything (no recomputation), full = only the layer's input (recompute the whole
# layer), save_dots = the outputs of the weight matmuls (recompute attention scores and the
# elementwise ops), as MaxText's "minimal" policy.
REMAT_POLICIES = ("none", "full", "save_dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a pre-norm, RoPE, gated-MLP decoder.

  `num_kv_heads < num_heads` gives grouped-query attention (1 = multi-query). `head_dim` is
  independent of `d_model` (the paper's 137B uses 128 heads of 128 on d_model 8192).
  """
  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  d_ff: int
  mlp_activation: str = "silu"
  tie_embeddings: bool = True
  rope_theta: float = 10_000.0
  # Frequency scaling of an imported long-context checkpoint (model/rope.py); None = plain RoPE.
  rope_scaling: RopeScaling | None = None
  norm_eps: float = 1e-6
  # Gemma-family conventions, kept here so imported checkpoints run unchanged.
  embed_scale_by_sqrt_dim: bool = False
  norm_weight_plus_one: bool = False
  # Numerics: parameters stay float32; activations and matmuls run in `dtype`.
  dtype: str = "float32"
  # Activation memory vs FLOPs: one of REMAT_POLICIES. Configs written when this was a bool
  # still load: False means "none", True "full".
  remat: str = "none"
  # Run the layers as one `nnx.scan` over stacked parameters (compile time independent of
  # depth); False runs the same stacked parameters in a Python loop (a reference for tests).
  scan_layers: bool = True
  # Kernel set (model/kernels/) and, for the xla set, the attention implementation.
  kernels: str = "auto"
  attention_impl: str = "xla"

  def __post_init__(self):
    if isinstance(self.remat, bool):  # the field's old (bool) meaning: block remat on or off
      object.__setattr__(self, "remat", "full" if self.remat else "none")
    problems = []
    for name in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                 "d_ff"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
        problems.append(f"{name} must be a positive int, got {getattr(self, name)!r}")
    if self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads:
      problems.append(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                      f"({self.num_kv_heads})")
    if self.head_dim % 2:
      problems.append(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
    if self.mlp_activation not in _ACTIVATIONS:
      problems.append(f"mlp_activation must be one of {_ACTIVATIONS}, got {self.mlp_activation!r}")
    if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
      problems.append(f"rope_scaling must be None or a RopeScaling, got {self.rope_scaling!r}")
    if self.dtype not in _DTYPES:
      problems.append(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
    if self.remat not in REMAT_POLICIES:
      problems.append(f"remat must be one of {REMAT_POLICIES} (a policy, no longer a bool: "
                      f"True is 'full'), got {self.remat!r}")
    if not isinstance(self.scan_layers, bool):
      problems.append(f"scan_layers must be a bool, got {self.scan_layers!r}")
    if self.kernels not in KERNELS:
      problems.append(f"kernels must be one of {KERNELS}, got {self.kernels!r}")
    if self.attention_impl not in ATTENTION_IMPLS:
      problems.append(f"attention_impl must be one of {ATTENTION_IMPLS}, got "
                      f"{self.attention_impl!r}")
    elif self.attention_impl != "xla" and self.kernels in ("cpu", "tpu"):
      problems.append(f"attention_impl={self.attention_impl!r} needs the xla kernels "
                      "(kernels='xla' or 'gpu', or 'auto' on a GPU); the cpu and tpu kernels "
                      "have one attention each")
    if problems:
      raise ValueError("Invalid ModelConfig: " + "; ".join(problems))

  def replace(self, **overrides: Any) -> ModelConfig:
    unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
    if unknown:
      raise ValueError(f"Unknown model config field(s) {sorted(unknown)}; "
                       f"valid: {sorted(f.name for f in dataclasses.fields(self))}")
    return dataclasses.replace(self, **overrides)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> ModelConfig:
    fields = json.loads(text)
    if fields.get("rope_scaling") is not None:  # asdict() flattened it to a dict
      fields["rope_scaling"] = RopeScaling(**fields["rope_scaling"])
    return cls(**fields)

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), matmuls only.

    6 * (non-embedding matmul params + LM head) plus the attention score/value matmuls
    (causal, so half of the L x L products are skipped: 6 * layers * seq * heads * head_dim).
    """
    attn_params = self.d_model * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
    mlp_params = 3 * self.d_model * self.d_ff
    matmul_params = self.num_layers * (attn_params + mlp_params) + self.vocab_size * self.d_model
    attention = 6 * self.num_layers * seq_len * self.num_heads * self.head_dim
    return 6.0 * matmul_params + attention
