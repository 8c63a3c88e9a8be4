"""One XLA CPU device per core (model/host_devices.py): the flag eval.py sets before JAX starts."""
import os
import subprocess
import sys

import pytest

from model import host_devices
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
  code = ("import jax; from model.host_devices import split_host_cpu; "
          "print(split_host_cpu(3), jax.device_count())")  # jax imported first: still in time
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  assert out == ["3", "3"]
