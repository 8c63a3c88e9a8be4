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
"""
import builtins
import io
import os
import random
import signal
import sys

# Captured at import, i.e. in the worker, before any untrusted code runs.
_write = os.write
_exit = os._exit
_compile = builtins.compile
_exec = builtins.exec
_type = builtins.type
_str = builtins.str
_enumerate = builtins.enumerate
_BaseException = BaseException
_AssertionError = AssertionError

_MESSAGE_CAP = 300

# The program runs as PID 1 of its pid namespace, and the kernel does not deliver a signal to
# a namespace's init from inside it unless a handler is installed, so "kill yourself with
# SIGTERM" would be silently ignored. These handlers (installed in the worker, inherited by
# every fork) restore the ordinary outcome: the process dies, and says by which signal. A
# program may still install its own handlers, as usual. Faults (SIGSEGV, SIGBUS, SIGFPE,
# SIGILL, SIGABRT from abort()) are delivered by the kernel anyway; a program's SIGKILL or
# SIGSTOP to itself is the one case that stays ignored, as for any init process.
_TERMINATING_SIGNALS = ("SIGHUP", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM",
                        "SIGVTALRM", "SIGPROF", "SIGXCPU", "SIGIO", "SIGPWR")
_active_report = None


def _die_by_signal(number: int, _frame) -> None:
  report = _active_report
  if report is not None:
    try:
      report("signal", number)
    except _BaseException:
      pass
  _exit(128 + number)


def install_signal_handlers() -> None:
  """In the worker: handlers that make signals a program sends itself act as they would
  outside a pid namespace. SIGINT gets Python's own KeyboardInterrupt handler."""
  for name in _TERMINATING_SIGNALS:
    if hasattr(signal, name):
      signal.signal(getattr(signal, name), _die_by_signal)
  signal.signal(signal.SIGINT, signal.default_int_handler)


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


def run(program: str, setup: str, tests: tuple, report_fd: int, nonce: bytes,
        hash_seed: int) -> None:
  """Runs the job and exits the process; never returns."""
  global _active_report
  report = _active_report = _Reporter(report_fd, nonce)
  del nonce
  streams = (sys.stdout, sys.stderr)
  sys.argv = ["program.py"]
  random.seed(hash_seed)  # The worker's at-fork hook reseeded from urandom; be reproducible.
  namespace = {"__name__": "__main__", "__builtins__": builtins}
  report("ready")
  try:
    code = _compile(program, "program.py", "exec")
  except _BaseException as e:  # SyntaxError, ValueError (NUL bytes), RecursionError, ...
    report("syntax_error", -1, _describe(e))
    _flush(streams)
    _exit(0)
  try:
    _exec(code, namespace)
  except _BaseException as e:
    report("program_error", -1, _describe(e))
    _flush(streams)
    _exit(0)
  if setup:
    try:
      _exec(_compile(setup, "setup.py", "exec"), namespace)
    except _BaseException as e:
      report("setup_error", -1, _describe(e))
      _flush(streams)
      _exit(0)
  for i, test in _enumerate(tests):
    try:
      _exec(_compile(test, f"test_{i}.py", "exec"), namespace)
    except _AssertionError as e:
      report("fail", i, _describe(e))
    except _BaseException as e:
      report("test_error", i, _describe(e))
    else:
      report("pass", i)
  report("done")
  _flush(streams)
  _exit(0)
