"""The sandbox as an ordinary user (most researchers on a cluster): unprivileged user namespaces
instead of root. Run from root by starting the caller as `nobody` on an interpreter that user
can read (the venv's may live under /root, mode 700)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")


def _as_nobody(python: str, script: str, timeout: float = 120) -> subprocess.CompletedProcess:
  return subprocess.run([python, "-c", script], capture_output=True, text=True, cwd="/",
                        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
                        user=NOBODY, group=NOBODY, extra_groups=[], timeout=timeout)


@pytest.fixture(scope="module")
def python_for_nobody() -> str:
  candidates = [os.path.realpath(sys.executable), shutil.which("python3.11") or "",
                "/usr/bin/python3", "/usr/local/bin/python3"]
  for python in dict.fromkeys(c for c in candidates if c and os.path.exists(c)):
    try:
      probe = _as_nobody(python, "import sys, execution.pool; "
                                 "assert sys.version_info >= (3, 10)", timeout=30)
    except (OSError, subprocess.SubprocessError):
      continue
    if probe.returncode == 0:
      return python
  pytest.skip("no interpreter that user nobody can run and that can import this checkout")


SCRIPT = textwrap.dedent("""
    import json, os
    from execution import Job, SandboxConfig, WorkerPool
    F = "def f(x):\\n  return x + 1\\n"
    cases = {
        "ok": (F + "import os, re, xml.dom.minidom", "passed"),
        "loop": ("while True:\\n  pass\\n" + F, "timeout"),
        "fork_bomb": ("import os\\nwhile True:\\n  try:\\n    os.fork()\\n"
                      "  except OSError:\\n    pass\\n" + F, "timeout"),
        "daemon": ("import os, time\\nif os.fork() == 0:\\n  os.setsid()\\n"
                   "  time.sleep(3600)\\n" + F, "passed"),
        "write_outside": (F + "open(%r, 'w')" % os.path.join(os.getcwd(), "x"), "error"),
        "network": (F + "import socket\\nsocket.create_connection(('127.0.0.1', 22), 1)",
                    "error"),
        "privileges": (F + '''
    import ctypes, os
    libc = ctypes.CDLL(None)
    assert libc.unshare(0x10000000) == -1
    assert libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == -1
    status = open("/proc/self/status").read()
    assert "CapEff:\\t0000000000000000" in status, status
    assert os.getpid() == 1
    ''', "passed"),
        "exit_0": (F + "import os\\nos._exit(0)", "error"),
        # Benign programs: the caller's own passwd entry, its home pointed at the scratch
        # directory; /dev/shm for multiprocessing's semaphores; pickling program functions.
        "user_lookup": (F + '''
    import getpass, os, pwd
    entry = pwd.getpwuid(os.getuid())
    assert entry.pw_dir == os.environ["HOME"] == os.path.expanduser("~"), entry
    assert getpass.getuser() == entry.pw_name
    ''', "passed"),
        "process_pool": (F + '''
    import multiprocessing
    def square(x):
      return x * x
    with multiprocessing.Pool(2) as pool:
      assert pool.map(square, [1, 2, 3]) == [1, 4, 9]
    ''', "passed"),
    }
    config = SandboxConfig(timeout_s=2, workers=2, memory_mb=512)
    with WorkerPool(config) as pool:
      results = pool.run([Job(k, p, ("assert f(1) == 2",)) for k, (p, _) in cases.items()])
      again = pool.run([Job("again", "def f(x):\\n  return x + 1\\n", ("assert f(1) == 2",))])
      print(json.dumps({"mode": pool.mode, "layers": pool.layers,
                        "got": {r.id: [r.status, r.error] for r in results + again},
                        "expected": {k: e for k, (_, e) in cases.items()}}))
    """)


def test_user_mode_isolates_without_root(python_for_nobody):
  done = _as_nobody(python_for_nobody, SCRIPT)
  if "IsolationUnavailable" in done.stderr and "user namespace" in done.stderr:
    pytest.skip(f"unprivileged user namespaces disabled here: {done.stderr[-300:]}")
  assert done.returncode == 0, done.stderr
  report = json.loads(done.stdout)
  assert report["mode"] == "user"
  assert any("user namespace" in layer for layer in report["layers"])
  wrong = {k: report["got"][k] for k, e in report["expected"].items() if report["got"][k][0] != e}
  assert not wrong
  assert report["got"]["again"][0] == "passed"
  assert "Read-only file system" in report["got"]["write_outside"][1]
  # Nothing is left running: workers and programs (which keep the worker's command line).
  leftovers = subprocess.run(["ps", "-u", str(NOBODY), "-o", "pid=,args="], capture_output=True,
                             text=True).stdout.splitlines()
  assert [line for line in leftovers if "execution.worker" in line] == []
