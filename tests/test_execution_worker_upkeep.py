"""What the worker does around every program stays small (each page it writes between two forks
is a copy-on-write fault): the program's process removes its own file, the OOM and socket
counters are parsed only when their text changed, the worker imports nothing it does not need,
and the caller, not the worker, turns what a program did into its Result."""
import os
import subprocess
import sys

import pytest

from execution import harness
from execution import isolation
from execution import memory_cgroup
from execution.config import SandboxConfig

NONCE = b"n" * 32


def _run_in_fork(path: str, program: str, tests: tuple) -> tuple[int, bytes]:
  """harness.run in a forked process, as a worker's program process runs it: (exit status,
  verdict records)."""
  texts = [program.encode(), b"", *(test.encode() for test in tests)]
  text_r, text_w = os.pipe()
  report_r, report_w = os.pipe()
  os.write(text_w, b"".join(texts))
  os.close(text_w)
  pid = os.fork()
  if pid == 0:
    try:
      os.close(report_r)
      harness.run(text_r, [len(t) for t in texts], report_w, NONCE, 0, False, path)
    finally:
      os._exit(99)
  os.close(text_r)
  os.close(report_w)
  report = b""
  while chunk := os.read(report_r, 1 << 16):
    report += chunk
  os.close(report_r)
  _, status = os.waitpid(pid, 0)
  return os.waitstatus_to_exitcode(status), report


def test_a_program_removes_its_own_file_when_it_ends(tmp_path):
  path = str(tmp_path / harness.PROGRAM_FILE)
  uses_file = "import os\nHERE = os.path.exists(__file__)\n"
  status, report = _run_in_fork(path, uses_file, ("assert HERE", "assert 0"))
  assert status == 0
  assert b" pass 0 " in report and b" fail 1 " in report and report.endswith(b" done -1 \n")
  assert not os.path.exists(path)  # So the worker's wipe finds the scratch directory empty.
  for early_end in ("def broken(:\n", "raise ValueError('at import')\n"):
    status, report = _run_in_fork(path, early_end, ("assert True",))
    assert status == 0 and b" pass " not in report
    assert not os.path.exists(path)


def _counter_file(tmp_path, name: str, text: str) -> tuple[str, int]:
  path = tmp_path / name
  path.write_text(text)
  return str(path), os.open(path, os.O_RDONLY)


def test_the_oom_counter_is_parsed_only_when_its_text_changed(tmp_path, monkeypatch):
  v1 = "oom_kill_disable 0\nunder_oom {under}\noom_kill {kills}\n"
  path, fd = _counter_file(tmp_path, "memory.oom_control", v1.format(under=0, kills=2))
  monkeypatch.setattr(memory_cgroup, "_oom_counter_fd", fd)
  parsed = []
  parse = memory_cgroup._parse_oom_kills
  monkeypatch.setattr(memory_cgroup, "_parse_oom_kills",
                      lambda text: parsed.append(text) or parse(text))
  watch = memory_cgroup.OomKillWatch()
  assert len(parsed) == 1
  assert not watch.struck() and not watch.struck()
  assert len(parsed) == 1  # Unchanged text: one pread, nothing parsed.
  with open(path, "w") as f:
    f.write(v1.format(under=1, kills=2))
  assert not watch.struck()  # Another field changed: parsed, no kill.
  with open(path, "w") as f:
    f.write(v1.format(under=1, kills=3))
  assert watch.struck()
  assert not watch.struck()
  assert len(parsed) == 3
  os.close(fd)
  monkeypatch.setattr(memory_cgroup, "_oom_counter_fd", -1)
  assert not memory_cgroup.OomKillWatch().struck()  # No cgroup: never.


class _CountingPattern:
  def __init__(self, pattern):
    self.pattern, self.calls = pattern, 0

  def findall(self, text):
    self.calls += 1
    return self.pattern.findall(text)


