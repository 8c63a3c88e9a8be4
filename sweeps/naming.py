"""Readable, deterministic, filesystem-safe run names from axis values."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

# Names people use for long keys; anything else falls back to the key's last dotted part.
DEFAULT_SHORT_NAMES = {
    "optimizer.learning_rate": "lr",
    "optimizer.warmup_steps": "warmup",
    "optimizer.weight_decay": "wd",
    "num_train_steps": "steps",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


def format_value(value: Any) -> str:
  """The shortest faithful text of a value, as used in names and on command lines."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    text = repr(value)  # shortest text that parses back to the same float
    if "e" in text:     # 1e-05 -> 1e-5: easier to read, still parses to the same float
      mantissa, exponent = text.split("e")
      text = f"{mantissa}e{int(exponent)}"
    return text
  return str(value)


def value_label(key: str, value: Any) -> str:
  """What a value looks like in a run name (config files by their stem)."""
  if key == "config":
    return os.path.splitext(os.path.basename(str(value)))[0]
  return format_value(value)


def short_names(keys: Sequence[str], overrides: Mapping[str, str]) -> dict[str, str]:
  """key -> name used in run names; falls back to the full key where short ones collide."""
  names = {key: overrides.get(key) or DEFAULT_SHORT_NAMES.get(key) or key.split(".")[-1]
           for key in keys}
  for key, name in names.items():
    if key not in overrides and list(names.values()).count(name) > 1:
      names[key] = key
  return names


def sanitize(text: str) -> str:
  """Keeps letters, digits and . _ = , + -; anything else (/, spaces, ...) becomes _."""
  text = _UNSAFE.sub("_", text)
  return "_" + text if text.startswith((".", "-")) else text  # no hidden files, no flags


def run_name(assignment: Mapping[str, Any], names: Mapping[str, str]) -> str:
  """`model=1b,lr=0.0003,seed=0` for one run's axis values; `default` for a sweep without axes."""
  if not assignment:
    return "default"
  return sanitize(",".join(f"{names[key]}={value_label(key, value)}"
                           for key, value in assignment.items()))
