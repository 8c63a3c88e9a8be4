"""A run's identity is its full resolved config: when a relaunch may reuse a workdir.

A run's name encodes only its swept values, so after a base override changes (lr 1e-3 ->
3e-3), or num_train_steps is raised, the same name points at a workdir made under another
config. train.py and eval.py record the config they ran with (WORKDIR/config.json; evals that
finished before eval.py wrote it have it in results.json's meta), and the plan compares it
with the config the sweep asks for now: a workdir that holds work done under a different
config is an error listing the differences, or, with `new_run_dirs`, the run moves to the
next free NAME.v2, NAME.v3, ... (one whose recorded config matches is reused).

A workdir with nothing done in it yet (no checkpoint, no metrics; no samples, no results)
may be reused whatever it records: its run starts from scratch anyway. A workdir with work
but no readable config record (config.json missing or garbage, and for evals no config in
results.json) is not this run: the plan refuses it like a differing config.
"""
from __future__ import annotations

import json
import os
from typing import Any

from rundir import layout

# Keys that say how far this launch goes, not what the run computes: stopping at step 2 and
# resuming to the end gives the numbers of a run that never stopped (tested in training).
NOT_IDENTITY = frozenset({"stop_at_step", "resume_mismatch"})


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def recorded_config(workdir: str, kind: str) -> dict[str, Any] | None:
  """The config the workdir's run recorded, or None if it recorded none."""
  config = _read_json(os.path.join(workdir, layout.CONFIG_FILE))
  if isinstance(config, dict):
    return config
  if kind == "eval":
    results = _read_json(os.path.join(workdir, layout.RESULTS_FILE))
    meta = results.get("meta") if isinstance(results, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
      return meta["config"]
  return None


def holds_work(workdir: str, kind: str) -> bool:
  """Whether a relaunch would continue work already done in `workdir`."""
  if kind == "train":
    names = (layout.METRICS_FILE,)
    return bool(layout.checkpoint_steps(workdir)) or any(
        os.path.exists(os.path.join(workdir, n)) for n in names)
  return any(os.path.exists(os.path.join(workdir, n))
             for n in (layout.SAMPLES_FILE, layout.RESULTS_FILE))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    flat = {}
    for key, value in tree.items():
      flat.update(_flat(value, f"{prefix}{key}."))
    return flat
  return {prefix[:-1]: tree}


def differences(recorded: dict[str, Any], requested: dict[str, Any]) -> list[str]:
  """`key: recorded X, requested Y` for every key whose value differs (identity keys only)."""
  old, new = _flat(recorded), _flat(requested)
  missing = object()
  lines = []
  for key in sorted(old.keys() | new.keys()):
    if key in NOT_IDENTITY:
      continue
    a, b = old.get(key, missing), new.get(key, missing)
    if a != b:
      show = lambda v: "(absent)" if v is missing else json.dumps(v)
      lines.append(f"{key}: recorded {show(a)}, requested {show(b)}")
  return lines


def conflict(workdir: str, kind: str, requested: dict[str, Any]) -> list[str]:
  """The differences that forbid reusing `workdir` for `requested` ([] if it may be reused)."""
  if not holds_work(workdir, kind):
    return []
  recorded = recorded_config(workdir, kind)
  if recorded is None:
    # Work without a readable record of its config (config.json missing, cut short or not
    # a config) may be anything: never taken for the run asked for now.
    return [f"{layout.CONFIG_FILE}: missing or unreadable, so the config its work was done "
            "with is unknown"]
  return differences(recorded, requested)


def versioned(workdir: str, version: int) -> str:
  return workdir if version == 1 else f"{workdir}.v{version}"
