"""Throughput of the eval protocol's sampling (decode/engine.py), as one JSON line.

    python benchmarks/eval_throughput.py --peer-python ../peer-venv/bin/python

The protocol by default: the small Llama shape (d_model 512, 8 layers, 8 heads, ffn 2048,
vocab 32000, float32, random weights so that no sample stops early), 4 problems x 20 samples,
512-token prompts, 128 new tokens, temperature 0.5. Generated tokens/s = problems * samples *
new_tokens / median wall time of a whole call (the prefill included), after one compile and
warm-up call. `--shared-prefix N`: every prompt starts with the same N tokens (as a few-shot
template's examples do: 700 of MBPP's ~810-token 3-shot prompts), held once as the sampler's
shared prefix (evaluation/sampler.py finds it the same way). The peer draws its own random
prompts: generate() shares nothing across problems, so its speed does not depend on them.

`essential_gflop` counts the work no sampler can skip: one prefill per problem (weights and
causal attention) and, per generated token, the weights, LM head and attention over its
context; at --peak-gflops (this CPU's matmul rate; the issue measured ~170) that bounds
tokens/s (`bound_tokens_per_sec`), and `share_of_bound` is the measured fraction of it.
With --peer-python, `transformers` generate(num_return_sequences=samples) on the same shape
(../shared/peers/hf_llama_bench.py --mode generate, how HF-based harnesses draw n samples)
runs in the same process tree and `ratio` = ours / peer.
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
from jax.sharding import NamedSharding, PartitionSpec

from benchmarks.llama_peer import add_model_args, llama_config, run_peer
from decode.engine import make_sample_fn
from decode.host_devices import split_host_cpu
from decode.stop_matcher import build_stop_table
from decode.token_choice import SamplingConfig
from model.config import ModelConfig
from model.decoder import Decoder
from model.sharding import batch_sharding, make_mesh


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  add_model_args(p, d_model=512, layers=8, heads=8, ffn=2048, vocab=32000, batch=4)
  p.add_argument("--samples", type=int, default=20, help="samples per problem")
  p.add_argument("--slots", type=int, default=0, help="slots per call; 0 = problems * samples")
  p.add_argument("--prompt-len", type=int, default=512)
  p.add_argument("--shared-prefix", type=int, default=0,
                 help="leading prompt tokens every problem shares (held once)")
  p.add_argument("--new-tokens", type=int, default=128)
  p.add_argument("--temperature", type=float, default=0.5)
  p.add_argument("--runs", type=int, default=2)
  p.add_argument("--peer-runs", type=int, default=1)
  p.add_argument("--cpu-devices", type=int, default=0,
                 help="on a CPU, XLA devices to split it into (0 = one per core, as eval.py; "
                      "decode/host_devices.py); the problems and slots split over them")
  p.add_argument("--peak-gflops", type=float, default=170.0,
                 help="the machine's matmul rate, for the FLOP bound")
  return p.parse_args()


def essential_flops(cfg: ModelConfig, problems: int, samples: int, prompt_len: int,
                    new_tokens: int, shared_prefix: int = 0) -> float:
  """One prefill per problem (the shared prefix once) + every generated token, each with its
  attention context."""
  width = cfg.num_heads * cfg.head_dim
  kv_width = cfg.num_kv_heads * cfg.head_dim
  per_layer = 2 * cfg.d_model * (2 * width + 2 * kv_width) + 2 * 3 * cfg.d_model * cfg.d_ff
  head = 2 * cfg.d_model * cfg.vocab_size
  attention = lambda context: cfg.num_layers * 4 * width * context  # scores + values
  prefill_tokens = lambda start, end: ((end - start) * cfg.num_layers * per_layer +
                                       sum(attention(t + 1) for t in range(start, end)))
  prefill = (prefill_tokens(0, shared_prefix) +
             problems * (prefill_tokens(shared_prefix, prompt_len) + head))
  decode = problems * samples * sum(cfg.num_layers * per_layer + head +
                                    attention(prompt_len + t) for t in range(new_tokens))
  return float(prefill + decode)


def prompts(args: argparse.Namespace) -> np.ndarray:
  """[problems, prompt_len] random tokens, the first shared_prefix the same in every row."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(2, args.vocab, (args.batch, args.prompt_len)).astype(np.int32)
  tokens[:, :args.shared_prefix] = tokens[0, :args.shared_prefix]
  return tokens


