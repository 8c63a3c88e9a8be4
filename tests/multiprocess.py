"""Real multi-process JAX runs for tests: N processes x D fake CPU devices through
jax.distributed on 127.0.0.1, each started as an entry script (train.py, eval.py)."""
import os
import socket
import subprocess
import sys
from typing import Callable

from tests.conftest import REPO_ROOT


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def config_flags(config) -> list[str]:
  """A ConfigDict as --config.KEY=VALUE flags for the entry scripts (unset values left out)."""
  flat = []

  def walk(prefix, node):
    for key, value in node.items():
      if hasattr(value, "items"):
        walk(f"{prefix}{key}.", value)
      elif value is not None:
        flat.append(f"--config.{prefix}{key}={value}")
  walk("", config.to_dict())
  return [f for f in flat if "=" in f and not f.endswith("=")]


def start_processes(args_of: Callable[[int], list[str]], num_processes: int = 2,
                    devices_per_process: int = 4) -> list[subprocess.Popen]:
  """Starts `python *args_of(process_id)` once per process, as one jax.distributed job."""
  port = free_port()
  processes = []
  for process_id in range(num_processes):
    env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
           "JAX_NUM_PROCESSES": str(num_processes), "JAX_PROCESS_ID": str(process_id),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}",
           "JAX_PLATFORMS": "cpu"}
    processes.append(subprocess.Popen([sys.executable, *args_of(process_id)], cwd=REPO_ROOT,
                                      env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
  return processes


def wait_for(processes: list[subprocess.Popen], timeout: int) -> list[str]:
  """Each process's output once all have ended; any still running after that is killed."""
  try:
    return [p.communicate(timeout=timeout)[0] for p in processes]
  finally:
    for p in processes:
      p.kill()
