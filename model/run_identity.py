"""A run's identity: the resolved settings that determine its numbers, fixed for its lifetime.

train.py and eval.py resume whatever their workdir holds. Resumed with another learning rate,
seed, checkpoint or temperature, a run would silently become two runs under one name (16
problems sampled from one model, 8 from another; a config.json that claims the new values
throughout). So each run records its identity (WORKDIR/identity.json: a flat {key: value}
map, built by training/loop.py and evaluation/runner.py, which know which of their settings
change numbers) when it starts, and a resume compares the one it would run with:

  - the same: it goes on;
  - keys that differ: one line naming each (`key: recorded X, now Y`), exit status 2, nothing
    in the workdir touched;
  - differing, with `--config.resume_mismatch=allow`: it goes on on purpose, and
    WORKDIR/config_history.jsonl gets a line with the step and every change (old and new),
    before identity.json takes the new values.

Settings that do not change numbers (logging and checkpoint cadence, workers, where the data
lies, how far this launch goes) are not part of an identity; a change to one of them is
recorded in the history too, never refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from model import checkpoint_manifest
from rundir import layout

REFUSE, ALLOW = "refuse", "allow"
_MISSING = "(absent)"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}; tuples become lists (as JSON stores them)."""
  if isinstance(tree, dict):
    flat: dict[str, Any] = {}
    for key, value in tree.items():
      flat.update(flatten(value, f"{prefix}{key}."))
    return flat
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def without(flat: dict[str, Any], keys: frozenset[str], prefixes: tuple[str, ...] = ()
            ) -> dict[str, Any]:
  return {k: v for k, v in flat.items()
          if k not in keys and not any(k.startswith(p) for p in prefixes)}


def mismatch_policy(config: Any) -> str:
  """config.resume_mismatch ("refuse", the default, or "allow"), checked."""
  policy = config.get("resume_mismatch", REFUSE) if hasattr(config, "get") else REFUSE
  if policy not in (REFUSE, ALLOW):
    raise layout.IdentityMismatch(
        f"config.resume_mismatch must be {REFUSE!r} or {ALLOW!r}, got {policy!r}")
  return policy


def changes(recorded: dict[str, Any], now: dict[str, Any]) -> dict[str, list[Any]]:
  """{key: [recorded value, new value]} for every key that differs (absent keys included)."""
  return {key: [recorded.get(key, _MISSING), now.get(key, _MISSING)]
          for key in sorted(recorded.keys() | now.keys())
          if recorded.get(key, _MISSING) != now.get(key, _MISSING)}


def _show(value: Any) -> str:
  return value if value == _MISSING else json.dumps(value)


def _read(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise layout.IdentityMismatch(
        f"{path} cannot be read ({e}); it records which run this workdir holds: restore it, "
        "or use another workdir") from e


def recorded(workdir: str) -> dict[str, Any] | None:
  """{"kind", "identity"} of the run in `workdir`, or None if it recorded none."""
  path = os.path.join(workdir, layout.IDENTITY_FILE)
  record = _read(path)
  if record is None:
    return None
  if not (isinstance(record, dict) and isinstance(record.get("identity"), dict)):
    raise layout.IdentityMismatch(
        f"{path} is not an identity record; restore it, or use another workdir")
  return record


def check(workdir: str, kind: str, identity: dict[str, Any], policy: str
          ) -> dict[str, list[Any]]:
  """Compares a resume's identity with the recorded one; returns the changes to record.

  Raises layout.IdentityMismatch (one line) if they differ and `policy` is not ALLOW.
  Writes nothing: `record` does, once the resume has got past its other checks.
  """
  try:
    record = recorded(workdir)
  except layout.IdentityMismatch:
    if policy != ALLOW:
      raise
    return {layout.IDENTITY_FILE: ["(unreadable)", "(recorded anew)"]}
  if record is None:  # a run from before identities were recorded: nothing to compare with
    return {}
  recorded_identity = {"kind": record.get("kind"), **record["identity"]}
  differing = changes(recorded_identity, {"kind": kind, **identity})
  if differing and policy != ALLOW:
    shown = "; ".join(f"{key}: recorded {_show(old)}, now {_show(new)}"
                      for key, (old, new) in differing.items())
    raise layout.IdentityMismatch(
        f"{workdir} holds a {record.get('kind')} run made with other settings ({shown}); use "
        "another workdir for a new run, or --config.resume_mismatch=allow to continue this "
        f"one with the new settings (recorded in {layout.CONFIG_HISTORY_FILE})")
  return differing


def record(workdir: str, kind: str, identity: dict[str, Any], config_json: str, *,
           resuming: bool, step: int | None, identity_changes: dict[str, list[Any]]) -> None:
  """Records a launch: a history line (a start, or a resume that changed anything), then
  identity.json and config.json (`config_json`: the launch's whole config). Call once the
  launch has passed its checks, on the one process that writes the workdir."""
  config = json.loads(config_json)
  if not resuming:
    line = {"event": "start", "kind": kind, "identity": identity}
  elif not os.path.exists(os.path.join(workdir, layout.IDENTITY_FILE)):
    # resumed from before identities were recorded
    line = {"event": "identity first recorded", "kind": kind, "identity": identity}
  else:
    previous = _read(os.path.join(workdir, layout.CONFIG_FILE))
    other = {}
    if isinstance(previous, dict):
      other = {k: v for k, v in changes(flatten(previous), flatten(config)).items()
               if k not in identity_changes}
    line = {"event": "resume", "identity_changes": identity_changes, "other_changes": other,
            "mismatch_allowed": bool(identity_changes)} if identity_changes or other else None
  if line is not None:
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "step": step, **line}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, layout.CONFIG_HISTORY_FILE), "a", encoding="utf-8") as f:
      f.write(json.dumps(line, sort_keys=True) + "\n")
  layout.write_text(workdir, layout.IDENTITY_FILE,
                     json.dumps({"kind": kind, "identity": identity}, indent=1, sort_keys=True))
  layout.write_text(workdir, layout.CONFIG_FILE, config_json)


def history(workdir: str) -> list[dict[str, Any]]:
  """The lines of config_history.jsonl (a line cut short by a crash is skipped)."""
  lines = []
  try:
    with open(os.path.join(workdir, layout.CONFIG_HISTORY_FILE), encoding="utf-8") as f:
      for text in f:
        try:
          lines.append(json.loads(text))
        except ValueError:
          continue
  except FileNotFoundError:
    pass
  return lines


# --- Paths stand for their content: a moved or copied file or checkpoint is the same run. ---

def file_fingerprint(path: str) -> str:
  """"sha256:HEX" of a file's bytes; the path as given when it is no file (yet)."""
  if not path or not os.path.isfile(path):
    return path
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      digest.update(chunk)
  return f"sha256:{digest.hexdigest()}"


def checkpoint_fingerprint(path: str) -> dict[str, Any] | str:
  """{"step", "content"} of the checkpoint step a workdir / checkpoints dir / step dir resolves
  to: content is its checksum manifest's digest (model/checkpoint_manifest.py), or the step
  folder's real path for a step written without one. The path as given if it resolves to
  none (reported where it is loaded)."""
  if not path:
    return path
  try:
    directory, step = layout.resolve_checkpoint(path)
  except layout.CheckpointError:
    return path
  step_dir = os.path.join(str(directory), str(step))
  return {"step": step,
          "content": checkpoint_manifest.digest(step_dir) or os.path.realpath(step_dir)}
