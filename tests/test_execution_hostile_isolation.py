"""What a program can reach of the host: no unix socket of the host (under /run, /var/run,
/tmp, or abstract), no file of the checkout or the data beside it, no file of the host's /tmp;
a private, writable /tmp wherever the project and its interpreter are installed (a CI checkout
with its venv under `mktemp -d` included); and a clean network state per program (a port a
previous program left in TIME_WAIT is free again)."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap

import pytest

from execution import Job, SandboxConfig, WorkerPool
from tests.conftest import REPO_ROOT, SHARED_DATA_DIR

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hostile suite runs as root (CI)")

CONFIG = SandboxConfig(timeout_s=10, workers=1, memory_mb=512)
F = "def f(x):\n  return x + 1\n"
F_TESTS = ("assert f(1) == 2",)


def _reaches_nothing(hidden_files: list[str], sockets: list) -> str:
  """A program that fails unless it can read none of `hidden_files`, connect to none of the
  unix `sockets`, and write and read back /tmp/out.txt."""
  return textwrap.dedent(f"""
      import os, socket, tempfile
      problems = []  # All of them, not just the first.
      try:
        with open("/tmp/out.txt", "w") as f:
          f.write("mine")
        assert open("/tmp/out.txt").read() == "mine"
      except OSError as e:
        problems.append(repr(e))
      if not (os.environ["TMPDIR"] == "/tmp" and tempfile.gettempdir() == "/tmp"):
        problems.append("TMPDIR " + os.environ["TMPDIR"])
      for path in {hidden_files!r}:
        try:
          with open(path, "rb") as f:
            f.read()
          problems.append("read " + path)
        except OSError:
          pass
      for address in {sockets!r}:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
          s.connect(address)
          problems.append("connected to " + repr(address))
        except OSError:
          pass
        finally:
          s.close()
      assert not problems, problems
      """) + F


# Tries to break the read-only mount an interpreter under /tmp lives in; then the next program
# starts the interpreter again and imports a module the worker did not pre-import.
VANDAL = textwrap.dedent("""
    import os, shutil
    for name in os.listdir("/tmp"):
      for attempt in (lambda: os.rename("/tmp/" + name, "/tmp/moved"),
                      lambda: shutil.rmtree("/tmp/" + name),
                      lambda: open(os.path.join("/tmp", name, "x"), "w")):
        try:
          attempt()
        except OSError:
          pass
    """) + F
STILL_WORKS = textwrap.dedent("""
    import subprocess, sys
    import xml.dom.minidom
    done = subprocess.run([sys.executable, "-c", "import json; print(json.dumps([1]))"],
                          capture_output=True, text=True)
    """) + F
STILL_WORKS_TESTS = ("assert done.stdout == '[1]\\n', done.stderr",)


class _HostBait:
  """World-connectable unix sockets and a world-readable file of the host's, where a careless
  sandbox would show them."""

  def __init__(self):
    tag = f"iso-{os.getpid()}-{os.urandom(4).hex()}"
    self.listeners: list[socket.socket] = []
    self.readable = os.path.join("/tmp", f"{tag}.txt")
    self.socket_dir = tempfile.mkdtemp(prefix=f"{tag}-", dir="/tmp")
    try:
      os.chmod(self.socket_dir, 0o755)
      paths = [os.path.join(self.socket_dir, "s.sock")]
      for run_dir, name in (("/run", "run"), ("/var/run", "var-run")):  # Often one directory.
        if os.path.isdir(run_dir):
          paths.append(os.path.join(run_dir, f"{tag}-{name}.sock"))
      self.abstract = "\0" + tag
      for address in paths + [self.abstract]:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listeners.append(server)
        server.bind(address)
        if address in paths:
          os.chmod(address, 0o777)
        server.listen(4)
        server.setblocking(False)
      self.sockets = paths + [self.abstract]
      pathlib.Path(self.readable).write_text("another job's output")
      os.chmod(self.readable, 0o644)
    except BaseException:
      self.close()
      raise

  def connections(self) -> int:
    count = 0
    for server in self.listeners:
      try:
        server.accept()[0].close()
        count += 1
      except BlockingIOError:
        pass
    return count

  def close(self) -> None:
    for server in self.listeners:
      name = server.getsockname()
      server.close()
      if isinstance(name, str) and name and not name.startswith("\0"):
        os.unlink(name)
    if os.path.exists(self.readable):
      os.unlink(self.readable)
    shutil.rmtree(self.socket_dir)


@pytest.fixture(scope="module")
def bait():
  host = _HostBait()
  yield host
  host.close()


def test_no_host_socket_checkout_or_tmp_file_is_reachable(bait):
  hidden = [str(REPO_ROOT / "pytest.ini"), str(REPO_ROOT / "execution" / "worker.py"),
            bait.readable]
  if SHARED_DATA_DIR.is_dir():
    hidden += [str(p) for p in sorted(SHARED_DATA_DIR.rglob("*.jsonl"))[:3]]
  program = _reaches_nothing(hidden, bait.sockets)
  listing = F + "import os, sys\nroot = sorted(os.listdir('/'))\npath = list(sys.path)\n"
  with WorkerPool(CONFIG) as pool:
    results = pool.run([Job("reach", program, F_TESTS), Job("listing", listing, F_TESTS)])
  assert [(r.status, r.error) for r in results] == [("passed", "")] * 2
  assert bait.connections() == 0
  # The program's root holds system directories and the interpreter's paths only.
  probe = ("assert set(root) <= {'bin', 'dev', 'etc', 'lib', 'lib32', 'lib64', 'libx32', "
           "'proc', 'sbin', 'sys', 'tmp', 'usr'} | {p.split('/')[1] for p in path if p}, root",
           # A venv inside the checkout (as .ci/run makes) is the interpreter's; nothing else.
           f"assert all(p.startswith(sys.prefix) or not p.startswith({str(REPO_ROOT)!r}) "
           "for p in path), path",
           "assert not any(os.path.exists(d) for d in ('/run', '/var/run', '/var/tmp', "
           "'/home', '/mnt', '/srv', '/opt/unrelated'))")
  with WorkerPool(CONFIG) as pool:
    [result] = pool.run([Job("listing", listing, probe)])
  assert (result.status, result.error) == ("passed", "")


CI_LAYOUT_SCRIPT = textwrap.dedent("""
    import json, sys
    from execution import Job, SandboxConfig, WorkerPool
    spec = json.loads(sys.argv[1])
    with WorkerPool(SandboxConfig(timeout_s=10, workers=1, memory_mb=512)) as pool:
      results = pool.run([Job(*job) for job in spec["jobs"]])
      print(json.dumps({"layers": pool.layers,
                        "got": [[r.id, r.status, r.error, r.output[-500:]] for r in results]}))
    """)


def test_checkout_and_venv_under_tmp_as_in_ci(bait, tmp_path):
  # A fresh clone under `mktemp -d` (mode 700) with its venv inside, a runs/ directory and
  # data beside it: the old view showed the host's /tmp read-only (EROFS on /tmp/out.txt,
  # other jobs' files readable) and mounted the checkout back.
  base = tempfile.mkdtemp(dir="/tmp")
  try:
    checkout = os.path.join(base, "repo")
    shutil.copytree(REPO_ROOT / "execution", os.path.join(checkout, "execution"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for secret in ("runs/run1/results.json", "../shared/data/mbpp/mbpp.jsonl"):
      path = os.path.join(checkout, secret)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      pathlib.Path(path).write_text('{"code": "reference solution"}\n')
      os.chmod(path, 0o644)
    venv = os.path.join(checkout, ".venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    hidden = [os.path.join(checkout, p) for p in (
        "runs/run1/results.json", "../shared/data/mbpp/mbpp.jsonl", "execution/worker.py")]
    hidden.append(bait.readable)
    jobs = [["reach", _reaches_nothing(hidden, bait.sockets), list(F_TESTS)],
            ["vandal", VANDAL, list(F_TESTS)],
            ["still_works", STILL_WORKS, list(STILL_WORKS_TESTS)],
            ["reach_again", _reaches_nothing(hidden, bait.sockets), list(F_TESTS)]]
    done = subprocess.run([python, "-c", CI_LAYOUT_SCRIPT, json.dumps({"jobs": jobs})],
                          cwd=checkout, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": checkout},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert [got[:3] for got in report["got"]] == [
        [name, "passed", ""] for name in ("reach", "vandal", "still_works", "reach_again")], report
    assert bait.connections() == 0
    # The same programs get the same verdicts with the interpreter elsewhere.
    with WorkerPool(CONFIG) as pool:
      elsewhere = pool.run([Job(*job) for job in jobs])
    assert [(r.id, r.status, r.error) for r in elsewhere] == [
        (name, "passed", "") for name in ("reach", "vandal", "still_works", "reach_again")]
  finally:
    shutil.rmtree(base)


PORT = 47123
SERVE_AND_CLOSE_FIRST = textwrap.dedent(f"""
    import os, socket
    server = socket.create_server(("127.0.0.1", {PORT}))
    client = socket.create_connection(("127.0.0.1", {PORT}))
    conn, _ = server.accept()
    conn.close()    # The server side closes first: its end of the port goes to TIME_WAIT
    client.close()  # once the client's FIN arrives.
    server.close()
    print(os.readlink("/proc/self/ns/net"))
    """) + F
PLAIN_BIND = textwrap.dedent(f"""
    import os, socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", {PORT}))  # No SO_REUSEADDR: fails while the port is in TIME_WAIT.
    s.close()
    print(os.readlink("/proc/self/ns/net"))
    """) + F
QUIET = textwrap.dedent("""
    import ctypes, os
    assert ctypes.CDLL(None).unshare(0x40000000) == -1  # CLONE_NEWNET: not for programs.
    print(os.readlink("/proc/self/ns/net"))
    """) + F


def test_a_port_left_in_time_wait_is_free_for_the_next_program():
  # One worker, so the programs run one after the other from the same warm process.
  with WorkerPool(CONFIG) as pool:
    results = pool.run([Job("quiet", QUIET, F_TESTS), Job("quiet_again", QUIET, F_TESTS),
                        Job("serve", SERVE_AND_CLOSE_FIRST, F_TESTS),
                        Job("bind", PLAIN_BIND, F_TESTS)])
  assert [(r.id, r.status, r.error) for r in results] == [
      ("quiet", "passed", ""), ("quiet_again", "passed", ""), ("serve", "passed", ""),
      ("bind", "passed", "")]
  quiet, quiet_again, serve, bind = (r.output.strip() for r in results)
  # Programs that leave no socket share the namespace (a new one costs milliseconds); the
  # program after one that did gets a fresh one.
  assert quiet == quiet_again == serve != bind
