"""What the model benchmarks share: Llama-shaped model flags and the `transformers` peer.

train_throughput.py and decode_throughput.py compare against the same-shaped
LlamaForCausalLM, run by ../shared/peers/hf_llama_bench.py under another Python (one that
has torch + transformers, `--peer-python`) in the same benchmark run.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess

from model.config import ModelConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
PEER_SCRIPT = REPO.parent / "shared" / "peers" / "hf_llama_bench.py"


def add_model_args(p: argparse.ArgumentParser, *, d_model: int, layers: int, heads: int,
                   ffn: int, vocab: int, batch: int) -> None:
  """The shape, dtype, batch and peer flags, with this benchmark's defaults."""
  p.add_argument("--d-model", type=int, default=d_model)
  p.add_argument("--layers", type=int, default=layers)
  p.add_argument("--heads", type=int, default=heads)
  p.add_argument("--kv-heads", type=int, default=None)
  p.add_argument("--ffn", type=int, default=ffn)
  p.add_argument("--vocab", type=int, default=vocab)
  p.add_argument("--batch", type=int, default=batch)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--peer-python", default=None,
                 help="run the transformers peer with this Python")
  p.add_argument("--peer-threads", type=int, default=2)


def llama_config(args: argparse.Namespace, **overrides) -> ModelConfig:
  """Our decoder in the peer's shape: SwiGLU, untied head, head_dim = d_model / heads."""
  return ModelConfig(vocab_size=args.vocab, d_model=args.d_model, num_layers=args.layers,
                     num_heads=args.heads, num_kv_heads=args.kv_heads or args.heads,
                     head_dim=args.d_model // args.heads, d_ff=args.ffn, mlp_activation="silu",
                     tie_embeddings=False, dtype=args.dtype, **overrides)


def run_peer(args: argparse.Namespace, cfg: ModelConfig, mode: str, **flags) -> dict:
  """hf_llama_bench.py's JSON for `mode` ("train" | "generate"), or {"error": ...}."""
  if not PEER_SCRIPT.exists():
    return {"error": f"{PEER_SCRIPT} not found"}
  cmd = [args.peer_python, str(PEER_SCRIPT), "--mode", mode, "--d-model", str(cfg.d_model),
         "--layers", str(cfg.num_layers), "--heads", str(cfg.num_heads), "--kv-heads",
         str(cfg.num_kv_heads), "--ffn", str(cfg.d_ff), "--vocab", str(cfg.vocab_size),
         "--batch", str(args.batch), "--threads", str(args.peer_threads)]
  for name, value in flags.items():
    cmd += [f"--{name.replace('_', '-')}", str(value)]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])
