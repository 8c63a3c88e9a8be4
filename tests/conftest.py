"""Shared test setup.

Eight fake CPU devices let sharding tests build real (data, fsdp, tensor) meshes on one CPU.
XLA reads the flag once, at backend start, so it must be set before anything imports jax.
"""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# CI clones the project next to shared/ (../shared/data); SHARED_DATA_DIR overrides.
SHARED_DATA_DIR = pathlib.Path(
    os.environ.get("SHARED_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
  if not SHARED_DATA_DIR.is_dir():
    pytest.fail(f"shared datasets not found at {SHARED_DATA_DIR}; set SHARED_DATA_DIR")
  return SHARED_DATA_DIR
