"""Loads experiment config files and applies a run's overrides, as config_flags would."""
from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from typing import Any

import ml_collections

from launch.overrides import closest_keys

_CACHE: dict[str, Any] = {}


def load_config_module(path: str, root: str):
  """Imports a config file (e.g. configs/synthesis.py); `root` makes `from configs import ...`
  inside it work."""
  full = os.path.join(root, path)
  if full not in _CACHE:
    if not os.path.isfile(full):
      raise FileNotFoundError(f"config file {path!r} not found under {root}")
    if root not in sys.path:
      sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(
        f"_sweep_config_{len(_CACHE)}", full)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _CACHE[full] = module
  return _CACHE[full]


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> str | None:
  """Sets each dotted key on a locked config; returns the first problem, or None.

  Locking makes an unknown key an error, and ConfigDict's type checks refuse e.g. a string
  for a float, exactly what train.py / eval.py would refuse later, but before any launch.
  """
  config.lock()
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for i, part in enumerate(parents):
      child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
      if not isinstance(child, ml_collections.ConfigDict):
        return _unknown(config, key, ".".join(parents[:i + 1]), node)
      node = child
    if leaf not in node:
      return _unknown(config, key, key, node)
    if isinstance(node[leaf], ml_collections.ConfigDict):
      return f"key {key!r} is a group of keys, not a value"
    try:
      node[leaf] = value
    except (TypeError, ValueError, KeyError) as e:
      return f"key {key!r} cannot take {value!r}: {e}"
  return None


def _unknown(config: ml_collections.ConfigDict, key: str, missing: str, node) -> str:
  known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
  closest = closest_keys(config, key)
  hint = f"closest valid keys: {', '.join(closest)}; " if closest else ""
  return (f"unknown config key {key!r} ({missing!r} does not exist; {hint}"
          f"known here: {known})")
