"""The memory and FLOP plan of a training run or of the eval's sampler, compiled ahead of time
for the accelerator the run will use.

    python -m training.plan --config=configs/pretrain.py --target=v5e-8 \
        [--step=train|sample] [--config.KEY=VALUE ...]

compiles the real train step (`jax.jit(...).lower(...).compile()`, the step train.py runs),
or with --step=sample the eval's sampling call (training/plan_sampler.py), for the target's
devices from abstract arrays (ShapeDtypeStructs carrying their shardings: nothing is
allocated) and prints one JSON line: target, params, mesh, batch, the kernels chosen, compile_s,
flops_per_step (model FLOPs as MaxText counts them: 6 per parameter-token of every weight
matmul and the LM head, plus the causal attention matmuls, forward and backward),
bytes_per_device {arguments, temporaries, outputs, aliased, total} from the compiler's memory
analysis, fits, and a roofline: the step's time if it ran at the device's peak FLOP/s or HBM
bandwidth, whichever binds (communication not counted), and the best MFU that allows.

Targets (model/targets.py: v4-8, v5e-8, v5e-256, v5p-8, v5p-128, v6e-8, h100, h100x8, 2xh100x8,
a100-80x8) are compiled by their own compiler on this machine (requirements-accel-plan.txt):
a TPU's compiler refuses a program its HBM cannot hold (fits=false, with the compiler's
message); a GPU's program fits if it needs at most the memory JAX lets a process use
(XLA_PYTHON_CLIENT_MEM_FRACTION of it, 0.75 by default). `kernels="auto"` resolves from the
target's devices (tpu: Pallas splash attention). Without the target's compiler installed the
plan is an estimate ("estimate": true): XLA:CPU compiles the same program for as many fake CPU
devices, with the xla kernels. Without --target, `--devices=N` plans on N fake CPU devices
(`--devices=0`: the devices JAX finds) against --device_memory_gib.

Exit status: 0 fits, 1 does not fit, 2 bad input. train.py runs the same compilation before
its first step and refuses a run whose step cannot fit (training/aot.py `check_fits`).
"""
from __future__ import annotations

import os
import sys


def _flag_value(argv: list[str], name: str) -> str | None:
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _prepare_jax(argv: list[str]) -> None:
  """Before anything imports jax: with --target, JAX stays on the CPU (the TPU and GPU plugins
  load as compilers only) and, if the target's compiler is missing, gets as many fake CPU
  devices as the target has; --devices=N (N > 0) makes N fake CPU devices. XLA reads the
  device count once, when JAX starts."""
  count = _flag_value(argv, "devices")
  name = _flag_value(argv, "target")
  if name:
    from model import targets  # pylint: disable=g-import-not-at-top  (imports no jax)
    targets.use_compilers()
    os.environ["JAX_PLATFORMS"] = "cpu"
    if name in targets.TARGETS and targets.missing_compiler(targets.TARGETS[name]):
      count = str(targets.TARGETS[name].devices)
  if count and count.isdigit() and int(count) > 0:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={count}")
    os.environ["JAX_PLATFORMS"] = "cpu"


if __name__ == "__main__":
  _prepare_jax(sys.argv)

# pylint: disable=g-import-not-at-top,wrong-import-position
import contextlib
import json
from typing import Any

import jax
import jaxlib
import ml_collections
from absl import app, flags

from model import kernels, targets
from model.config import ModelConfig
from model.decoder import count_params
from model.sharding import batch_sharding, make_mesh
from training import plan_sampler
from training.aot import (GIB, bytes_per_device, compile_step, device_memory_bytes,
                          jit_train_step)
from training.loop import resolve_model_config, validate_config
from training.optimizer import make_optimizer
from training.state import make_layout

# Full remat runs every layer's forward twice: 8 instead of 6 FLOPs per parameter-token.
_RECOMPUTE = {"full": 8 / 6}


def compiler_versions() -> dict[str, str]:
  """jaxlib's and, where installed, libtpu's versions (what compiled the plan)."""
  versions = {"jaxlib": jaxlib.__version__}
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    versions["libtpu"] = metadata.version("libtpu")
  except Exception:  # pylint: disable=broad-except
    pass
  return versions


