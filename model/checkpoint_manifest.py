"""Checksums of a checkpoint step's files, written once the step is complete, verified on load.

Orbax compresses arrays, so a truncated or zeroed file fails to decode; a flipped bit inside a
compressed chunk or in an uncompressed one can decode to different numbers without any error.
The manifest (STEP/checksums.json, rundir/layout.py's MANIFEST_FILE) holds every file's size
and sha256, written after the save has finished (the files are final then); a restore compares
them before trusting the step. Steps written before manifests existed, or whose writer died
between the save and the manifest, have none and are read unverified (as before).

The manifest's own digest names the step's content: two paths holding the same checkpoint
have the same digest (eval.py's run identity uses it).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

from rundir.layout import MANIFEST_FILE  # the step folder's file name, as the run dir spells it

_CHUNK = 1 << 22


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _files(step_dir: str) -> list[str]:
  """Every file under the step folder (relative, sorted), the manifest itself excepted."""
  found = []
  for directory, _, names in os.walk(step_dir):
    for name in names:
      relative = os.path.relpath(os.path.join(directory, name), step_dir)
      if relative != MANIFEST_FILE:
        found.append(relative)
  return sorted(found)


def write(step_dir: str) -> str:
  """Writes STEP/checksums.json for the files the step holds now; returns its path."""
  files = {name: {"size": os.path.getsize(os.path.join(step_dir, name)),
                  "sha256": _sha256(os.path.join(step_dir, name))}
           for name in _files(step_dir)}
  path = os.path.join(step_dir, MANIFEST_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump({"algorithm": "sha256", "files": files}, f, indent=1, sort_keys=True)
  os.replace(path + ".tmp", path)  # a reader sees no manifest or a whole one
  return path


def has_manifest(step_dir: str) -> bool:
  return os.path.isfile(os.path.join(step_dir, MANIFEST_FILE))


def _listed(step_dir: str) -> dict[str, dict]:
  path = os.path.join(step_dir, MANIFEST_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
    files = manifest["files"]
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
        for v in files.values()):
      raise ValueError("no {file: {size, sha256}} map")
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ManifestMismatch(path, f"unreadable checksum manifest ({e})") from e
  return files


class ManifestMismatch(Exception):
  """A file of the step differs from what its manifest recorded (or the manifest is bad)."""

  def __init__(self, path: str, reason: str):
    self.path, self.reason = path, reason
    super().__init__(f"{path}: {reason}")


def verify(step_dir: str, items: Sequence[str] | None = None, part: tuple[int, int] = (0, 1)
           ) -> bool:
  """Checks the step's files against its manifest; False if it has none (unverified).

  `items`: only files under these item folders (eval reads the parameters alone);
  `part` = (i, n): only every n-th file from the i-th, so n processes share the reading.
  Raises ManifestMismatch naming the first file that is missing, of another size or content.
  """
  if not has_manifest(step_dir):
    return False
  listed = _listed(step_dir)
  names = [name for name in sorted(listed)
           if items is None or name.split(os.sep, 1)[0] in items]
  index, count = part
  for name in names[index::count]:
    path = os.path.join(step_dir, name)
    expected = listed[name]
    if not os.path.isfile(path):
      raise ManifestMismatch(path, "missing (listed in the checksum manifest)")
    size = os.path.getsize(path)
    if size != expected["size"]:
      raise ManifestMismatch(path, f"{size} bytes, the checksum manifest says "
                                   f"{expected['size']}")
    if _sha256(path) != expected["sha256"]:
      raise ManifestMismatch(path, "sha256 differs from the checksum manifest (the file "
                                   "changed after the checkpoint was written)")
  return True


def digest(step_dir: str) -> str | None:
  """sha256 of the step's manifest: one name for the step's whole content (None: no manifest)."""
  path = os.path.join(step_dir, MANIFEST_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()
