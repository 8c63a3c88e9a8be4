"""`--config.KEY=VALUE` overrides: an unknown KEY is one line naming the closest valid keys.

ml_collections' config_flags answers an unknown key with a 50-line chained traceback ending
in `AttributeError: "'KEY'"`. train.py, eval.py and scripts/study.py parse their flags with
`parse_flags`, which checks every override against the config file first; sweeps/configs.py
words its own check with `unknown_key_message`.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import sys
from typing import Any, Sequence

import ml_collections
from absl import app


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every settable dotted key of `config` (groups are not keys, their members are)."""
  keys = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      keys += flat_keys(value, f"{prefix}{key}.")
    else:
      keys.append(prefix + key)
  return keys


def closest_keys(config: ml_collections.ConfigDict, key: str, n: int = 3) -> list[str]:
  """The valid keys most like `key`, comparing whole keys and their last parts (so
  `learnin_rate` finds `optimizer.learning_rate`)."""
  leaf = key.rsplit(".", 1)[-1]

  def likeness(candidate: str) -> float:
    return max(difflib.SequenceMatcher(None, key, candidate).ratio(),
               difflib.SequenceMatcher(None, leaf, candidate.rsplit(".", 1)[-1]).ratio())
  scored = sorted(((likeness(k), k) for k in flat_keys(config)), key=lambda s: -s[0])
  return [k for score, k in scored[:n] if score >= 0.6]


def has_key(config: ml_collections.ConfigDict, key: str) -> bool:
  node: Any = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def unknown_key_message(config: ml_collections.ConfigDict, key: str) -> str:
  closest = closest_keys(config, key)
  hint = (f"closest valid keys: {', '.join(closest)}" if closest else
          f"valid top-level keys: {', '.join(sorted(config.keys()))}")
  return f"unknown config key {key!r} ({hint})"


def _load_config(spec: str) -> ml_collections.ConfigDict | None:
  """config_flags' `--config=FILE[:ARG]` -> FILE's get_config([ARG]); None if unloadable
  (config_flags itself then reports the problem as usual)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    return None
  module_spec = importlib.util.spec_from_file_location("_overrides_config", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except Exception:  # pylint: disable=broad-except  (config_flags reports it properly)
    return None


def unknown_override(argv: Sequence[str], flag: str = "config") -> str | None:
  """The message for the first `--FLAG.KEY` override in argv that names no key, or None."""
  spec, keys = None, []
  args = list(argv[1:])
  for i, arg in enumerate(args):
    if arg == "--":
      break
    if arg.startswith(f"--{flag}="):
      spec = arg.split("=", 1)[1]
    elif arg == f"--{flag}" and i + 1 < len(args):
      spec = args[i + 1]
    elif arg.startswith(f"--{flag}."):
      keys.append(arg[len(flag) + 3:].split("=", 1)[0])
  if spec is None or not keys:
    return None
  config = _load_config(spec)
  if config is None:
    return None
  for key in keys:
    if not has_key(config, key):
      return unknown_key_message(config, key) + f"; from --{flag}.{key}"
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parser for app.run(main, flags_parser=parse_flags), with one-line errors
  for unknown config keys (exit status 2)."""
  problem = unknown_override(argv)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)
  return app.parse_flags_with_usage(argv)
