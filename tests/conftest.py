"""Shared test setup.

Eight fake CPU devices let sharding tests build real (data, fsdp, tensor) meshes on one CPU.
XLA reads the flag once, at backend start, so it must be set before anything imports jax.
"""
import atexit
import os
import pathlib
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The compile-only TPU/GPU compilers, where installed, for tests/test_plan_targets.py: in this
# process only (before jax is imported), not in the commands the tests start.
from model import targets  # pylint: disable=wrong-import-position  (imports no jax)
targets.use_compilers()
# One persistent compilation cache per test session, which the train.py / eval.py / multi-process
# runs the tests start inherit: a program compiled once (a restart's train step, the same tiny
# model in another test) is read back instead of compiled again. tests/test_train_loop.py: 162 s
# -> 75 s. Fresh per session, so no run depends on an earlier one.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix="jax-compilation-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  _OWNER = os.getpid()
  atexit.register(lambda: os.getpid() == _OWNER and shutil.rmtree(_CACHE_DIR, ignore_errors=True))

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


@pytest.fixture(scope="session")
def mbpp_dirs(shared_data_dir, tmp_path_factory) -> dict[str, str]:
  """A TFDS data dir with both MBPP configs built once per session from the shared files."""
  from data import mbpp  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path_factory.mktemp("tfds_mbpp")
  manual_dir = str(shared_data_dir / "mbpp")
  for config in ("full", "sanitized"):
    mbpp.load("prompt", config=config, data_dir=str(data_dir), manual_dir=manual_dir)
  return {"data_dir": str(data_dir), "manual_dir": manual_dir}


@pytest.fixture(scope="session")
def mathqa_dirs(shared_data_dir, tmp_path_factory) -> dict[str, str]:
  """MathQA-Python's eval splits, built once per session (the shared copy lacks train.json)."""
  from data import mathqa  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path_factory.mktemp("tfds_mathqa")
  manual_dir = str(shared_data_dir / "mathqa" / "raw")
  mathqa.load("validation", data_dir=str(data_dir), manual_dir=manual_dir)
  return {"data_dir": str(data_dir), "manual_dir": manual_dir}
