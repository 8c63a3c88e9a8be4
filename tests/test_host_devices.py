"""One XLA CPU device per core (decode/host_devices.py): the flag eval.py sets before JAX starts."""
import os
import subprocess
import sys

import pytest

from decode import host_devices
from tests.conftest import REPO_ROOT


def test_a_count_already_in_xla_flags_wins(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8")
  assert host_devices.split_host_cpu(2) == 8
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8"


def test_the_count_is_added_to_xla_flags_zero_meaning_one_per_core(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1")
  monkeypatch.setattr(host_devices, "usable_cores", lambda: 6)
  assert host_devices.split_host_cpu(0) == 6
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=6"
  monkeypatch.delenv("XLA_FLAGS")
  assert host_devices.split_host_cpu(3) == 3
  assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"
  with pytest.raises(ValueError, match="cpu_devices must be >= 0"):
    host_devices.split_host_cpu(-1)


def test_jax_started_after_the_split_has_that_many_cpu_devices():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  code = ("import jax; from decode.host_devices import split_host_cpu; "
          "print(split_host_cpu(3), jax.device_count())")  # jax imported first: still in time
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  assert out == ["3", "3"]


def test_available_memory_is_the_least_of_meminfo_and_the_cgroups_room(monkeypatch, tmp_path):
  meminfo = tmp_path / "meminfo"
  meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8388608 kB\n")
  limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
  monkeypatch.setattr(host_devices, "_MEMINFO", str(meminfo))
  monkeypatch.setattr(host_devices, "_CGROUP_FILES", ((str(limit), str(usage)),))
  limit.write_text("max\n")                                  # cgroup v2: no limit
  usage.write_text(f"{1 << 30}\n")
  assert host_devices.available_memory_bytes() == 8 << 30
  limit.write_text(f"{4 << 30}\n")                           # 4 GiB, 1 GiB of it in use
  assert host_devices.available_memory_bytes() == 3 << 30
  limit.write_text(f"{(1 << 63) - 4096}\n")                  # cgroup v1's "no limit"
  assert host_devices.available_memory_bytes() == 8 << 30
  monkeypatch.setattr(host_devices, "_MEMINFO", str(tmp_path / "absent"))
  monkeypatch.setattr(host_devices, "_CGROUP_FILES", ())
  assert host_devices.available_memory_bytes() is None
