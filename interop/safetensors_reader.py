"""Lazy, zero-copy reading of `*.safetensors` checkpoints (one file or a sharded index).

Why not `safetensors.safe_open(framework="numpy")`: numpy has no bfloat16, and safetensors'
numpy path refuses BF16 tensors (`TypeError: data type 'bfloat16' not understood`), which is
how most public Llama/Gemma checkpoints are stored. The format is simple (8-byte header
length, a JSON header of {name: {dtype, shape, data_offsets}}, then raw little-endian data),
so we memory-map each file and expose every tensor as a read-only `np.memmap` view with
`ml_dtypes.bfloat16` for BF16. Slicing such a view reads only the pages of that slice from
disk; nothing is loaded until a caller copies a slice out.
"""
from __future__ import annotations

from collections.abc import Iterator
import json
import math
import os
import struct
from typing import Any

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("bool"),
    "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    # FP8 checkpoints (e.g. DeepSeek's, Llama FP8 variants): safetensors' E4M3 is the
    # "fn" variant (finite, no infinities), as torch.float8_e4m3fn.
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class SafetensorsError(ValueError):
  """A .safetensors file (or its index) that is truncated or corrupt; the message names it."""


def _corrupt(path: str, why: str) -> SafetensorsError:
  return SafetensorsError(f"{path}: {why}; the file is truncated or corrupt (download or "
                          "convert it again)")


def _shape(value: Any) -> tuple[int, ...] | None:
  """A header's shape as a tuple of non-negative ints, or None if it is not one."""
  if not isinstance(value, list) or not all(
      isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
    return None
  return tuple(value)


def _read_header(path: str) -> tuple[dict, int]:
  """The JSON header and where the data starts, every entry checked against the file."""
  if not os.path.isfile(path):
    raise SafetensorsError(f"{path}: not a regular file (a directory?); a .safetensors "
                           "checkpoint's shards are files")
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    prefix = f.read(8)
    if len(prefix) < 8:
      raise _corrupt(path, f"{size} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > size - 8:
      raise _corrupt(path, f"header of {header_len} bytes announced, {size - 8} bytes follow")
    try:
      header = json.loads(f.read(header_len))
    except (ValueError, UnicodeDecodeError) as e:
      raise _corrupt(path, f"header is not valid JSON ({e})") from None
  if not isinstance(header, dict):
    raise _corrupt(path, "header is not a JSON object")
  data_size = size - 8 - header_len
  for tensor, info in header.items():
    if tensor == "__metadata__":
      continue
    try:
      begin, end = (int(x) for x in info["data_offsets"])
      shape, dtype = _shape(info["shape"]), info["dtype"]
    except (KeyError, TypeError, ValueError):
      raise _corrupt(path, f"tensor {tensor}: malformed header entry {info!r}"[:300]) from None
    if shape is None:
      raise _corrupt(path, f"tensor {tensor}: shape {info['shape']!r} is not a list of "
                     "non-negative integers"[:300])
    if dtype not in _DTYPES:
      raise SafetensorsError(f"{path}: tensor {tensor} has dtype {dtype!r}"[:300] + ", which "
                             f"this reader does not support ({', '.join(_DTYPES)})")
    if not 0 <= begin <= end <= data_size:
      raise _corrupt(path, f"tensor {tensor} ends at byte {end} of a {data_size}-byte data "
                     "section")
    # Python ints: a product of huge dimensions must not wrap around as numpy's int64 does.
    if (end - begin) != math.prod(shape) * _DTYPES[dtype].itemsize:
      raise _corrupt(path, f"tensor {tensor}: {end - begin} bytes for shape {list(shape)} "
                     f"of {dtype}"[:300])
    info["shape"] = list(shape)
  return header, 8 + header_len


class SafetensorsCheckpoint:
  """All tensors of a checkpoint directory, by name, as lazy memory-mapped arrays."""

  def __init__(self, directory: str):
    self.directory = directory
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"{directory} is not a directory: pass the checkpoint's "
                              f"directory (the one holding {SINGLE_NAME} or {INDEX_NAME})")
    index_path = os.path.join(directory, INDEX_NAME)
    if os.path.exists(index_path):
      try:
        with open(index_path) as f:
          weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
      except (ValueError, KeyError, TypeError, AttributeError, IsADirectoryError) as e:
        raise _corrupt(index_path, f"not an index with a 'weight_map' ({e!r})") from None
      missing = [name for name in files if not os.path.exists(os.path.join(directory, name))]
      if missing:
        raise FileNotFoundError(f"{index_path} names {missing[0]}, which is not in {directory}"
                                f" ({len(missing)} of {len(files)} shards missing)")
    elif os.path.exists(os.path.join(directory, SINGLE_NAME)):
      files = [SINGLE_NAME]
    else:
      raise FileNotFoundError(
          f"{directory} has neither {INDEX_NAME} nor {SINGLE_NAME}; only safetensors "
          "checkpoints are supported (convert pytorch_model.bin with transformers first)")
    # name -> (file, dtype, shape, absolute byte offset)
    self._entries: dict[str, tuple[str, np.dtype, tuple[int, ...], int]] = {}
    self._dtype_names: dict[str, str] = {}
    for name in files:
      path = os.path.join(directory, name)
      header, data_start = _read_header(path)
      for tensor, info in header.items():
        if tensor == "__metadata__":
          continue
        begin = int(info["data_offsets"][0])
        self._entries[tensor] = (path, _DTYPES[info["dtype"]], tuple(info["shape"]),
                                 data_start + begin)
        self._dtype_names[tensor] = info["dtype"]
    self._maps: dict[str, np.memmap] = {}

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return self._entries[name][2]

  def dtype_name(self, name: str) -> str:
    """The stored dtype as safetensors spells it ("BF16", "F32", ...)."""
    return self._dtype_names[name]

  def get(self, name: str) -> np.ndarray:
    """A read-only memory-mapped view of one tensor; slice it before copying."""
    if name not in self._entries:
      raise KeyError(f"tensor {name!r} not found in {self.directory}")
    path, dtype, shape, offset = self._entries[name]
    count = int(np.prod(shape)) if shape else 1
    # One memmap per tensor (offset must be exact); the OS shares the page cache anyway.
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape or (count,))
