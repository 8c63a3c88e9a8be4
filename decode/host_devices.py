"""One XLA CPU device per core, for sampling on a CPU.

XLA:CPU runs one program's small ops on about one core: a decode step of a small model is
matmuls of a few dozen rows, too small for its intra-op threads. Split into one device per
core, the host runs one such program per device at once: the decode engine gives each device
of the mesh's data axis its own problems, slots and loop (decode/engine.py; the gain is in
benchmarks/RESULTS.md).

Parameters are held once per device, so a model that fits the host's memory only once wants
one device (eval configs: `cpu_devices=1`). The flag only shapes the CPU platform: on a GPU
or TPU host JAX still samples on the accelerators.

The host's devices share its memory: `available_memory_bytes` is what the sampler's budget on
a CPU starts from (decode/budget.py).
"""
from __future__ import annotations

import os
import re

_FLAG = "--xla_force_host_platform_device_count"
_MEMINFO = "/proc/meminfo"
# (limit, usage) files of this process's memory cgroup: v2, then v1.
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                  "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def usable_cores() -> int:
  """Cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def split_host_cpu(count: int = 0) -> int:
  """Asks XLA for `count` CPU devices (0: one per usable core) and returns the count in
  effect. A count already in XLA_FLAGS (a user's, a test's, a multi-process launcher's)
  wins. XLA reads the flag when JAX starts its backends: call this before anything touches
  a device (importing jax is fine).
  """
  if count < 0:
    raise ValueError(f"cpu_devices must be >= 0 (0 = one per core), got {count}")
  flags = os.environ.get("XLA_FLAGS", "")
  found = re.search(_FLAG + r"=(\d+)", flags)
  if found:
    return int(found.group(1))
  count = count or usable_cores()
  os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={count}".strip()
  return count


def _read_int(path: str) -> int | None:
  try:
    with open(path, encoding="ascii") as f:
      return int(f.read().split()[0])
  except (OSError, ValueError, IndexError):  # absent, or "max" (no limit)
    return None


def available_memory_bytes() -> int | None:
  """Memory this process can still take without swapping or its container's OOM killer:
  the kernel's MemAvailable, or less where the memory cgroup's limit leaves less; None where
  neither is known (not Linux)."""
  candidates = []
  try:
    with open(_MEMINFO, encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          candidates.append(int(line.split()[1]) * 1024)
  except (OSError, ValueError, IndexError):
    pass
  for limit_path, usage_path in _CGROUP_FILES:
    limit, usage = _read_int(limit_path), _read_int(usage_path)
    if limit is not None and usage is not None and limit < 1 << 60:  # v1: huge = no limit
      candidates.append(max(0, limit - usage))
  return min(candidates) if candidates else None
