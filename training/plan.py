"""The memory and FLOP plan of a training run, from its ahead-of-time compiled train step.

    python -m training.plan --config=configs/pretrain.py [--config.KEY=VALUE ...] \
        --devices=N --device_memory_gib=G

compiles the real train step (`jax.jit(...).lower(...).compile()`, the step train.py runs)
for a mesh of N devices from abstract arrays (ShapeDtypeStructs carrying their shardings:
nothing is allocated) and prints one JSON line: params, mesh, batch_size, seq_len,
compile_s, flops_per_step (model FLOPs as MaxText counts them: 6 per parameter-token of
every weight matmul and the LM head, plus the causal attention matmuls, forward and
backward), bytes_per_device {arguments, temporaries, outputs, aliased, total} from XLA's
memory analysis of the compiled step, and fits (total <= G GiB). `--devices=N` makes N fake
CPU devices (XLA's --xla_force_host_platform_device_count, set before JAX starts), so any
mesh can be planned on a laptop; `--devices=0` plans on the devices JAX finds.

A plan is for the machine the run will use: `kernels="auto"` is resolved for
`--target_platform` (default gpu: the xla kernels), not for the CPU that compiles it. XLA:CPU
compiles the plan, so the numbers are XLA:CPU's buffer assignment of the same program
(fusion and scheduling differ a little per backend), a close estimate of an accelerator's.

train.py runs the same compilation before its first step and refuses a run whose step cannot
fit (training/aot.py `check_fits`).
"""
from __future__ import annotations

import os
import sys


def _fake_host_devices(argv: list[str]) -> None:
  """--devices=N (N > 0): N fake CPU devices. XLA reads the flag once, when JAX starts, so
  this runs before anything imports jax."""
  count = None
  for i, arg in enumerate(argv):
    if arg.startswith("--devices="):
      count = arg.split("=", 1)[1]
    elif arg == "--devices" and i + 1 < len(argv):
      count = argv[i + 1]
  if count and count.isdigit() and int(count) > 0:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={count}")
    os.environ["JAX_PLATFORMS"] = "cpu"


if __name__ == "__main__":
  _fake_host_devices(sys.argv)

# pylint: disable=g-import-not-at-top,wrong-import-position
import json
from typing import Any

import jax
import ml_collections
from absl import app, flags

from model import kernels
from model.config import ModelConfig
from model.decoder import count_params
from model.sharding import batch_sharding, make_mesh
from training.aot import (GIB, bytes_per_device, compile_step, device_memory_bytes,
                          jit_train_step)
from training.loop import resolve_model_config, validate_config
from training.optimizer import make_optimizer
from training.state import make_layout


def plan(config: ml_collections.ConfigDict, model_cfg: ModelConfig,
         device_memory_gib: float = 0.0) -> dict[str, Any]:
  """The plan of `config` with `model_cfg` on the mesh of all devices JAX has (one dict)."""
  mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  tx, schedule = make_optimizer(config.optimizer, config.num_train_steps)
  layout = make_layout(model_cfg, tx, mesh)
  data_sharding = batch_sharding(mesh)
  train_step = jit_train_step(layout, schedule, config.grad_accum_steps, data_sharding)
  compiled, compile_s = compile_step(train_step, layout, config.batch_size, config.seq_len,
                                     data_sharding)
  used = bytes_per_device(compiled)
  budget = device_memory_bytes(device_memory_gib)
  tokens = config.batch_size * config.seq_len
  return {
      "model": config.model, "params": count_params(model_cfg), "mesh": dict(mesh.shape),
      "devices": mesh.size, "platform": jax.devices()[0].platform,
      "batch_size": config.batch_size, "seq_len": config.seq_len,
      "grad_accum_steps": config.grad_accum_steps, "dtype": model_cfg.dtype,
      "remat": model_cfg.remat, "kernels": kernels.resolve(model_cfg.kernels),
      "scan_layers": model_cfg.scan_layers, "compile_s": round(compile_s, 2),
      "flops_per_step": model_cfg.flops_per_token(config.seq_len) * tokens,
      "bytes_per_device": used, "gib_per_device": round(used["total"] / GIB, 3),
      "device_memory_gib": None if budget is None else round(budget / GIB, 3),
      "fits": None if budget is None else used["total"] <= budget,
  }


def for_platform(model_cfg: ModelConfig, platform: str) -> ModelConfig:
  """`kernels="auto"` resolved for the platform the run is planned for."""
  return model_cfg.replace(kernels=kernels.resolve(model_cfg.kernels, platform))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if _DEVICES.value and jax.device_count() != _DEVICES.value:
    raise app.UsageError(f"--devices={_DEVICES.value} but JAX has {jax.device_count()} "
                         "devices (was jax imported before the flag was read?)")
  validate_config(config, jax.device_count())
  model_cfg = for_platform(resolve_model_config(config), _TARGET_PLATFORM.value)
  result = plan(config, model_cfg,
                _DEVICE_MEMORY_GIB.value or config.get("device_memory_gib", 0.0))
  result["target_platform"] = _TARGET_PLATFORM.value
  print(json.dumps(result))
  if result["fits"] is False:
    sys.exit(1)


if __name__ == "__main__":
  from ml_collections import config_flags

  _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                            lock_config=True)
  _DEVICES = flags.DEFINE_integer(
      "devices", 0, "Plan for this many fake CPU devices (0: the devices JAX finds).")
  _DEVICE_MEMORY_GIB = flags.DEFINE_float(
      "device_memory_gib", 0.0, "Memory of one device in GiB, for `fits` (0: "
      "config.device_memory_gib, else what JAX reports for the device, if it does).")
  _TARGET_PLATFORM = flags.DEFINE_enum(
      "target_platform", "gpu", ["gpu", "tpu", "cpu"],
      "The platform the run is planned for: resolves kernels=auto (cpu: the cpu kernels).")
  flags.mark_flags_as_required(["config"])
  app.run(main)
