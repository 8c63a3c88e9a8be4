"""Plans compiled for real accelerator targets on this CPU-only machine (model/targets.py,
training/plan.py --target): libtpu's compile-only TPU devices and the CUDA plugin's GPU target
config. The TPU compiler's own verdict decides what fits there; `kernels="auto"` resolves
from the target's devices, so a TPU plan made here calls the Pallas splash kernels.

Each compile costs 5-100 CPU-seconds (the 1b train step on v5e-8 the most), hence `slow`.
Skipped where requirements-accel-plan.txt is not installed.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from configs import pretrain
from model import targets
from model.sharding import batch_sharding, make_mesh
from training import aot, plan
from training.loop import resolve_model_config
from training.optimizer import make_optimizer
from training.state import make_layout

REPO = pathlib.Path(__file__).resolve().parents[1]
_TPU = pytest.mark.skipif(targets.missing_compiler(targets.get("v5e-8")) is not None,
                          reason=str(targets.missing_compiler(targets.get("v5e-8"))))
_GPU = pytest.mark.skipif(targets.missing_compiler(targets.get("h100")) is not None,
                          reason=str(targets.missing_compiler(targets.get("h100"))))
pytestmark = pytest.mark.slow


def _config(model: str, batch_size: int, seq_len: int, mesh=(1, -1, 1), **model_overrides):
  config = pretrain.get_config()
  config.model, config.batch_size, config.seq_len = model, batch_size, seq_len
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh
  for key, value in model_overrides.items():
    config.model_overrides[key] = value
  return config


def _train_plan(target_name: str, config) -> dict:
  target = targets.get(target_name)
  return plan.plan(config, resolve_model_config(config),
                   devices=targets.compile_devices(target_name), target=target)


@_TPU
@pytest.mark.parametrize("model,batch_size,seq_len", [("tiny", 16, 256), ("1b", 16, 1024)])
def test_train_steps_compile_for_v5e_8_with_splash_attention_and_fit(model, batch_size,
                                                                     seq_len):
  result = _train_plan("v5e-8", _config(model, batch_size, seq_len))
  assert (result["platform"], result["device_kind"], result["devices"]) == (
      "tpu", "TPU v5 lite", 8)
  # auto resolved from the mesh's TPU devices on this CPU host: the tpu set, whose splash
  # attention is in the compiled program (forward, and the dq and dkv kernels of backward).
  assert result["kernels"] == "tpu" and result["pallas_calls"] >= 3, result
  assert result["fits"] is True and not result["estimate"]
  assert 0 < result["bytes_per_device"]["total"] < 16 * 2 ** 30
  assert 0 < result["roofline"]["mfu_bound"] <= 1


@_TPU
def test_8b_on_v5e_8_is_refused_with_the_compilers_numbers():
  env = dict(os.environ)
  command = [sys.executable, "-m", "training.plan", "--target=v5e-8", "--config.model=8b",
             "--config.batch_size=32", "--config.seq_len=2048", "--config.mesh.data=1",
             "--config.mesh.fsdp=-1", "--config.model_overrides.remat=full"]
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
  lines = done.stdout.strip().splitlines()
  assert len(lines) == 1, done.stdout
  result = json.loads(lines[0])
  assert (result["target"], result["model"], result["fits"]) == ("v5e-8", "8b", False)
  assert "RESOURCE_EXHAUSTED" in result["compiler_error"]
  assert "exceeds available HBM" in result["compiler_error"], result["compiler_error"]


@_TPU
def test_a_run_on_the_target_is_refused_on_its_compilers_verdict():
  """train()'s check (training/aot.py check_fits) on the v5e-8's devices: the compiler's
  RESOURCE_EXHAUSTED becomes DoesNotFit with its numbers, before any state exists."""
  config = _config("8b", 32, 2048, remat="full")
  mesh = make_mesh(1, -1, 1, devices=targets.compile_devices("v5e-8"))
  tx, schedule = make_optimizer(config.optimizer, config.num_train_steps)
  layout = make_layout(resolve_model_config(config), tx, mesh)
  data_sharding = batch_sharding(mesh)
  step = aot.jit_train_step(layout, schedule, config.grad_accum_steps, data_sharding)
  with targets.no_persistent_cache(), pytest.raises(
      aot.DoesNotFit, match=r"compiler says RESOURCE_EXHAUSTED.*exceeds available HBM"):
    aot.check_fits(step, layout, 32, 2048, data_sharding, device_memory_gib=16.0)


def _sampling_plan(target_name: str, mesh) -> dict:
  config = _config("1b", 8, 256, mesh=mesh)
  return plan.plan_sampling(resolve_model_config(config), mesh,
                            targets.compile_devices(target_name), targets.get(target_name),
                            False, num_samples=80, max_prompt_len=1024, max_new_tokens=256,
                            slots=0, device_memory_gib=0.0, config=config)


@pytest.mark.parametrize("target_name,mesh", [
    pytest.param("v5e-8", (8, 1, 1), marks=_TPU, id="v5e-8-data"),
    pytest.param("v5e-8", (1, 1, 8), marks=_TPU, id="v5e-8-tensor"),
    pytest.param("h100x8", (8, 1, 1), marks=_GPU, id="h100x8-data")])
def test_1b_sampler_compiles_for_the_target_and_fits(target_name, mesh):
  result = _sampling_plan(target_name, mesh)
  assert result["step"] == "sample" and result["fits"] is True, result
  assert result["slots"] >= mesh[0] and result["slots"] % mesh[0] == 0  # whole per data shard
  assert result["bytes_per_device"]["total"] > 0
  if targets.get(target_name).platform == "gpu":  # a TPU's verdict is its compiler's
    assert result["bytes_per_device"]["total"] <= targets.budget_bytes(
        targets.get(target_name))
  assert result["decode_roofline"]["tokens_per_s"] > 0
  # The accelerator's paged-attention kernel is in the compiled sampler (the 1b preset's head
  # dim, 128, is one both Pallas kernels take).
  platform = targets.get(target_name).platform
  assert result["kernels"] == ["pallas (TPU)" if platform == "tpu" else "pallas (Triton)"]
  # The kernel reads the KV pool where the loop updates it: no copy of the whole cache (on
  # a TPU, one whose layout differed from the kernel's was copied twice a layer and step).
  assert result["kv_pool_copies"] == 0


@_GPU
def test_1b_train_step_fits_one_h100_by_the_preallocation_budget():
  result = _train_plan("h100", _config("1b", 8, 2048, mesh=(1, 1, 1), remat="full"))
  assert (result["device_kind"], result["kernels"]) == ("NVIDIA H100 80GB HBM3", "gpu")
  # JAX preallocates 0.75 of the H100's 79.1 GiB; the step must fit in that, not in 80 GB.
  assert result["device_memory_gib"] == pytest.approx(0.75 * 84942979072 / 2 ** 30, abs=1e-3)
  assert result["fits"] is True
  assert 5 < result["gib_per_device"] < result["device_memory_gib"]
  # Full remat recomputes the forward pass: 6 of every 8 FLOPs are model FLOPs at best.
  assert result["roofline"]["mfu_bound"] == pytest.approx(0.75)


def test_the_table_and_its_compile_only_devices_agree():
  assert set(targets.TARGETS) >= {"v4-8", "v5e-8", "v5e-256", "v5p-8", "v5p-128", "v6e-8",
                                   "h100", "h100x8", "2xh100x8", "a100-80x8"}
  with pytest.raises(ValueError, match="unknown target 'v9'; choose one of v4-8"):
    targets.get("v9")
  for name, target in targets.TARGETS.items():
    if targets.missing_compiler(target) is None:
      devices = targets.compile_devices(name)
      assert targets.target_of_devices(devices) == target, name


def test_without_the_targets_compiler_the_plan_is_an_estimate_on_fake_cpu_devices():
  """libtpu hidden from the plan command: it compiles for 8 fake CPU devices (the v5e-8's
  count) with the xla kernels, judged against the v5e's 16 GiB, and says it is an estimate."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  hide_libtpu = ("import runpy, sys; sys.modules['libtpu'] = None; "
                 "sys.argv = ['training.plan'] + sys.argv[1:]; "
                 "runpy.run_module('training.plan', run_name='__main__', alter_sys=True)")
  done = subprocess.run(
      [sys.executable, "-c", hide_libtpu, "--target=v5e-8", "--config.seq_len=64",
       "--config.mesh.data=1", "--config.mesh.fsdp=-1"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert (result["target"], result["estimate"], result["platform"]) == ("v5e-8", True, "cpu")
  assert result["devices"] == 8 and result["kernels"] == "xla"
  assert result["device_memory_gib"] == 16 and result["fits"] is True
  assert "libtpu" in result["estimate_reason"]


def test_an_unknown_target_is_a_usage_error():
  done = subprocess.run([sys.executable, "-m", "training.plan", "--target=v9"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and "Traceback" not in done.stderr and not done.stdout
  assert done.stderr.strip().splitlines()[-1] == (
      "unknown target 'v9'; choose one of " + ", ".join(targets.TARGETS))
