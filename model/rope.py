"""RoPE frequency scalings ("linear", "llama3", "yarn"), exactly as transformers computes them.

`RopeScaling` holds every value resolved to a concrete number when a checkpoint is imported
(interop/hf_families.py applies transformers' defaulting rules), so the model never needs them.
`rope_frequencies` mirrors transformers 5 `modeling_rope_utils`, op for op in float32 (so that
the threshold comparisons of "llama3" and the ramp of "yarn" land on the same side as theirs):

  "linear": `_compute_linear_scaling_rope_parameters` (every frequency / factor)
  "llama3": `_compute_llama3_parameters` (long wavelengths / factor, short ones kept, a smooth
            blend between low_freq_factor and high_freq_factor)
  "yarn":   `_compute_yarn_parameters` (a linear ramp between extrapolated and interpolated
            frequencies over the dimensions set by beta_fast / beta_slow, and an
            attention_factor that multiplies cos and sin)

"dynamic" (NTK) and "longrope" are not here: their frequencies change with the sequence length
at run time, so they are refused at import instead.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

KINDS = ("linear", "llama3", "yarn")
# Fields each kind reads beyond `kind` and `factor` (and what an HF export writes); the
# others must keep their defaults, so that two configs computing the same frequencies compare
# (and hash) equal.
USED_FIELDS = {"linear": (),
               "llama3": ("original_max_positions", "low_freq_factor", "high_freq_factor"),
               "yarn": ("original_max_positions", "beta_fast", "beta_slow", "truncate",
                        "attention_factor")}


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """A RoPE scaling with every parameter concrete (no defaults left to resolve)."""
  kind: str
  factor: float
  original_max_positions: int | None = None  # llama3, yarn: the pretraining context length
  low_freq_factor: float | None = None       # llama3
  high_freq_factor: float | None = None      # llama3
  beta_fast: float = 32.0                    # yarn
  beta_slow: float = 1.0                     # yarn
  truncate: bool = True                      # yarn: round the ramp's ends to whole dims
  attention_factor: float = 1.0              # yarn: multiplies cos and sin

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"Invalid RopeScaling: kind must be one of {KINDS}, got {self.kind!r}")
    problems = []
    if not _is_number(self.factor) or self.factor <= 0:
      problems.append(f"factor must be a positive number, got {self.factor!r}")
    defaults = {f.name: f.default for f in dataclasses.fields(self)
                if f.name not in ("kind", "factor")}
    for name, default in defaults.items():
      if name not in USED_FIELDS[self.kind] and getattr(self, name) != default:
        problems.append(f"{name} is not used by {self.kind!r} scaling (got "
                        f"{getattr(self, name)!r}, leave it at {default!r})")
    used = USED_FIELDS[self.kind]
    if "original_max_positions" in used and (
        not isinstance(self.original_max_positions, int) or
        isinstance(self.original_max_positions, bool) or self.original_max_positions <= 0):
      problems.append("original_max_positions must be a positive int, got "
                      f"{self.original_max_positions!r}")
    if self.kind == "llama3":
      if not (_is_number(self.low_freq_factor) and _is_number(self.high_freq_factor) and
              0 < self.low_freq_factor < self.high_freq_factor):
        problems.append("llama3 needs 0 < low_freq_factor < high_freq_factor, got "
                        f"{self.low_freq_factor!r} and {self.high_freq_factor!r}")
    if self.kind == "yarn":
      if not (_is_number(self.beta_fast) and _is_number(self.beta_slow) and
              self.beta_fast > 0 and self.beta_slow > 0):
        problems.append(f"beta_fast and beta_slow must be positive numbers, got "
                        f"{self.beta_fast!r} and {self.beta_slow!r}")
      if not isinstance(self.truncate, bool):
        problems.append(f"truncate must be a bool, got {self.truncate!r}")
      if not _is_number(self.attention_factor) or self.attention_factor <= 0:
        problems.append(f"attention_factor must be a positive number, got "
                        f"{self.attention_factor!r}")
    if problems:
      raise ValueError(f"Invalid RopeScaling ({self.kind}): " + "; ".join(problems))


def _theta_powers(head_dim: int, theta: float) -> np.ndarray:
  """theta ** (2i / head_dim) as float32, from float32 exponents as transformers has them.

  The power itself is taken in float64 and rounded once: torch's float32 pow is within an
  ulp of that, NumPy's float32 pow differs from it by an ulp more often.
  """
  exponents_H2 = np.arange(0, head_dim, 2).astype(np.float32) / np.float32(head_dim)
  return (np.float64(np.float32(theta)) ** exponents_H2.astype(np.float64)).astype(np.float32)


def _default_inv_freq(head_dim: int, theta: float) -> np.ndarray:
  return np.float32(1.0) / _theta_powers(head_dim, theta)


def _llama3(inv_freq_H2: np.ndarray, s: RopeScaling) -> np.ndarray:
  old_context_len = s.original_max_positions
  low_freq_wavelen = old_context_len / s.low_freq_factor
  high_freq_wavelen = old_context_len / s.high_freq_factor
  # Python floats against float32 arrays stay float32 (NumPy 2 promotion, as in torch).
  wavelen_H2 = 2 * math.pi / inv_freq_H2
  scaled_H2 = np.where(wavelen_H2 > low_freq_wavelen, inv_freq_H2 / s.factor, inv_freq_H2)
  smooth_H2 = ((old_context_len / wavelen_H2 - s.low_freq_factor) /
               (s.high_freq_factor - s.low_freq_factor))
  smoothed_H2 = (1 - smooth_H2) * scaled_H2 / s.factor + smooth_H2 * scaled_H2
  medium_H2 = ~(wavelen_H2 < high_freq_wavelen) & ~(wavelen_H2 > low_freq_wavelen)
  return np.where(medium_H2, smoothed_H2, scaled_H2)


def _yarn(head_dim: int, theta: float, s: RopeScaling) -> np.ndarray:
  def correction_dim(num_rotations):
    return (head_dim * math.log(s.original_max_positions / (num_rotations * 2 * math.pi)) /
            (2 * math.log(theta)))

  low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
  if s.truncate:
    low, high = math.floor(low), math.ceil(high)
  low, high = max(low, 0), min(high, head_dim - 1)
  if low == high:
    high += 0.001  # transformers' guard against a zero-width ramp
  ramp_H2 = np.clip((np.arange(head_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
  extrapolation_H2 = 1 - ramp_H2.astype(np.float32)
  pos_freqs_H2 = _theta_powers(head_dim, theta)
  inv_extrapolated_H2 = 1.0 / pos_freqs_H2
  inv_interpolated_H2 = 1.0 / (s.factor * pos_freqs_H2)
  return (inv_interpolated_H2 * (1 - extrapolation_H2) +
          inv_extrapolated_H2 * extrapolation_H2)


def rope_frequencies(head_dim: int, theta: float,
                     scaling: RopeScaling) -> tuple[np.ndarray, float]:
  """(inv_freq [head_dim // 2] float32, attention_factor): trace-time constants."""
  if scaling.kind == "linear":
    inv_freq_H2 = _default_inv_freq(head_dim, theta) / scaling.factor
  elif scaling.kind == "llama3":
    inv_freq_H2 = _llama3(_default_inv_freq(head_dim, theta), scaling)
  else:
    inv_freq_H2 = _yarn(head_dim, theta, scaling)
  return inv_freq_H2.astype(np.float32), float(scaling.attention_factor)
