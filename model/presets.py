"""Model size presets: `config.model = "NAME"` in any experiment config.

`tiny` is for tests and CPU demos. The others follow the paper's sizes (Austin et al. 2021,
Table 1: 244M ... 137B; LaMDA-style decoders with gated-GELU MLPs, 32k SentencePiece vocab,
multi-head attention). 137b has the paper's shape: 64 layers, d_model 8192, 128 heads of 128,
d_ff 65536. The smaller shapes are ours, chosen so each count is within 10% of its name
(tests/test_presets.py checks with jax.eval_shape; `python -m model.presets` prints a table).
They live beside ModelConfig so that training, eval and benchmarks resolve a name without
reading configs/ (which only entry points and sweeps read).
"""
from __future__ import annotations

from typing import Any

from model.config import ModelConfig

_PAPER_VOCAB = 32_000


def _paper(num_layers: int, d_model: int, num_heads: int, d_ff: int) -> ModelConfig:
  return ModelConfig(vocab_size=_PAPER_VOCAB, d_model=d_model, num_layers=num_layers,
                     num_heads=num_heads, num_kv_heads=num_heads, head_dim=128, d_ff=d_ff,
                     mlp_activation="gelu", tie_embeddings=True)


PRESETS: dict[str, ModelConfig] = {
    # ~2.1M parameters: trains at thousands of tokens/s on a laptop CPU.
    "tiny": ModelConfig(vocab_size=8192, d_model=128, num_layers=4, num_heads=4, num_kv_heads=2,
                        head_dim=32, d_ff=512, mlp_activation="silu", tie_embeddings=True),
    "244m": _paper(num_layers=12, d_model=1024, num_heads=8, d_ff=4096),
    "422m": _paper(num_layers=14, d_model=1280, num_heads=10, d_ff=5120),
    "1b": _paper(num_layers=18, d_model=1792, num_heads=14, d_ff=7168),
    "4b": _paper(num_layers=26, d_model=3072, num_heads=24, d_ff=12288),
    "8b": _paper(num_layers=30, d_model=4096, num_heads=32, d_ff=16384),
    "68b": _paper(num_layers=46, d_model=8192, num_heads=64, d_ff=49152),
    "137b": _paper(num_layers=64, d_model=8192, num_heads=128, d_ff=65536),
}


def get_model_config(name: str, overrides: dict[str, Any] | None = None) -> ModelConfig:
  """The preset `name` with fields replaced by `overrides` (e.g. from config.model_overrides)."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
  overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
  return PRESETS[name].replace(**overrides)


def _main() -> None:
  from model.decoder import count_params  # pylint: disable=g-import-not-at-top
  print(f"{'preset':>7} {'params':>16} {'layers':>6} {'d_model':>7} {'heads':>5} {'d_ff':>6}")
  for name, cfg in PRESETS.items():
    print(f"{name:>7} {count_params(cfg):>16,} {cfg.num_layers:>6} {cfg.d_model:>7} "
          f"{cfg.num_heads:>5} {cfg.d_ff:>6}")


if __name__ == "__main__":
  _main()
