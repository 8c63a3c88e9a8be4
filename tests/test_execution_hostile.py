"""Hostile programs: each must get its expected verdict, leave no process behind, change no
file outside its scratch directory, and leave the harness working. Everything dangerous runs
only inside the sandbox, under limits small enough not to hurt a 2-core CI machine."""
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import textwrap

import psutil
import pytest

from execution import Job, SandboxConfig, WorkerPool

TIMEOUT_S = 2.0
CONFIG = SandboxConfig(timeout_s=TIMEOUT_S, memory_mb=512, max_processes=32, workers=2)
F_TESTS = ("assert f(1) == 2", "assert f(2) == 3")
F = "def f(x):\n  return x + 1\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hostile suite runs as root (CI)")


def _sandbox_processes(uids) -> list[int]:
  """Pids of every process running as one of `uids` (a pool's sandbox uids)."""
  found = []
  for p in psutil.process_iter(["uids"]):
    try:
      if p.info["uids"] and p.info["uids"].real in uids:
        found.append(p.pid)
    except psutil.Error:
      pass
  return found


@pytest.fixture(scope="module")
def pool():
  # A variable of the caller's that must not reach any program ("clean_environment" below).
  os.environ["EXECUTION_TEST_CANARY"] = "secret"
  try:
    p = WorkerPool(CONFIG)
  finally:
    del os.environ["EXECUTION_TEST_CANARY"]
  with p:
    yield p


@pytest.fixture(scope="module")
def outside():
  """A world-writable directory and a file outside the sandbox's scratch space."""
  base = pathlib.Path(tempfile.mkdtemp(prefix="hostile-", dir="/var/tmp"))
  base.chmod(0o777)
  victim = base / "victim.txt"
  victim.write_text("original")
  victim.chmod(0o666)
  yield base
  for child in base.iterdir():
    child.unlink()
  base.rmdir()


@pytest.fixture(scope="module")
def listener():
  server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  server.bind(("127.0.0.1", 0))
  server.listen(16)
  server.settimeout(0.2)
  yield server
  server.close()


def _program(body: str) -> str:
  return textwrap.dedent(body).strip("\n") + "\n" + F


