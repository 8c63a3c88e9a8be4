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
import os
import struct

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("bool"),
}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def _read_header(path: str) -> tuple[dict, int]:
  with open(path, "rb") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_len))
  return header, 8 + header_len


class SafetensorsCheckpoint:
  """All tensors of a checkpoint directory, by name, as lazy memory-mapped arrays."""

  def __init__(self, directory: str):
    self.directory = directory
    index_path = os.path.join(directory, INDEX_NAME)
    if os.path.exists(index_path):
      with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
      files = sorted(set(weight_map.values()))
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
        if info["dtype"] not in _DTYPES:
          raise ValueError(f"{path}: tensor {tensor} has unsupported dtype {info['dtype']}")
        begin, _ = info["data_offsets"]
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
