"""The accelerators users rent, as compile-only devices: plans compiled on any machine.

A Target names a TPU slice or a GPU machine with what a plan needs of one device (its memory,
peak dense bf16 FLOP/s, HBM bandwidth, from the vendors' data sheets) and how to get XLA's
compiler for it without the hardware:

  TPU   libtpu's compile-only devices, `jax.experimental.topologies.get_topology_desc(
        topology, "tpu")` (pip: requirements-accel-plan.txt). The TPU compiler enforces the
        chip's HBM itself: a program that does not fit is refused with RESOURCE_EXHAUSTED.
  GPU   the CUDA PJRT plugin's compile-only devices from a GpuTargetConfigProto text
        (model/target_specs/, XLA's own device specs). The GPU compiler does not check memory:
        `gpu_budget_bytes` is what JAX lets a process use (it preallocates
        XLA_PYTHON_CLIENT_MEM_FRACTION of the memory, 0.75 unless set).

JAX must be on the CPU platform (JAX_PLATFORMS=cpu) so the plugins are loaded only as
compilers; `compile_env()` sets what libtpu needs to load without TPU metadata.

The compilers live apart from the environment, in COMPILERS_DIR (`pip install --no-deps
--target .accel-plan -r requirements-accel-plan.txt`), and join sys.path only where a plan asks for
them (`use_compilers()`, before jax is imported): with the CUDA plugin importable, every
`import jax` on a machine without NVIDIA drivers prints driver warnings (and, unless
JAX_PLATFORMS=cpu, a plugin traceback), which would land in every command's output.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import pathlib
import sys

SPECS_DIR = pathlib.Path(__file__).resolve().parent / "target_specs"
COMPILERS_DIR = os.environ.get(
    "ACCEL_PLAN_DIR", str(pathlib.Path(__file__).resolve().parents[1] / ".accel-plan"))
# JAX preallocates this fraction of a GPU's memory and its allocator stays inside it.
DEFAULT_GPU_MEM_FRACTION = 0.75


@dataclasses.dataclass(frozen=True)
class Target:
  name: str
  platform: str                # "tpu" | "gpu"
  devices: int                 # JAX devices (TPU chips, or megacore pairs; GPUs)
  memory_gib: float            # HBM per device
  peak_tflops: float           # dense bf16 per device
  hbm_gbps: float              # HBM bandwidth per device, GB/s
  topology: str                # tpu: get_topology_desc's name; gpu: "hosts x 1 x gpus"
  chip_config_name: str | None = None  # tpu: "megacore" joins a chip's two TensorCores
  gpu_spec: str | None = None  # gpu: file in model/target_specs/
  device_kind: str = ""        # what jax.devices()[0].device_kind says on it
  hosts: int = 1


# Per chip, from Google Cloud's TPU pages (v4, v5e, v5p, v6e "Trillium") and NVIDIA's data
# sheets (H100 SXM5, A100 SXM4 80 GB: dense bf16, no sparsity).
_V4 = dict(memory_gib=32, peak_tflops=275, hbm_gbps=1228, device_kind="TPU v4")
_V5E = dict(memory_gib=16, peak_tflops=197, hbm_gbps=819, device_kind="TPU v5 lite")
_V5P = dict(memory_gib=95, peak_tflops=459, hbm_gbps=2765, device_kind="TPU v5")
_V6E = dict(memory_gib=32, peak_tflops=918, hbm_gbps=1640, device_kind="TPU v6 lite")
# HBM as the spec gives it: H100 SXM 84,942,979,072 bytes, A100 SXM 80 GB 85,100,068,864.
_H100 = dict(memory_gib=84942979072 / 2 ** 30, peak_tflops=989, hbm_gbps=3352,
             gpu_spec="h100_sxm.txtpb", device_kind="NVIDIA H100 80GB HBM3")
_A100 = dict(memory_gib=85100068864 / 2 ** 30, peak_tflops=312, hbm_gbps=2039,
             gpu_spec="a100_sxm_80.txtpb", device_kind="NVIDIA A100-SXM4-80GB")

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("v4-8", "tpu", 4, topology="v4:2x2x1", chip_config_name="megacore", **_V4),
    Target("v5e-8", "tpu", 8, topology="v5e:2x4", **_V5E),
    Target("v5e-256", "tpu", 256, topology="v5e:16x16", hosts=64, **_V5E),
    Target("v5p-8", "tpu", 4, topology="v5:2x2x1", chip_config_name="megacore", **_V5P),
    Target("v5p-128", "tpu", 64, topology="v5:4x4x4", chip_config_name="megacore", hosts=16,
           **_V5P),
    Target("v6e-8", "tpu", 8, topology="v6e:2x4", **_V6E),
    Target("h100", "gpu", 1, topology="1x1x1", **_H100),
    Target("h100x8", "gpu", 8, topology="1x1x8", **_H100),
    Target("2xh100x8", "gpu", 16, topology="2x1x8", hosts=2, **_H100),
    Target("a100-80x8", "gpu", 8, topology="1x1x8", **_A100),
)}


def get(name: str) -> Target:
  """The target called `name` (ValueError listing the known ones otherwise)."""
  if name not in TARGETS:
    raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
  return TARGETS[name]


def use_compilers() -> None:
  """Makes the compile-only TPU and GPU compilers importable (COMPILERS_DIR, where installed).
  Call before jax is imported: JAX finds its plugins once, at import."""
  if os.path.isdir(COMPILERS_DIR) and COMPILERS_DIR not in sys.path:
    sys.path.append(COMPILERS_DIR)


def missing_compiler(target: Target) -> str | None:
  """Why `target` cannot be compiled for here (the package to install), or None."""
  module, package = (("libtpu", "libtpu") if target.platform == "tpu" else
                     ("jax_plugins.xla_cuda12", "jax-cuda12-plugin and jax-cuda12-pjrt"))
  try:
    found = importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    found = False
  return None if found else (f"the {target.platform.upper()} compiler is not installed "
                             f"(pip install --no-deps --target {COMPILERS_DIR} -r "
                             f"requirements-accel-plan.txt: {package})")


def compile_env() -> None:
  """What libtpu needs to load as a compiler on a machine that is no TPU VM (set before its
  first use): no metadata server query, and no lock against another process's libtpu."""
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


