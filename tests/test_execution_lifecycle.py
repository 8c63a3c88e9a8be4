"""Nothing outlives the caller, and missing isolation fails loudly: killing the process that owns
a pool mid-run leaves no worker and no sandboxed process behind; where namespaces are blocked,
the pool refuses with the reason, and the explicit weak mode still confines what it promises."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.conftest import REPO_ROOT

UID_BASE = 2_100_000_000  # Distinct from other tests' pools, so leftovers are attributable.

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox tests run as root (CI)")

DAEMON_PROGRAM = """
import os, time
if os.fork() == 0:
  os.setsid()
  time.sleep(3600)
def f(x):
  return x + 1
"""


def _processes_with_uid(first: int, count: int = 32) -> list[int]:
  found = []
  for p in psutil.process_iter(["uids"]):
    try:
      if p.info["uids"] and first <= p.info["uids"].real < first + count:
        found.append(p.pid)
    except psutil.Error:
      pass
  return found


def _python(script: str, **kwargs) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-c", script], text=True, cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), **kwargs)


def test_killing_the_caller_kills_workers_and_programs():
  script = textwrap.dedent(f"""
      from execution import Job, SandboxConfig, WorkerPool
      program = {DAEMON_PROGRAM!r} + "time.sleep(3600)"
      config = SandboxConfig(timeout_s=600, workers=2, sandbox_uid_base={UID_BASE})
      with WorkerPool(config) as pool:
        print(" ".join(str(w.process.pid) for w in pool._workers), flush=True)
        pool.run([Job(str(i), program, ()) for i in range(2)])
      """)
  caller = _python(script, stdout=subprocess.PIPE)
  workers = [int(pid) for pid in caller.stdout.readline().split()]
  deadline = time.monotonic() + 20
  while len(_processes_with_uid(UID_BASE)) < 4 and time.monotonic() < deadline:
    time.sleep(0.05)
  assert len(_processes_with_uid(UID_BASE)) == 4  # Two programs, two setsid daemons.
  caller.send_signal(signal.SIGKILL)
  caller.wait()
  deadline = time.monotonic() + 10
  while time.monotonic() < deadline and (_processes_with_uid(UID_BASE)
                                         or any(psutil.pid_exists(p) for p in workers)):
    time.sleep(0.05)
  assert _processes_with_uid(UID_BASE) == []
  assert [p for p in workers if psutil.pid_exists(p)] == []


def test_blocked_namespaces_fail_loudly_and_the_weak_mode_still_isolates(tmp_path):
  # Docker's default seccomp profile, for one, forbids unshare(); our own filter does the same
  # to the caller here, and every worker it starts inherits it.
  weak_uid = UID_BASE + 32
  script = textwrap.dedent(f"""
      import json
      from execution import IsolationUnavailable, Job, SandboxConfig, WorkerPool
      from execution import seccomp
      seccomp.Filter().install()
      try:
        WorkerPool(SandboxConfig(workers=1))
        print(json.dumps({{"refused": None}}))
      except IsolationUnavailable as e:
        print(json.dumps({{"refused": str(e)}}))
      config = SandboxConfig(workers=1, isolation="rlimits", timeout_s=2,
                             sandbox_uid_base={weak_uid})
      with WorkerPool(config) as pool:
        results = pool.run([Job("daemon", {DAEMON_PROGRAM!r}, ("assert f(1) == 2",)),
                            Job("loop", "while True: pass", ()),
                            Job("write", "open({str(tmp_path / 'x')!r}, 'w')", ())])
        print(json.dumps({{"layers": pool.layers,
                          "statuses": [(r.status, r.error) for r in results]}}))
      """)
  caller = _python(script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  out, err = caller.communicate(timeout=60)
  assert caller.returncode == 0, err
  refusal, weak = (json.loads(line) for line in out.splitlines())
  assert "cannot set up namespaces" in refusal["refused"]
  assert "Operation not permitted" in refusal["refused"]
  assert not any("namespace" in layer for layer in weak["layers"])
  assert [s for s, _ in weak["statuses"]] == ["passed", "timeout", "error"]
  assert "Permission denied" in weak["statuses"][2][1]  # tmp_path is root's, mode 700.
  assert _processes_with_uid(weak_uid) == []  # The setsid daemon was swept.
  assert not (tmp_path / "x").exists()