def test_socket_counters_are_parsed_only_when_their_text_changed(tmp_path, monkeypatch):
  line = "sockets: used 3\nTCP: inuse {inuse} orphan 0 tw {tw} alloc {alloc} mem 0\n"
  path = tmp_path / "sockstat"
  path.write_text(line.format(inuse=0, tw=0, alloc=7))
  monkeypatch.setattr(isolation, "SOCKET_COUNTERS", (str(path), str(tmp_path / "absent")))
  pattern = _CountingPattern(isolation._SOCKET_COUNTS)
  monkeypatch.setattr(isolation, "_SOCKET_COUNTS", pattern)
  renewals = []
  monkeypatch.setattr(isolation.linux, "unshare", renewals.append)
  monkeypatch.setattr(isolation.linux, "bring_up_loopback", lambda: None)
  worker = isolation.WorkerIsolation(SandboxConfig(), 0)
  worker._watch_sockets()
  try:
    assert pattern.calls == 1
    worker._renew_network_if_used()
    assert (pattern.calls, renewals) == (1, [])  # Unchanged text: nothing parsed.
    path.write_text(line.format(inuse=0, tw=0, alloc=9))  # A host-wide count moved.
    worker._renew_network_if_used()
    worker._renew_network_if_used()
    assert (pattern.calls, renewals) == (2, [])
    path.write_text(line.format(inuse=0, tw=1, alloc=9))  # A port left in TIME_WAIT.
    worker._renew_network_if_used()
    assert renewals == [isolation.linux.CLONE_NEWNET]
  finally:
    for fd in worker._socket_counters:
      os.close(fd)


def test_a_worker_imports_no_tempfile_machinery():
  code = ("import sys; from execution.worker import main; "
          "print(sorted({'tempfile', 'shutil', 'bz2', 'lzma'} & set(sys.modules)))")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-s", "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": root, "PATH": os.environ.get("PATH", "")},
                       check=True, timeout=60)
  assert out.stdout.strip() == "[]"


_PIPE_BOUND_REPLY_THEN_BIG_JOB = r'''
import sys
from execution import Job, SandboxConfig, WorkerPool
# 1 MiB on the verdict pipe (less room for the records) and some output: the worker's reply,
# which carries both, is bigger than the result pipe.
flood = Job("flood", "import os\nos.write(3, b'x' * (1040384 - 1) + b'\\n')\nprint('y' * 20000)",
            ("assert True",))
# More text than the job pipe holds: queued behind `flood`, it would block the pool's thread
# while the worker blocks writing flood's reply.
big = Job("big", "x = 1\n" + "#" * 1_600_000 + "\n", ("assert x == 1",))
with WorkerPool(SandboxConfig(workers=1, timeout_s=20, screen_batch=0)) as pool:
  results = pool.run([flood, big, Job("small", "y = 2", ("assert y == 2",))])
print([(r.id, r.status) for r in results], len(results[0].output))
'''


def test_a_reply_bigger_than_its_pipe_and_a_job_bigger_than_its_pipe_do_not_deadlock():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", _PIPE_BOUND_REPLY_THEN_BIG_JOB],
                       capture_output=True, text=True, cwd=root, timeout=240,
                       env={"PYTHONPATH": root, "PATH": os.environ.get("PATH", "")})
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split("\n")[0] == (
      "[('flood', 'passed'), ('big', 'passed'), ('small', 'passed')] 20001")


def _handle_reading(data: bytes):
  """A _WorkerHandle whose result pipe holds `data` (and no worker behind it)."""
  from execution import pool  # pylint: disable=import-outside-toplevel
  handle = object.__new__(pool._WorkerHandle)
  read_end, write_end = os.pipe()
  os.write(write_end, data)
  os.close(write_end)
  handle._result_r = read_end
  handle.process = subprocess.Popen(["true"])  # What "worker died" messages wait for.
  handle.process.wait()
  return handle


def test_the_caller_decides_from_the_workers_raw_reply():
  from execution import Job, SandboxFailure  # pylint: disable=import-outside-toplevel
  from execution import worker  # pylint: disable=import-outside-toplevel
  job = Job("j", "x = 1", ("assert x == 1", "assert x == 2"))
  records = b"".join(NONCE + line + b"\n" for line in (
      b" ready -1 ", b" pass 0 ", b" fail 1 AssertionError", b" done -1 "))
  output = "héllo\n".encode()
  reply = worker.JOB_REPLY.pack(worker.JOB_REPLY_TAG, 0, False, False, 0.25, len(records),
                                len(output), NONCE)
  result = _handle_reading(worker.frame(reply, records + output)).receive(job)
  assert (result.id, result.status, result.tests_passed, result.tests_total) == (
      "j", "failed", 1, 2)
  assert (result.error, result.output, result.duration_s) == (
      "test 1: AssertionError", "héllo\n", 0.25)
  failed_setup = NONCE + b" setup_failed -1 PermissionError()\n"
  reply = worker.JOB_REPLY.pack(worker.JOB_REPLY_TAG, 111 << 8, False, False, 0.1,
                                len(failed_setup), 0, NONCE)
  with pytest.raises(SandboxFailure, match="sandbox setup failed"):
    _handle_reading(worker.frame(reply, failed_setup)).receive(job)
  with pytest.raises(SandboxFailure, match="no fork"):
    _handle_reading(worker.frame(b'{"sandbox_failure": "no fork"}')).receive(job)