@functools.cache
def compile_devices(name: str) -> tuple:
  """The compile-only devices of target `name` (cached: libtpu builds a topology once)."""
  compile_env()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  target = get(name)
  if target.platform == "tpu":
    kwargs = {} if target.chip_config_name is None else {
        "chip_config_name": target.chip_config_name}
    topology = topologies.get_topology_desc(target.topology, "tpu", **kwargs)
  else:
    topology = topologies.get_topology_desc(
        "", "cuda", topology=target.topology,
        target_config=(SPECS_DIR / target.gpu_spec).read_text())
  devices = tuple(topology.devices)
  if len(devices) != target.devices:
    raise RuntimeError(f"target {name}: the topology has {len(devices)} devices, the table "
                       f"says {target.devices}")
  return devices


@contextlib.contextmanager
def no_persistent_cache():
  """Compile-only executables are written to JAX's persistent cache but cannot be loaded
  back from it (a later compile of the same program fails): keep them out of it."""
  import jax  # pylint: disable=g-import-not-at-top
  was = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    yield
  finally:
    jax.config.update("jax_enable_compilation_cache", was)


def gpu_memory_fraction() -> float:
  """The fraction of a GPU's memory JAX will let the run use (XLA_PYTHON_CLIENT_MEM_FRACTION,
  or JAX's default preallocation)."""
  return float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", DEFAULT_GPU_MEM_FRACTION))


def budget_bytes(target: Target) -> int:
  """The bytes one device's program may use: a TPU's whole HBM (its compiler checks), on a
  GPU the fraction JAX preallocates."""
  total = target.memory_gib * 2 ** 30
  return int(total if target.platform == "tpu" else total * gpu_memory_fraction())


def is_out_of_memory(error: Exception) -> bool:
  """Whether a compile error is the TPU compiler refusing a program its HBM cannot hold."""
  return "RESOURCE_EXHAUSTED" in str(error)


def target_of_devices(devices) -> Target | None:
  """The table's target with these devices' kind and count (a run's own devices), or None."""
  devices = list(devices)
  if not devices:
    return None
  for target in TARGETS.values():
    if (target.devices, target.device_kind) == (len(devices), devices[0].device_kind):
      return target
  return None