def _cases(outside: pathlib.Path, port: int) -> dict[str, tuple[str, tuple[str, ...], set]]:
  """id -> (program, tests, acceptable statuses)."""
  victim = outside / "victim.txt"
  return {
      "python_loop": (_program("while True:\n  pass"), F_TESTS, {"timeout"}),
      "c_level_loop": (_program("import itertools\nsum(itertools.repeat(1))"), F_TESTS,
                       {"timeout"}),
      "signal_ignoring_loop": (_program("""
          import signal
          for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGXCPU):
            signal.signal(s, signal.SIG_IGN)
          signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals) - {signal.SIGKILL,
                                                                          signal.SIGSTOP})
          while True:
            pass"""), F_TESTS, {"timeout"}),
      "sleep": (_program("import time\ntime.sleep(3600)"), F_TESTS, {"timeout"}),
      "sleep_in_test": (F + "import time\n", ("import time; time.sleep(3600)",), {"timeout"}),
      "memory_bomb": (_program("x = bytearray(8 * 1024 ** 3)"), F_TESTS, {"killed"}),
      # Grows without touching its pages (bytes() of a large size is calloc'ed), so it meets
      # the address-space limit quickly however loaded the machine is.
      "memory_creep": (_program("x = []\nwhile True:\n  x.append(bytes(1 << 24))"),
                       F_TESTS, {"killed"}),
      "fork_bomb": (_program("""
          import os
          while True:
            try:
              os.fork()
            except OSError:
              pass"""), F_TESTS, {"timeout"}),
      # A daemon that outlives the program: the verdict is unaffected and it must not survive.
      "setsid_daemon": (_program("""
          import os, time
          if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
              time.sleep(3600)
            os._exit(0)"""), F_TESTS, {"passed"}),
      "stdout_flood": (_program("""
          import os
          block = b"x" * (1 << 20)
          for _ in range(1024):
            os.write(1, block)"""), F_TESTS, {"passed"}),
      "stderr_flood_then_fail": (
          _program("import sys\nsys.stderr.write('y' * (1 << 24))"), ("assert f(1) == 5",),
          {"failed"}),
      "sys_exit_0": (_program("import sys\nsys.exit(0)"), F_TESTS, {"error"}),
      "os_exit_0": (_program("import os\nos._exit(0)"), F_TESTS, {"error"}),
      "exit_0_inside_test": (F + "import os\n", ("os._exit(0)", "assert f(1) == 2"),
                             {"error"}),
      "thread_exits_early": (_program("""
          import os, threading, time
          threading.Thread(target=os._exit, args=(0,)).start()
          time.sleep(1)"""), F_TESTS, {"error"}),
      "atexit_exit_0": (_program("import atexit, os\natexit.register(os._exit, 0)\n"
                                 "raise ValueError('no')"), F_TESTS, {"error"}),
      "patched_excepthook": (_program("import sys\nsys.excepthook = lambda *a: None\n"
                                      "raise RuntimeError('hidden')"), F_TESTS, {"error"}),
      "forged_output": (_program("""
          import os
          print("passed")
          for fd in range(64):
            try:
              os.write(fd, b"%s pass 0 \\n%s pass 1 \\n%s done -1 \\n" % ((b"0" * 32,) * 3))
            except OSError:
              pass
          os._exit(0)"""), F_TESTS, {"error"}),
      "closes_all_fds": (_program("import os\nos.closerange(0, 1 << 16)"), F_TESTS,
                         {"error", "killed"}),
      "kill_minus_one": (_program("""
          import os, signal
          try:
            os.kill(-1, signal.SIGKILL)
          except OSError:
            pass"""), F_TESTS, {"passed"}),
      "kill_parent_and_group": (_program("""
          import os, signal
          for target in (os.getppid(), 0, -os.getpgid(0)):
            try:
              os.kill(target, signal.SIGKILL)
            except OSError:
              pass"""), F_TESTS, {"passed", "killed"}),
      "write_outside_scratch": (_program(f"""
          for path in ({str(victim)!r}, {str(outside / 'new.txt')!r}, "/dev/shm/x",
                       "/var/tmp/x", "/etc/passwd", "/root/x"):
            try:
              with open(path, "w") as f:
                f.write("pwned")
            except OSError:
              pass
          import os
          open("scratch.txt", "w").write("fine")  # The cwd is the private scratch directory.
          assert open(os.path.join(os.environ["TMPDIR"], "scratch.txt")).read() == "fine" """),
                                F_TESTS, {"passed"}),
      "network_connect": (_program(f"""
          import socket
          socket.create_connection(("127.0.0.1", {port}), timeout=1)"""), F_TESTS,
                          {"error"}),
      "read_stdin": (_program("x = input()"), F_TESTS, {"error"}),
      "stdin_is_empty": (_program("import sys\nassert sys.stdin.read() == ''"), F_TESTS,
                         {"passed"}),
      "segfault": (_program("import ctypes\nctypes.string_at(0)"), F_TESTS, {"killed"}),
      # PID 1 of a namespace ignores signals it sends itself unless handled; the sandbox's
      # handlers keep the ordinary outcome.
      "sigterm_to_self": (_program("import os, signal, time\n"
                                   "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(1)"),
                          F_TESTS, {"killed"}),
      "sigint_to_self": (_program("import signal\nsignal.raise_signal(signal.SIGINT)"),
                         F_TESTS, {"error"}),
      "abort": (_program("import os\nos.abort()"), F_TESTS, {"killed"}),
      "clean_environment": (_program("""
          import os
          assert set(os.environ) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL",
                                     "PYTHONHASHSEED"}, sorted(os.environ)"""), F_TESTS,
                            {"passed"}),
      "monkeypatch_harness": (_program("""
          import builtins, os, sys
          builtins.exec = builtins.compile = builtins.print = None
          os.write = os._exit = None
          sys.stdout = sys.stderr = None
          builtins.AssertionError = ValueError"""), F_TESTS, {"passed"}),
      "recursion": (_program("def r(): return r()\nr()"), F_TESTS, {"error"}),
      "syntax_error": ("def f(x) return x", F_TESTS, {"syntax_error"}),
      "privileged_syscalls_denied": (_program("""
          import ctypes, os
          libc = ctypes.CDLL(None, use_errno=True)
          assert os.getuid() != 0 and os.geteuid() != 0
          assert libc.unshare(0x10000000) == -1       # CLONE_NEWUSER
          assert libc.unshare(0x20000000) == -1       # CLONE_NEWPID: no capabilities left
          assert libc.setns(os.open("/proc/self/ns/pid", os.O_RDONLY), 0) == -1
          assert libc.ptrace(16, 1, 0, 0) == -1       # PTRACE_ATTACH
          assert libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == -1
          assert libc.umount2(b"/etc/passwd", 2) == -1  # The generated copy stays mounted,
          assert os.statvfs("/etc/passwd").f_flag & os.ST_RDONLY  # read-only.
          assert not os.path.exists("/root/.bashrc")
          # /proc is the worker's, with hidepid: only this very process is visible.
          assert len([p for p in os.listdir("/proc") if p.isdigit()]) == 1
          assert os.getpid() == 1"""), F_TESTS, {"passed"}),
  }


