"""Training throughput of one jitted train step (AdamW, full forward + backward), as JSON.

    python benchmarks/train_throughput.py --preset tiny --batch 8 --seq 256
    python benchmarks/train_throughput.py --d-model 512 --layers 8 --heads 8 --ffn 2048 \
        --vocab 32000 --batch 8 --seq 512 --peer-python ../peer-venv/bin/python

Prints one JSON line: tokens/s, model FLOPs per token (6N + attention), MFU against
--peak-flops (FLOP/s of one device, e.g. 989e12 for an H100's dense bf16), and, with
--peer-python (a Python that has torch + transformers), the same-shaped `transformers`
LlamaForCausalLM measured in the same run by ../shared/peers/hf_llama_bench.py, with the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from benchmarks.llama_peer import add_model_args, llama_config, run_peer
from configs import base
from model.presets import get_model_config
from model.config import ModelConfig
from model.kernels import resolve as resolve_kernels
from model.sharding import batch_sharding, make_mesh
from training.optimizer import make_optimizer
from training.state import init_state, make_layout
from training.step import make_train_step


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default=None, help="a model/presets.py preset (else the dims)")
  add_model_args(p, d_model=128, layers=2, heads=4, ffn=512, vocab=1024, batch=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--remat", default="none", choices=["none", "full", "save_dots"],
                 help="ModelConfig.remat policy")
  p.add_argument("--kernels", default="auto", choices=["auto", "xla", "cpu"],
                 help="ModelConfig.kernels (auto: cpu on a CPU, xla elsewhere)")
  p.add_argument("--attention-impl", default="xla", choices=["xla", "cudnn"],
                 help="ModelConfig.attention_impl (xla kernels only)")
  p.add_argument("--no-scan", action="store_true",
                 help="run the layers in a Python loop instead of one scan")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--mesh", default="-1,1,1", help="data,fsdp,tensor")
  p.add_argument("--peak-flops", type=float, default=0.0, help="per-device peak FLOP/s for MFU")
  return p.parse_args()


def model_config(args: argparse.Namespace) -> ModelConfig:
  overrides = {"remat": args.remat, "kernels": args.kernels,
               "attention_impl": args.attention_impl, "scan_layers": not args.no_scan}
  if args.preset:
    return get_model_config(args.preset, {"dtype": args.dtype, **overrides})
  return llama_config(args, **overrides)


def measure_ours(cfg: ModelConfig, args: argparse.Namespace) -> dict:
  mesh = make_mesh(*(int(x) for x in args.mesh.split(",")))
  tx, schedule = make_optimizer(base.get_config().optimizer, 1000)
  layout = make_layout(cfg, tx, mesh)
  state = init_state(layout, seed=0)
  sharding = batch_sharding(mesh)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, cfg.vocab_size, (args.batch, args.seq + 1)).astype(np.int32)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
           "loss_mask": np.ones((args.batch, args.seq), np.float32),
           "segment_ids": np.ones((args.batch, args.seq), np.int32),
           "positions": np.broadcast_to(np.arange(args.seq, dtype=np.int32),
                                        (args.batch, args.seq)).copy()}
  batch = {k: jax.device_put(v, sharding) for k, v in batch.items()}
  with jax.set_mesh(mesh):
    step = jax.jit(make_train_step(layout.graphdef, tx, schedule, 1),
                   in_shardings=(layout.shardings, sharding), donate_argnums=0)
    started = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - started
    for _ in range(args.warmup):
      state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
      started = time.perf_counter()
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - started)
  step_s = statistics.median(times)
  tokens_per_sec = args.batch * args.seq / step_s
  flops_per_token = cfg.flops_per_token(args.seq)
  result = {"tokens_per_sec": round(tokens_per_sec, 1), "step_s_median": round(step_s, 4),
            "step_s_min": round(min(times), 4),
            "compile_s": round(compile_s, 2), "flops_per_token": flops_per_token,
            "achieved_tflops": round(tokens_per_sec * flops_per_token / 1e12, 4),
            "devices": jax.device_count(), "platform": jax.devices()[0].platform,
            "device_kind": jax.devices()[0].device_kind}
  if args.peak_flops:
    result["mfu"] = round(tokens_per_sec * flops_per_token /
                          (args.peak_flops * jax.device_count()), 4)
  return result


def measure_peer(cfg: ModelConfig, args: argparse.Namespace) -> dict:
  return run_peer(args, cfg, "train", seq=args.seq, steps=args.steps)


def main() -> None:
  args = parse_args()
  cfg = model_config(args)
  # The 1-minute load average before and after our timing: on a shared machine a ratio is
  # only trustworthy when the load stayed put while both sides ran.
  load_start = os.getloadavg()[0]
  result = {"benchmark": "train_throughput", "preset": args.preset, "batch": args.batch,
            "seq": args.seq, "dtype": cfg.dtype, "d_model": cfg.d_model,
            "layers": cfg.num_layers, "vocab": cfg.vocab_size, "kernels": cfg.kernels,
            "kernels_resolved": resolve_kernels(cfg.kernels), "remat": cfg.remat,
            "scan_layers": cfg.scan_layers, **measure_ours(cfg, args)}
  result["loadavg_1m"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
  if args.peer_python:
    peer = measure_peer(cfg, args)
    # hf_llama_bench.py reports {"train": {"tokens_per_s": ...}, "contention": {...}}.
    peer_tps = peer.get("train", {}).get("tokens_per_s")
    result["peer"] = "transformers LlamaForCausalLM (PyTorch CPU)"
    result["peer_tokens_per_sec"] = None if peer_tps is None else round(peer_tps, 1)
    if "error" in peer:
      result["peer_error"] = peer["error"]
    if "contention" in peer:
      result["peer_contention"] = peer["contention"]
    if peer_tps:
      result["ratio_vs_peer"] = round(result["tokens_per_sec"] / peer_tps, 3)
    # Under contention PyTorch's OpenMP threads stall far more than XLA's pool (steps of the
    # same shape swing 20x), so the medians' ratio says more about the load than the code;
    # the best steps' ratio is the steadier comparison on a shared machine.
    peer_min = peer.get("train", {}).get("step_s_min")
    if peer_min:
      result["peer_step_s_min"] = round(peer_min, 4)
      result["ratio_vs_peer_best_step"] = round(peer_min / result["step_s_min"], 3)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