def _compile_context(target: targets.Target | None, estimate: bool):
  return (targets.no_persistent_cache() if target is not None and not estimate
          else contextlib.nullcontext())


def _compiler_refusal(error: Exception) -> str:
  """The TPU compiler's RESOURCE_EXHAUSTED message, without the stack it carries."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  keep = [l for l in lines if "RESOURCE_EXHAUSTED" in l or "Total hbm usage" in l or
          "Program hbm requirement" in l or "HBM" in l]
  return " ".join(keep or lines[:3])[:2000]


def _verdict(result: dict[str, Any], used: dict[str, int], target: targets.Target | None,
             estimate: bool, device_memory_gib: float) -> None:
  """fits and the budget it was judged against, into result."""
  if target is None:
    budget = device_memory_bytes(device_memory_gib)
    result["fits_rule"] = "total <= device_memory_gib"
  else:
    budget = targets.budget_bytes(target)
    result["fits_rule"] = (
        "the TPU compiler accepted it" if target.platform == "tpu" and not estimate else
        f"total <= {targets.gpu_memory_fraction()} x HBM (XLA_PYTHON_CLIENT_MEM_FRACTION)"
        if target.platform == "gpu" else "total <= HBM")
  result["device_memory_gib"] = None if budget is None else round(budget / GIB, 3)
  if target is not None and target.platform == "tpu" and not estimate:
    result["fits"] = True
    # Beside the verdict: the memory analysis' sum can exceed the HBM of a program the
    # compiler accepts (seen for a sampling call within 1% of it), so a user sees both.
    result["total_within_hbm"] = used["total"] <= budget
  else:
    result["fits"] = None if budget is None else used["total"] <= budget


def _roofline(target: targets.Target, flops_per_device: float, hbm_bytes: float,
              recompute: float = 1.0) -> dict[str, float]:
  """Time at peak FLOP/s or HBM bandwidth, whichever binds, and the MFU that allows."""
  compute_s = flops_per_device * recompute / (target.peak_tflops * 1e12)
  memory_s = hbm_bytes / (target.hbm_gbps * 1e9)
  step_s = max(compute_s, memory_s)
  return {"step_s": step_s, "compute_s": compute_s, "memory_s": memory_s,
          "mfu_bound": round(flops_per_device / (target.peak_tflops * 1e12) / step_s, 4),
          "peak_tflops": target.peak_tflops, "hbm_gbps": target.hbm_gbps}


def _base(config: ml_collections.ConfigDict, model_cfg: ModelConfig, mesh,
          target: targets.Target | None, estimate: bool) -> dict[str, Any]:
  platform = mesh.devices.flat[0].platform
  return {
      "target": None if target is None else target.name, "estimate": estimate,
      "model": config.model, "params": count_params(model_cfg), "mesh": dict(mesh.shape),
      "devices": mesh.size, "platform": platform,
      "device_kind": mesh.devices.flat[0].device_kind, "dtype": model_cfg.dtype,
      "remat": model_cfg.remat, "kernels": kernels.resolve(model_cfg.kernels, platform),
      "scan_layers": model_cfg.scan_layers, **compiler_versions()}


def _pallas_calls(compiled, platform: str) -> int | None:
  """How many Pallas TPU kernels the compiled program calls (TPU only)."""
  return compiled.as_text().count('custom_call_target="tpu_custom_call"') if (
      platform == "tpu") else None


def plan(config: ml_collections.ConfigDict, model_cfg: ModelConfig,
         device_memory_gib: float = 0.0, devices=None, target: targets.Target | None = None,
         estimate: bool = False) -> dict[str, Any]:
  """The train step's plan for `config` with `model_cfg` on `devices` (default: all JAX has),
  for `target` if given (its compiler's verdict, or its budget)."""
  mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
  result = _base(config, model_cfg, mesh, target, estimate)
  result.update(step="train", batch_size=config.batch_size, seq_len=config.seq_len,
                grad_accum_steps=config.grad_accum_steps)
  tx, schedule = make_optimizer(config.optimizer, config.num_train_steps)
  layout = make_layout(model_cfg, tx, mesh)
  data_sharding = batch_sharding(mesh)
  train_step = jit_train_step(layout, schedule, config.grad_accum_steps, data_sharding)
  tokens = config.batch_size * config.seq_len
  result["flops_per_step"] = model_cfg.flops_per_token(config.seq_len) * tokens
  try:
    with _compile_context(target, estimate):
      compiled, compile_s = compile_step(train_step, layout, config.batch_size,
                                         config.seq_len, data_sharding)
  except Exception as e:  # pylint: disable=broad-except
    if target is None or not targets.is_out_of_memory(e):
      raise
    result.update(fits=False, compiler_error=_compiler_refusal(e),
                  device_memory_gib=round(target.memory_gib, 3),
                  fits_rule="the TPU compiler refused it")
    return result
  used = bytes_per_device(compiled)
  result.update(compile_s=round(compile_s, 2), bytes_per_device=used,
                gib_per_device=round(used["total"] / GIB, 3),
                pallas_calls=_pallas_calls(compiled, result["platform"]))
  _verdict(result, used, target, estimate, device_memory_gib)
  if target is not None:
    # The peak is the bf16 one: with dtype float32 the matmuls run well below it.
    # At least the state is read and the new state written once per step.
    roof = _roofline(target, result["flops_per_step"] / mesh.size,
                     used["arguments"] + used["outputs"], _RECOMPUTE.get(model_cfg.remat, 1.0))
    result["roofline"] = {**roof, "tokens_per_s": round(tokens / roof["step_s"])}
  return result


def plan_sampling(model_cfg: ModelConfig, mesh_sizes: tuple[int, int, int], devices,
                  target: targets.Target | None, estimate: bool, num_samples: int,
                  max_prompt_len: int, max_new_tokens: int, slots: int,
                  device_memory_gib: float, config: ml_collections.ConfigDict
                  ) -> dict[str, Any]:
  """The plan of the eval's largest sampling call (training/plan_sampler.py)."""
  mesh = make_mesh(*mesh_sizes, devices=devices)
  result = _base(config, model_cfg, mesh, target, estimate)
  memory = (targets.budget_bytes(target) if target is not None
            else device_memory_bytes(device_memory_gib))
  shape = plan_sampler.call_shape(model_cfg, mesh, num_samples, max_prompt_len,
                                  max_new_tokens, slots, memory)
  result.update(step="sample", num_samples=num_samples, max_new_tokens=max_new_tokens,
                **shape)
  try:
    with _compile_context(target, estimate):
      compiled, compile_s = plan_sampler.compile_sampler(model_cfg, mesh, shape, num_samples,
                                                         max_new_tokens)
  except Exception as e:  # pylint: disable=broad-except
    if target is None or not targets.is_out_of_memory(e):
      raise
    result.update(fits=False, compiler_error=_compiler_refusal(e),
                  fits_rule="the TPU compiler refused it")
    return result
  used = bytes_per_device(compiled)
  result.update(compile_s=round(compile_s, 2), bytes_per_device=used,
                gib_per_device=round(used["total"] / GIB, 3),
                kernels=plan_sampler.kernels_in(compiled),
                kv_pool_copies=plan_sampler.kv_pool_copies(compiled, model_cfg, mesh, shape,
                                                           max_new_tokens))
  _verdict(result, used, target, estimate, device_memory_gib)
  if target is not None:
    # A decode step reads the parameters and (at most) every temporary buffer: the caches.
    flops = plan_sampler.decode_step_flops(model_cfg, shape["slots"],
                                           shape["prompt_len"] + max_new_tokens // 2)
    roof = _roofline(target, flops / mesh.size, used["arguments"] + used["temporaries"])
    result["decode_roofline"] = {**roof,
                                 "tokens_per_s": round(shape["slots"] / roof["step_s"])}
  return result


def for_platform(model_cfg: ModelConfig, platform: str) -> ModelConfig:
  """`kernels="auto"` fixed to the set of `platform` (an estimate compiled on CPU devices for
  a TPU or GPU takes the xla set: Pallas kernels would only be interpreted on a CPU)."""
  resolved = kernels.resolve(model_cfg.kernels, platform)
  return model_cfg.replace(kernels="xla" if resolved in ("tpu", "gpu") else resolved)


def _usage(message: str):
  return app.UsageError(message, exitcode=2)


def main(argv) -> None:
  if len(argv) > 1:
    raise _usage(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  target = None
  if _TARGET.value:
    try:
      target = targets.get(_TARGET.value)
    except ValueError as e:
      raise _usage(str(e)) from None
  estimate = target is not None and targets.missing_compiler(target) is not None
  devices = (targets.compile_devices(target.name) if target is not None and not estimate
             else jax.devices())
  if _DEVICES.value and not target and jax.device_count() != _DEVICES.value:
    raise _usage(f"--devices={_DEVICES.value} but JAX has {jax.device_count()} "
                 "devices (was jax imported before the flag was read?)")
  try:
    model_cfg = resolve_model_config(config)
    if target is None:
      model_cfg = for_platform(model_cfg, _TARGET_PLATFORM.value)
    elif estimate:
      model_cfg = for_platform(model_cfg, target.platform)
    if _STEP.value == "train":
      validate_config(config, len(devices))
  except ValueError as e:
    raise _usage(str(e)) from None
  memory_gib = _DEVICE_MEMORY_GIB.value or config.get("device_memory_gib", 0.0)
  if _STEP.value == "train":
    result = plan(config, model_cfg, memory_gib, devices, target, estimate)
  else:
    result = plan_sampling(model_cfg, (config.mesh.data, config.mesh.fsdp, config.mesh.tensor),
                           devices, target, estimate, _NUM_SAMPLES.value,
                           _MAX_PROMPT_LEN.value, _MAX_NEW_TOKENS.value, _SLOTS.value,
                           memory_gib, config)
  if estimate:
    result["estimate_reason"] = targets.missing_compiler(target)
  if target is None:
    result["target_platform"] = _TARGET_PLATFORM.value
  print(json.dumps(result))
  if result["fits"] is False:
    sys.exit(1)


if __name__ == "__main__":
  from ml_collections import config_flags

  _CONFIG = config_flags.DEFINE_config_file("config", "configs/pretrain.py",
                                            "Experiment config file.", lock_config=True)
  _TARGET = flags.DEFINE_string(
      "target", "", f"Plan for this accelerator target, compiled by its own compiler: one of "
      f"{', '.join(targets.TARGETS)} (model/targets.py).")
  _STEP = flags.DEFINE_enum("step", "train", ["train", "sample"],
                            "train: the train step; sample: the eval's sampling call.")
  _DEVICES = flags.DEFINE_integer(
      "devices", 0, "Without --target: plan for this many fake CPU devices (0: the devices "
      "JAX finds).")
  _DEVICE_MEMORY_GIB = flags.DEFINE_float(
      "device_memory_gib", 0.0, "Without --target: memory of one device in GiB, for `fits` "
      "(0: config.device_memory_gib, else what JAX reports for the device, if it does).")
  _TARGET_PLATFORM = flags.DEFINE_enum(
      "target_platform", "gpu", ["gpu", "tpu", "cpu"],
      "Without --target: the platform the run is planned for, resolves kernels=auto.")
  _NUM_SAMPLES = flags.DEFINE_integer("num_samples", 80, "--step=sample: samples per problem.")
  _MAX_PROMPT_LEN = flags.DEFINE_integer("max_prompt_len", 1024,
                                         "--step=sample: longest prompt, in tokens.")
  _MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 256,
                                         "--step=sample: tokens sampled per completion.")
  _SLOTS = flags.DEFINE_integer("slots", 0, "--step=sample: slots per call (0: "
                                "decode/budget.py's rule for the device's memory).")
  app.run(main)
