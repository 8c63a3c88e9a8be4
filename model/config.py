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
  # Rematerialise each block in the backward pass (trades FLOPs for activation memory).
  remat: bool = False

  def __post_init__(self):
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
