"""Exports one of our runs as a Hugging Face checkpoint (the importer's inverse).

    python -m interop.hf_export --run=runs/ft-synthesis --output=hf/ft-synthesis [--family=llama]

Writes OUTPUT/config.json, OUTPUT/model*.safetensors (float32, sharded with an index above
`--max_shard_gb`) and OUTPUT/tokenizer.model, loadable with
`transformers.AutoModelForCausalLM.from_pretrained(OUTPUT)`. The family comes from the run's
import.json, else from its numerics (Gemma conventions -> gemma, otherwise llama); a model
that matches neither family exactly is refused. Each parameter is fetched to the host one at
a time and written out before the next, but the run's parameters are restored in full first
(on the default device), so export needs host or device memory for the model once.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import os
import shutil
import struct

import jax
import numpy as np

from interop import hf_families
from interop.safetensors_reader import INDEX_NAME, SINGLE_NAME
from model import run_dir
from model.decoder import abstract_model


def _write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
  header, offset = {}, 0
  for name, array in tensors.items():
    header[name] = {"dtype": "F32", "shape": list(array.shape),
                    "data_offsets": [offset, offset + array.nbytes]}
    offset += array.nbytes
  header["__metadata__"] = {"format": "pt"}
  encoded = json.dumps(header, separators=(",", ":")).encode()
  encoded += b" " * (-len(encoded) % 8)  # data must start 8-byte aligned
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(encoded)))
    f.write(encoded)
    for array in tensors.values():
      f.write(np.ascontiguousarray(array, dtype="<f4").tobytes())


def export_checkpoint(run: str, output: str, family: str | None = None,
                      max_shard_gb: float = 4.0) -> dict:
  """Writes the HF checkpoint of `run` (workdir, checkpoints dir or step dir); returns config."""
  cfg = run_dir.load_model_config(run)
  tokenizer_meta = {}
  metadata = run_dir.import_metadata(run_dir.run_of(run))
  if metadata is not None:
    family = family or metadata["family"]
    tokenizer_meta = metadata.get("tokenizer", {})
  family = family or ("gemma" if cfg.embed_scale_by_sqrt_dim else "llama")
  special_ids = {"bos_token_id": tokenizer_meta.get("bos_id", 2),
                 "eos_token_id": tokenizer_meta.get("eos_id", 1),
                 "pad_token_id": tokenizer_meta.get("pad_id", 0)}
  special_ids = {k: (None if v is None or v < 0 else v) for k, v in special_ids.items()}
  config = hf_families.hf_config(cfg, family, **special_ids)
  _, shapes, _ = abstract_model(cfg)
  params = run_dir.load_params(run, shapes)

  os.makedirs(output, exist_ok=True)
  shards, current, size = [], {}, 0
  for path, tmap in hf_families.tensor_maps(cfg).items():
    leaf = params
    for key in path:
      leaf = leaf[key]
    ours = np.asarray(jax.device_get(leaf), np.float32)
    if isinstance(tmap, hf_families.StackedTensorMap):  # [layers, ...]: one tensor per layer
      tensors = [(m.hf_name, m.inverse(ours[i])) for i, m in enumerate(tmap.layers)]
    else:
      tensors = [(tmap.hf_name, tmap.inverse(ours))]
    for name, array in tensors:
      if current and size + array.nbytes > max_shard_gb * 2**30:
        shards.append(current)
        current, size = {}, 0
      current[name] = array
      size += array.nbytes
  shards.append(current)
  if len(shards) == 1:
    _write_safetensors(os.path.join(output, SINGLE_NAME), shards[0])
  else:
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
      name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      _write_safetensors(os.path.join(output, name), shard)
      weight_map.update({tensor: name for tensor in shard})
      total += sum(a.nbytes for a in shard.values())
    with open(os.path.join(output, INDEX_NAME), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  with open(os.path.join(output, hf_families.HF_CONFIG_FILE), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  tokenizer = run_dir.tokenizer_path(run)
  if tokenizer:
    shutil.copyfile(tokenizer, os.path.join(output, hf_families.HF_TOKENIZER_FILE))
  return config


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", required=True, help="our run (workdir / checkpoints / step)")
  parser.add_argument("--output", required=True, help="HF checkpoint directory to write")
  parser.add_argument("--family", choices=("llama", "gemma"), default=None)
  parser.add_argument("--max_shard_gb", type=float, default=4.0)
  args = parser.parse_args(argv)
  config = export_checkpoint(args.run, args.output, args.family, args.max_shard_gb)
  print(json.dumps({"output": os.path.abspath(args.output), "model_type": config["model_type"]}))


if __name__ == "__main__":
  main()
