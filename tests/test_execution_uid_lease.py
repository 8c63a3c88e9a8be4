"""Sandbox uids are leased host-wide: concurrent pools never share one, so one eval's programs
cannot use up another's RLIMIT_NPROC (a false fail) or be killed by its cleanup."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from execution import Job, SandboxConfig, WorkerPool
from execution import uid_lease
from tests.conftest import REPO_ROOT

UID_BASE = 2_050_000_000  # Distinct from other tests' pools.


def test_a_held_uid_is_skipped_and_a_closed_lease_is_free_again(tmp_path):
  first, first_fd = uid_lease.lease(100, 0, str(tmp_path))
  second, second_fd = uid_lease.lease(100, 0, str(tmp_path))
  other_index, other_fd = uid_lease.lease(100, 1, str(tmp_path))
  assert (first, second, other_index) == (100, 101, 102)
  os.close(first_fd)
  again, again_fd = uid_lease.lease(100, 0, str(tmp_path))
  assert again == 100
  for fd in (second_fd, other_fd, again_fd):
    os.close(fd)


def test_a_killed_holder_leaves_no_stale_lease(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
      import time
      from execution import uid_lease
      print(uid_lease.lease(100, 0, {str(tmp_path)!r})[0], flush=True)
      time.sleep(600)
      """)], cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
      stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "100"
  uid, fd = uid_lease.lease(100, 0, str(tmp_path))
  assert uid == 101
  os.close(fd)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  uid, fd = uid_lease.lease(100, 0, str(tmp_path))
  assert uid == 100
  os.close(fd)


def test_a_lease_directory_others_can_write_is_refused(tmp_path):
  shared = tmp_path / "leases"
  shared.mkdir(mode=0o777)
  shared.chmod(0o777)
  with pytest.raises(uid_lease.LeaseUnavailable, match="nobody else can write"):
    uid_lease.lease(100, 0, str(shared))


HOLD_THREADS = textwrap.dedent("""
    import threading, time
    done = threading.Event()
    threads = [threading.Thread(target=done.wait, args=(30,)) for _ in range(20)]
    for t in threads:
      t.start()
    time.sleep(3)
    done.set()
    for t in threads:
      t.join()
    """)


def _threads_of(uid: int) -> int:
  count = 0
  for p in psutil.process_iter(["uids", "num_threads"]):
    try:
      if p.info["uids"] and p.info["uids"].real == uid:
        count += p.info["num_threads"]
    except psutil.Error:
      pass
  return count


@pytest.mark.skipif(os.geteuid() != 0, reason="sandbox uids are used as root (CI)")
def test_concurrent_pools_get_disjoint_uids_and_do_not_share_a_process_limit():
  # Before leases both pools ran as UID_BASE, whose RLIMIT_NPROC (32) the kernel counts across
  # the host: B's 20 threads next to A's 20 failed with "can't start new thread".
  config = SandboxConfig(timeout_s=30, workers=1, max_processes=32, sandbox_uid_base=UID_BASE)
  with WorkerPool(config) as a, WorkerPool(config) as b:
    assert a.uids == [UID_BASE] and b.uids == [UID_BASE + 1]
    a_results = []
    holder = threading.Thread(target=lambda: a_results.extend(a.run([Job("a", HOLD_THREADS, ())])))
    holder.start()
    deadline = time.monotonic() + 20
    while _threads_of(UID_BASE) < 20 and time.monotonic() < deadline:
      time.sleep(0.02)
    assert _threads_of(UID_BASE) >= 20  # A holds its threads while B runs.
    [b_result] = b.run([Job("b", HOLD_THREADS, ())])
    holder.join()
  assert (b_result.status, b_result.error) == ("passed", "")
  assert [(r.status, r.error) for r in a_results] == [("passed", "")]