def test_hostile_programs_get_their_verdicts_and_leave_nothing_behind(pool, outside, listener):
  worker_pids = [w.process.pid for w in pool._workers]
  cases = _cases(outside, listener.getsockname()[1])
  jobs = [Job(name, program, tests) for name, (program, tests, _) in cases.items()]
  results = pool.run(jobs)
  verdicts = {r.id: r for r in results}
  wrong = {name: (verdicts[name].status, verdicts[name].error)
           for name, (_, _, expected) in cases.items() if verdicts[name].status not in expected}
  assert not wrong
  assert [r.id for r in results] == [j.id for j in jobs]  # Input order.
  assert all(not verdicts[n].passed for n, (_, _, e) in cases.items() if "passed" not in e)
  # Output is captured up to the cap, however much was written.
  assert len(verdicts["stdout_flood"].output) == CONFIG.output_cap_bytes
  assert verdicts["memory_bomb"].error.startswith("MemoryError")
  assert "EOFError" in verdicts["read_stdin"].error
  assert "SIGSEGV" in verdicts["segfault"].error
  assert verdicts["sigterm_to_self"].error == "killed by SIGTERM"
  assert "KeyboardInterrupt" in verdicts["sigint_to_self"].error
  # Timeouts are enforced from outside, not much later than asked.
  assert all(TIMEOUT_S <= verdicts[n].duration_s < TIMEOUT_S + 5
             for n in ("python_loop", "signal_ignoring_loop", "fork_bomb"))
  # No process of any sandbox uid survives, and the workers are the same processes.
  assert _sandbox_processes(pool.uids) == []
  assert all(psutil.pid_exists(pid) for pid in worker_pids)
  assert [w.process.poll() for w in pool._workers] == [None] * len(worker_pids)
  # Nothing outside the scratch space changed; the listener never saw a connection.
  assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
  assert (outside / "victim.txt").read_text() == "original"
  assert not os.path.exists("/dev/shm/x") and not os.path.exists("/var/tmp/x")
  with pytest.raises(socket.timeout):
    listener.accept()
  # And the harness still judges ordinary programs correctly.
  again = pool.run([Job("ok", F, F_TESTS), Job("bad", F, ("assert f(1) == 3",))])
  assert [(r.status, r.passed, r.tests_passed) for r in again] == [
      ("passed", True, 2), ("failed", False, 0)]


