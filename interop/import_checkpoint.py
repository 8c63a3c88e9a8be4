"""Imports a Hugging Face Llama- or Gemma-family checkpoint as one of our runs.

    python -m interop.import_checkpoint --source=hf/CodeLlama-7b --output=runs/codellama-7b

reads SOURCE/config.json, SOURCE/*.safetensors (one file or shards + index) and
SOURCE/tokenizer.model, and writes

    OUTPUT/checkpoints/0/{params, model_config}   orbax, the layout of a training run
    OUTPUT/model_config.json                      our ModelConfig
    OUTPUT/tokenizer.model                        the SentencePiece model, byte for byte
    OUTPUT/import.json                            source, family, dtypes, tensor mapping,
                                                  special ids and whether prompts take BOS

so `eval.py --config.checkpoint=OUTPUT` and `train.py --config.init_from=OUTPUT` use it like
any run. RoPE scaling "linear", "llama3" and "yarn" imports exactly (model/rope.py); features
our decoder cannot reproduce exactly ("dynamic" / "longrope" RoPE, which change with the
sequence length, sliding windows, soft-capping, biases, ...) are refused by name
(interop/hf_families.py).

Memory: every parameter is built with `jax.make_array_from_callback` from lazy memmap views
of its HF tensors (interop/safetensors_reader.py; a stacked block parameter has one per layer),
so each device's slice is the only anonymous host memory allocated for it: peak host memory
~ the largest single device slice in float32 (e.g. 5.8 GB for a 7B Llama's 32 stacked
4096 x 11008 MLP matrices on one device, 0.7 GB with fsdp=8), plus reclaimable page cache
for the mmapped files, plus orbax's write staging (bounded by `--save_concurrent_gb`). A 7B
model therefore imports with far less host RAM than its size.

The run's layout and file names belong to rundir/layout.py; the source's are Hugging Face's
(hf_families.HF_CONFIG_FILE, HF_TOKENIZER_FILE).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import os
import sys
from typing import Any

import jax
import numpy as np
import sentencepiece as spm
from jax.sharding import Mesh

from interop import hf_families
from interop.safetensors_reader import SafetensorsCheckpoint, SafetensorsError
from model import run_dir
from model.config import ModelConfig
from model.decoder import Params, abstract_model
from model.sharding import make_mesh, param_shardings


def _set(tree: dict, path: tuple, value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _flat(tree: Any) -> dict[tuple, Any]:
  return {tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def load_hf_params(source: str, cfg: ModelConfig, mesh: Mesh) -> tuple[Params, dict[str, Any]]:
  """Our parameter tree, sharded over `mesh` as training shards it, read slice by slice.

  Returns (params, mapping report for import.json).
  """
  checkpoint = SafetensorsCheckpoint(source)
  maps = hf_families.tensor_maps(cfg)
  unexpected, skipped = hf_families.unmapped_tensors(list(checkpoint), maps, cfg.tie_embeddings)
  if unexpected:
    raise hf_families.UnsupportedCheckpointError(
        f"{source} holds tensors our decoder has no place for (they would be silently "
        f"dropped): {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
  _, shapes, logical_axes = abstract_model(cfg)
  shardings = _flat(param_shardings(logical_axes, shapes, mesh))
  flat_shapes = _flat(shapes)
  if set(flat_shapes) != set(maps):
    raise AssertionError(f"mapping out of date with model/decoder.py: "
                         f"{sorted(set(flat_shapes) ^ set(maps))}")
  params: Params = {}
  mapped, dtypes = {}, set()
  for path, tmap in maps.items():
    want = flat_shapes[path]
    stacked = isinstance(tmap, hf_families.StackedTensorMap)
    views = []
    for layer, layer_map in enumerate(tmap.layers if stacked else (tmap,)):
      where = "/".join(map(str, path)) + (f"[{layer}]" if stacked else "")
      if layer_map.hf_name not in checkpoint:
        raise hf_families.UnsupportedCheckpointError(
            f"{source} lacks tensor {layer_map.hf_name} (needed for {where})")
      hf_shape = checkpoint.shape(layer_map.hf_name)
      if int(np.prod(hf_shape)) != int(np.prod(layer_map.split_shape)):
        raise ValueError(f"{layer_map.hf_name} has shape {hf_shape}; config.json implies "
                         f"{layer_map.split_shape}")
      views.append(layer_map.view(checkpoint.get(layer_map.hf_name)))
      mapped[where] = layer_map.hf_name
      dtypes.add(checkpoint.dtype_name(layer_map.hf_name))
    if stacked:
      # Our [layers, ...] parameter: layer i is HF's model.layers.{i} tensor.
      assert (len(views),) + views[0].shape == want.shape, (path, views[0].shape, want.shape)
      def read(index, views=views, dtype=want.dtype):
        layers = views[index[0]]
        out = np.empty((len(layers),) + layers[0][index[1:]].shape, dtype)
        for i, view in enumerate(layers):  # filled in place: one slice's memory, not two
          out[i] = view[index[1:]]
        return out
    else:
      assert views[0].shape == want.shape, (path, views[0].shape, want.shape)
      def read(index, view=views[0], dtype=want.dtype):
        return np.ascontiguousarray(view[index], dtype=dtype)
    # Called once per addressable device with that device's index; only that slice is
    # copied out of the memmaps (and converted, e.g. bfloat16 -> float32).
    _set(params, path, jax.make_array_from_callback(want.shape, shardings[path], read))
  return params, {"mapped": mapped, "skipped": skipped, "source_dtypes": sorted(dtypes)}


def tokenizer_metadata(tokenizer_path: str, family: str, source: str) -> dict[str, Any]:
  """Special ids of the SentencePiece model and whether prompts start with BOS."""
  processor = spm.SentencePieceProcessor(model_file=tokenizer_path)
  # Both families were trained with BOS first; tokenizer_config.json may say otherwise.
  add_bos = True
  config_path = os.path.join(source, hf_families.HF_TOKENIZER_CONFIG_FILE)
  if os.path.exists(config_path):
    with open(config_path) as f:
      add_bos = bool(json.load(f).get("add_bos_token", add_bos))
  return {"vocab_size": processor.get_piece_size(), "bos_id": processor.bos_id(),
          "eos_id": processor.eos_id(), "pad_id": processor.pad_id(),
          "unk_id": processor.unk_id(), "add_bos": add_bos, "family": family}


def import_checkpoint(source: str, output: str, mesh: Mesh | None = None,
                      dtype: str = "float32", save_concurrent_gb: int = 4) -> dict[str, Any]:
  """Writes OUTPUT (see module docstring); returns what went into import.json."""
  with open(os.path.join(source, hf_families.HF_CONFIG_FILE)) as f:
    hf_config = json.load(f)
  family = hf_families.family_of(hf_config)
  cfg = hf_families.model_config(hf_config, dtype=dtype)
  tokenizer_src = os.path.join(source, hf_families.HF_TOKENIZER_FILE)
  if not os.path.exists(tokenizer_src):
    raise FileNotFoundError(f"{source} has no {hf_families.HF_TOKENIZER_FILE} (a SentencePiece "
                            "model is required; tokenizer.json-only checkpoints are not "
                            "supported)")
  tokenizer = tokenizer_metadata(tokenizer_src, family, source)
  if mesh is None:
    mesh = make_mesh(fsdp=-1)
  params, report = load_hf_params(source, cfg, mesh)

  os.makedirs(output, exist_ok=True)
  # Collective: every process writes its own shards of the parameters.
  run_dir.save_params_checkpoint(output, params, cfg, save_concurrent_gb=save_concurrent_gb)
  metadata = {
      "source": os.path.abspath(source), "family": family,
      "model_type": hf_config["model_type"], "architectures": hf_config.get("architectures"),
      "compute_dtype": dtype, "param_dtype": "float32",
      "max_position_embeddings": hf_config.get("max_position_embeddings"),
      "tokenizer": tokenizer, "warnings": _warnings(hf_config, cfg, tokenizer), **report,
  }
  if jax.process_index() == 0:
    _write_side_files(output, tokenizer_src, cfg, metadata)
  return metadata


def _warnings(hf_config: dict[str, Any], cfg: ModelConfig,
              tokenizer: dict[str, Any]) -> list[str]:
  warnings = []
  if tokenizer["vocab_size"] != cfg.vocab_size:
    warnings.append(f"tokenizer has {tokenizer['vocab_size']} pieces, the model "
                    f"{cfg.vocab_size} rows: eval.py refuses such a pair")
  if hf_config.get("eos_token_id") not in (None, tokenizer["eos_id"]):
    warnings.append(f"config.json eos_token_id {hf_config['eos_token_id']} != tokenizer "
                    f"eos id {tokenizer['eos_id']}; sampling stops on the tokenizer's")
  return warnings


def _write_side_files(output: str, tokenizer_src: str, cfg: ModelConfig,
                      metadata: dict[str, Any]) -> None:
  # import.json first: the tokenizer is only loadable as an imported one beside it.
  run_dir.write_text(output, run_dir.IMPORT_FILE, json.dumps(metadata, indent=2, sort_keys=True))
  run_dir.install_tokenizer(tokenizer_src, output)
  run_dir.write_text(output, run_dir.MODEL_CONFIG_FILE, cfg.to_json())


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--source", required=True, help="HF checkpoint directory")
  parser.add_argument("--output", required=True, help="run directory to write")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="compute dtype recorded in the model config (params stay float32)")
  parser.add_argument("--mesh_data", type=int, default=1)
  parser.add_argument("--mesh_fsdp", type=int, default=-1)
  parser.add_argument("--mesh_tensor", type=int, default=1)
  parser.add_argument("--save_concurrent_gb", type=int, default=4)
  args = parser.parse_args(argv)
  mesh = make_mesh(args.mesh_data, args.mesh_fsdp, args.mesh_tensor)
  try:
    metadata = import_checkpoint(args.source, args.output, mesh, args.dtype,
                                 args.save_concurrent_gb)
  except (SafetensorsError, hf_families.UnsupportedCheckpointError, OSError) as e:
    # Problems with the source checkpoint (missing, a directory where a file belongs, ...)
    # or with writing the output (a full disk): one line, no trace.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps({"output": os.path.abspath(args.output), "family": metadata["family"],
                    "tensors": len(metadata["mapped"]), "warnings": metadata["warnings"]}))


if __name__ == "__main__":
  main()
