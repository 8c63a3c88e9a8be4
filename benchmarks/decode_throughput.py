"""Sampling throughput of the decode engine with one sample per prompt, as one JSON line.

    python benchmarks/decode_throughput.py --d-model 512 --layers 8 --heads 8 --ffn 2048 \
        --vocab 32000 --batch 16 --prompt-len 256 --new-tokens 128 \
        --peer-python ../peer-venv/bin/python

Generated tokens/s = batch * new_tokens / median wall time of a whole call of the decode
engine (decode/engine.py: paged prefill, then one slot per prompt; prefill included, like
the peer), after one compile+warm-up call. No stop string fires
(random weights), so every row generates all new tokens. With --peer-python, the same-shaped
`transformers` LlamaForCausalLM.generate (../shared/peers/hf_llama_bench.py --mode generate)
is measured in the same run and the ratio reported.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.llama_peer import add_model_args, llama_config, run_peer
from decode.engine import make_sample_fn
from decode.stop_matcher import build_stop_table
from decode.token_choice import SamplingConfig
from model.decoder import Decoder


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  add_model_args(p, d_model=512, layers=8, heads=8, ffn=2048, vocab=32000, batch=16)
  p.add_argument("--prompt-len", type=int, default=256)
  p.add_argument("--new-tokens", type=int, default=128)
  p.add_argument("--temperature", type=float, default=0.8)
  p.add_argument("--runs", type=int, default=3)
  return p.parse_args()


def measure_ours(args: argparse.Namespace) -> dict:
  cfg = llama_config(args)
  graphdef, state = nnx.split(Decoder(cfg, nnx.Rngs(0)))
  params = nnx.to_pure_dict(state)
  sample = make_sample_fn(
      graphdef, SamplingConfig(max_new_tokens=args.new_tokens, temperature=args.temperature),
      eos_id=-1, num_samples=1, num_slots=args.batch)
  stop = tuple(map(jnp.asarray, build_stop_table([""] * args.vocab, "[DONE]")))
  rng = np.random.default_rng(0)
  prompt = jnp.asarray(rng.integers(2, args.vocab, (args.batch, args.prompt_len)), jnp.int32)
  lengths = jnp.full((args.batch,), args.prompt_len, jnp.int32)
  keys = jnp.arange(args.batch, dtype=jnp.int32)
  generate = lambda seed: sample(params, prompt, lengths, keys, jnp.int32(args.batch),
                                 jax.random.key(seed), *stop, None)
  started = time.perf_counter()
  jax.block_until_ready(generate(0))
  compile_s = time.perf_counter() - started
  times = []
  for run in range(args.runs):
    started = time.perf_counter()
    out, out_lengths = jax.block_until_ready(generate(run + 1))
    times.append(time.perf_counter() - started)
  assert int(np.min(np.asarray(out_lengths))) == args.new_tokens
  wall = statistics.median(times)
  return {"tokens_per_sec": round(args.batch * args.new_tokens / wall, 1),
          "wall_s_median": round(wall, 3), "compile_and_first_call_s": round(compile_s, 2),
          "platform": jax.devices()[0].platform}


def measure_peer(args: argparse.Namespace) -> dict:
  return run_peer(args, llama_config(args), "generate", prompt_len=args.prompt_len,
                  new_tokens=args.new_tokens, runs=args.runs, temperature=args.temperature)


def main() -> None:
  args = parse_args()
  result = {"benchmark": "decode_throughput", "batch": args.batch,
            "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
            "d_model": args.d_model, "layers": args.layers, "vocab": args.vocab,
            "dtype": args.dtype, **measure_ours(args)}
  if args.peer_python:
    peer = measure_peer(args)
    peer_tps = peer.get("generate", {}).get("tokens_per_s")
    result["peer"] = "transformers LlamaForCausalLM.generate (PyTorch CPU)"
    result["peer_tokens_per_sec"] = peer_tps
    if peer_tps:
      result["ratio_vs_peer"] = round(result["tokens_per_sec"] / peer_tps, 3)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