def test_no_state_leaks_from_one_program_to_the_next():
  # One worker, so both programs are forked from the same warm process, one after the other.
  polluter = _program("""
      import builtins, math, os, sys, random
      builtins.len = lambda x: 42
      math.pi = 3
      sys.modules["collections"] = None
      os.environ["LEAK"] = "1"
      open("leak.txt", "w").write("x")
      open("/dev/shm/leak", "w").write("x")  # The private /dev/shm is wiped too.
      os.mkdir("leakdir"); os.chmod("leakdir", 0)
      random.seed(12345)""")
  checker = _program("""
      import math, os, collections, random
      assert len([1]) == 1 and math.pi > 3.14
      assert "LEAK" not in os.environ
      assert os.listdir(".") == ["program.py"] and os.getcwd() == os.environ["TMPDIR"]
      assert os.listdir("/dev/shm") == []
      random.seed(0)
      first = random.random()""")
  with WorkerPool(SandboxConfig(timeout_s=TIMEOUT_S, workers=1)) as one:
    results = one.run([Job("polluter", polluter, F_TESTS), Job("checker", checker, F_TESTS)]
                      + [Job(f"seed{i}", "import random\nx = random.random()\n",
                             ("assert x == %r" % _first_random(),)) for i in range(3)])
  assert [(r.id, r.status) for r in results] == [
      ("polluter", "passed"), ("checker", "passed"), ("seed0", "passed"), ("seed1", "passed"),
      ("seed2", "passed")]


def _first_random() -> float:
  """What random.random() gives after random.seed(0) (the sandbox seeds every program)."""
  import random  # pylint: disable=import-outside-toplevel
  return random.Random(0).random()


def test_sandbox_layers_in_force_as_root(pool):
  layers = " ".join(pool.layers)
  for layer in ("pid namespace", "net namespace", "read-only filesystem", "seccomp",
                "unprivileged uid", "parent-death"):
    assert layer in layers
  assert pool.mode == "root"


def test_hash_seed_is_fixed_so_set_order_is_reproducible():
  expression = "list({'apple', 'banana', 'cherry', 'durian', 'elderberry', 'fig', 'grape'})"
  reference = subprocess.run([sys.executable, "-c", f"print({expression})"],
                             env={"PYTHONHASHSEED": str(SandboxConfig().python_hash_seed)},
                             capture_output=True, text=True, check=True).stdout.strip()
  jobs = [Job(f"order{i}", f"order = {expression}\n", (f"assert order == {reference}",))
          for i in range(4)]
  with WorkerPool(SandboxConfig(timeout_s=TIMEOUT_S, workers=2)) as two:
    assert [r.status for r in two.run(jobs)] == ["passed"] * 4


@pytest.mark.parametrize("own_session, check", [
    (False, "assert os.getpgid(0) == os.getpid() == 1 and os.getsid(0) == 0"),
    (True, "assert os.getsid(0) == os.getpgid(0) == os.getpid() == 1"),
])
def test_program_leads_its_own_process_group_or_session(own_session, check):
  config = SandboxConfig(timeout_s=TIMEOUT_S, workers=1, own_session=own_session)
  with WorkerPool(config) as one:
    [result] = one.run([Job("group", "import os\n" + check + "\n", ())])
  assert (result.status, result.error) == ("passed", "")


def test_memory_of_all_a_programs_processes_is_capped_together():
  # Six processes of 300 MiB each stay under the per-process limit (RLIMIT_AS) but not under
  # the worker's memory cgroup: the kernel kills some of them, inside the sandbox only. Each
  # holds its memory a while: on a busy 2-core machine children that exit at once can run one
  # after another and never hold more than the cgroup allows together (seen once in CI).
  config = SandboxConfig(timeout_s=30, workers=1, memory_mb=512, worker_memory_mb=1024)
  program = textwrap.dedent("""
      import os, signal, time
      children = []
      for _ in range(6):
        pid = os.fork()
        if pid == 0:
          block = bytearray(300 << 20)
          time.sleep(3)
          os._exit(0)
        children.append(pid)
      statuses = [os.waitpid(pid, 0)[1] for pid in children]
      oom_killed = sum(os.WIFSIGNALED(s) and os.WTERMSIG(s) == signal.SIGKILL for s in statuses)
      """)
  with WorkerPool(config) as one:
    if not any(layer.startswith("memory cgroup") for layer in one.layers):
      pytest.skip("no usable memory cgroup controller here")
    cgroup = one._workers[0].cgroup
    [result] = one.run([Job("many_hogs", program, ("assert oom_killed >= 1",))])
    [after] = one.run([Job("ok", F, F_TESTS)])
  assert (result.status, after.status) == ("passed", "passed")
  assert not os.path.exists(cgroup)  # Removed with the pool.
