"""A disk that fills during an async orbax save: train.py's one line, without orbax's
hundreds of lines of thread tracebacks before it (training/save_failures.py)."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

_SAVE = textwrap.dedent("""
    import sys
    import jax
    import orbax.checkpoint as ocp
    from launch import commands
    from training.save_failures import quiet_storage_failures
    quiet_storage_failures()
    manager = ocp.CheckpointManager(sys.argv[1], options=ocp.CheckpointManagerOptions(
        create=True, enable_async_checkpointing=True))
    def run():  # 4 MiB of incompressible floats in two arrays, onto a 1 MiB disk
      w = jax.random.normal(jax.random.key(0), (2, 512, 1024))
      manager.save(1, args=ocp.args.StandardSave({"a": w[0], "b": w[1]}))
      manager.wait_until_finished()
    commands.run_or_fail(run)
""")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="mounts a tiny tmpfs in a private mount namespace (root)")
def test_a_disk_that_fills_during_a_save_is_one_line(tmp_path):
  disk = tmp_path / "disk"
  disk.mkdir()
  (tmp_path / "save.py").write_text(_SAVE)
  command = (f"mount -t tmpfs -o size=1m tmpfs {disk} && exec {sys.executable} "
             f"{tmp_path / 'save.py'} {disk / 'checkpoints'}")
  done = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True,
                        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT),
                                                JAX_PLATFORMS="cpu"), timeout=300)
  assert done.returncode == 2, done.stderr[-3000:]
  lines = [line for line in done.stderr.splitlines() if not line.startswith(("I", "W"))]
  assert len(lines) == 1, done.stderr[-5000:]
  assert lines[0].startswith("error: No space left on device writing "), lines