def measure_ours(args: argparse.Namespace, cfg: ModelConfig) -> dict:
  graphdef, state = nnx.split(Decoder(cfg, nnx.Rngs(0)))
  params = nnx.to_pure_dict(state)
  slots = args.slots or args.batch * args.samples
  sample = make_sample_fn(graphdef, SamplingConfig(max_new_tokens=args.new_tokens,
                                                   temperature=args.temperature),
                          eos_id=-1, num_samples=args.samples, num_slots=slots)
  stop = tuple(map(jnp.asarray, build_stop_table([""] * args.vocab, "[DONE]")))
  prompt = prompts(args)
  prefix = jnp.asarray(prompt[0, :args.shared_prefix]) if args.shared_prefix else None
  suffix = jnp.asarray(prompt[:, args.shared_prefix:])
  lengths = jnp.full((args.batch,), suffix.shape[1], jnp.int32)
  keys = jnp.arange(args.batch, dtype=jnp.int32)
  # Like evaluation/sampler.py: the data axis over every device, each shard its own loop.
  mesh = make_mesh(-1, 1, 1)
  if args.batch % mesh.shape["data"] or slots % mesh.shape["data"]:
    raise SystemExit(f"--batch {args.batch} and {slots} slots must split over "
                     f"{mesh.shape['data']} devices (see --cpu-devices)")
  params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
  suffix, lengths, keys = (jax.device_put(x, batch_sharding(mesh, x.ndim))
                           for x in (suffix, lengths, keys))

  def call(seed):
    with jax.set_mesh(mesh):
      return sample(params, suffix, lengths, keys, jnp.int32(args.batch), jax.random.key(seed),
                    *stop, prefix)
  started = time.perf_counter()
  jax.block_until_ready(call(0))
  compile_s = time.perf_counter() - started
  times = []
  for run in range(args.runs):
    started = time.perf_counter()
    out, out_lengths = jax.block_until_ready(call(run + 1))
    times.append(time.perf_counter() - started)
  assert int(np.min(np.asarray(out_lengths))) == args.new_tokens  # no sample stopped early
  wall = statistics.median(times)
  return {"slots": slots, "tokens_per_sec": round(args.batch * args.samples * args.new_tokens
                                                   / wall, 1),
          "wall_s_median": round(wall, 3), "compile_and_first_call_s": round(compile_s, 2),
          "platform": jax.devices()[0].platform, "devices": mesh.size}


def main() -> None:
  args = parse_args()
  split_host_cpu(args.cpu_devices)  # before JAX starts its backends
  cfg = llama_config(args)
  if not 0 <= args.shared_prefix < args.prompt_len:
    raise SystemExit(f"--shared-prefix {args.shared_prefix} must be in [0, --prompt-len)")
  flops = essential_flops(cfg, args.batch, args.samples, args.prompt_len, args.new_tokens,
                          args.shared_prefix)
  tokens = args.batch * args.samples * args.new_tokens
  bound = tokens / (flops / (args.peak_gflops * 1e9))
  result = {"benchmark": "eval_throughput", "problems": args.batch, "samples": args.samples,
            "prompt_len": args.prompt_len, "shared_prefix": args.shared_prefix,
            "new_tokens": args.new_tokens,
            "temperature": args.temperature, "d_model": args.d_model, "layers": args.layers,
            "vocab": args.vocab, "dtype": args.dtype, **measure_ours(args, cfg),
            "essential_gflop": round(flops / 1e9, 1), "peak_gflops": args.peak_gflops,
            "bound_tokens_per_sec": round(bound, 1)}
  result["share_of_bound"] = round(result["tokens_per_sec"] / bound, 3)
  if args.peer_python:
    peer = run_peer(args, cfg, "generate", prompt_len=args.prompt_len,
                    new_tokens=args.new_tokens, runs=args.peer_runs,
                    temperature=args.temperature, num_return_sequences=args.samples)
    peer_tps = peer.get("generate", {}).get("tokens_per_s")
    result["peer"] = ("transformers LlamaForCausalLM.generate(num_return_sequences) "
                      "(PyTorch CPU)")
    result["peer_tokens_per_sec"] = peer_tps
    if peer_tps:
      result["ratio"] = round(result["tokens_per_sec"] / peer_tps, 3)
    else:
      result["peer_error"] = peer.get("error", "no tokens_per_s in the peer's output")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
