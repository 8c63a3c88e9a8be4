"""Every size preset's parameter count is within 10% of its name (shapes only, no memory)."""
import re

import pytest

from model.presets import PRESETS, get_model_config
from model.decoder import count_params


def _nominal(name: str) -> float:
  number, unit = re.fullmatch(r"(\d+)([mb])", name).groups()
  return int(number) * (1e6 if unit == "m" else 1e9)


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "tiny"])
def test_paper_preset_size_within_ten_percent(name):
  count = count_params(PRESETS[name])
  assert abs(count - _nominal(name)) <= 0.10 * _nominal(name), f"{name}: {count:,}"


def test_tiny_is_under_five_million():
  assert count_params(PRESETS["tiny"]) < 5_000_000


def test_137b_has_the_papers_shape():
  cfg = PRESETS["137b"]
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff) == (
      64, 8192, 128, 128, 65536)


def test_overrides_and_unknown_presets():
  assert get_model_config("tiny", {"dtype": "bfloat16", "remat": None}).dtype == "bfloat16"
  with pytest.raises(ValueError, match="unknown model preset"):
    get_model_config("13b")
