"""A warm worker: imports the stdlib once, then forks one sandboxed process per program.

Started by pool.py as `python -c <call main> CONFIG_JSON INDEX JOB_FD RESULT_FD PARENT_PID
PACKAGE_PARENT`. It reads requests from JOB_FD and writes one reply per request to RESULT_FD.
The first frame it writes says whether its isolation could be set up (and if not, why), so the
caller fails loudly instead of running anything unsandboxed.

A request is a length-prefixed header followed by texts, UTF-8 encoded, back to back: a job's
(JOB_REQUEST and the sizes of its program, setup and tests) or a syntax screen's (JSON:
{"screen": [[id, tests count], ...], "sizes"}: Worker.screen, then the screened programs). A
reply is a length-prefixed frame. A job's says what the worker saw (JOB_REPLY: wait status,
timed out, OOM kill, seconds, the sizes of what follows, the nonce) and is followed by the
verdict pipe's bytes and the program's output, raw; the caller turns that into a Result
(verdict.decide). Every other reply is JSON. All this keeps the worker's own work per program
small: each page it writes between two forks is a copy-on-write fault (its pages are shared
with the program it forked last), and decide(), the Result and the json module's encoder and
decoder touched more of its pages than the rest of its work around a fork.

The texts never enter this process's memory, which every program inherits: it moves them
from JOB_FD to a pipe of the program's own process with splice(2), inside the kernel, and that
process reads them only once it is sandboxed. Likewise a program's output goes from its pipe
to a memfd and on to RESULT_FD by splice. So no program can find another's text, or output
that may quote it (a traceback's source lines), by reading its own memory; the screen's batch
lives only in the screen's own process.

The worker never executes untrusted code itself; see isolation.py for the process tree and
harness.py for the verdict channel. Forking from a warm interpreter is what makes this fast: a
fresh `python` starts the interpreter and imports its modules again, which costs many times
what a fork of this process does.
"""
import fcntl
import gc
import importlib
import json
import os
import select
import signal
import struct
import sys
import time

from execution import harness
from execution import isolation
from execution import linux
from execution import memory_cgroup
from execution import verdict
from execution.config import SandboxConfig

# Modules model-written programs commonly import; importing them here means a child finds
# them in sys.modules instead of reading and compiling them on every run.
PREIMPORTED_MODULES = (
    # In MBPP's reference solutions: re 78, math 42, collections 27, heapq 18, itertools 12,
    # sys 8, cmath 4, operator 3, array 3, bisect 2, copy 1, datetime 1. Others are imported
    # on demand from the (read-only) stdlib; a bigger worker makes every fork slower.
    "re", "math", "collections", "heapq", "itertools", "cmath", "operator", "array", "bisect",
    "copy", "datetime", "functools", "string", "random", "typing",
)

REPORT_FD = 3
LIFELINE_FD = 4
TEXT_FD = 5  # In a program's process: where its job's texts arrive (harness.read_texts).
_HIGH_FD = 100
_READ_CHUNK = 1 << 20
_REPORT_CAP = 1 << 20
_PIPE_SIZE = 1 << 20
_DRAIN_S = 1.0
_HEADER = struct.Struct("!I")
JOB_REQUEST = b"J"  # Then the texts' sizes, as native unsigned ints.
JOB_REPLY_TAG = b"R"
# The tag, wait status, timed out, OOM kill, seconds, verdict pipe bytes, output bytes, nonce.
JOB_REPLY = struct.Struct("=ci??dII32s")


def read_frame(fd: int) -> bytes | None:
  header = read_exactly(fd, _HEADER.size)
  if header is None:
    return None
  body = read_exactly(fd, _HEADER.unpack(header)[0])
  if body is None:
    raise EOFError("truncated frame")
  return body


def read_exactly(fd: int, size: int) -> bytes | None:
  """`size` bytes from fd; None at a clean end of stream before any. Raises EOFError
  if it ends in between."""
  chunks, remaining = [], size
  while remaining:
    chunk = os.read(fd, remaining)
    if not chunk:
      if remaining == size and not chunks:
        return None
      raise EOFError("truncated frame")
    chunks.append(chunk)
    remaining -= len(chunk)
  return b"".join(chunks)


def frame(payload: bytes, raw: bytes = b"") -> bytes:
  """A length-prefixed frame, then `raw` bytes (whose size the frame says)."""
  return _HEADER.pack(len(payload)) + payload + raw


def write_frame(fd: int, payload: bytes, raw: bytes = b"") -> None:
  write_all(fd, frame(payload, raw))


def write_all(fd: int, data: bytes) -> None:
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view):]


def _preimport() -> None:
  for name in PREIMPORTED_MODULES:
    try:
      __import__(name)
    except Exception:  # Optional modules (e.g. regex) may be absent; that is fine.
      pass


def _import_configured(names) -> None:
  """SandboxConfig.preimport; IsolationUnavailable (the pool refuses to start) for a module
  that does not import: programs written against it would otherwise fail one by one."""
  for name in names:
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except  (whatever its import raises)
      raise isolation.IsolationUnavailable(
          f"cannot preimport {name!r} (SandboxConfig.preimport): {type(e).__name__}: {e}"
      ) from e


class Worker:
  """Runs jobs one at a time, each in a fresh sandboxed process."""

  def __init__(self, isolation_state: isolation.WorkerIsolation):
    self.isolation = isolation_state
    self.config = isolation_state.config
    # The program's file, as `python prog.py` would have it: in its (scratch) working directory.
    self.program_path = os.path.join(isolation_state.scratch, harness.PROGRAM_FILE)
    # The worker holds the write end for its whole life and never writes: a program process
    # that sees it hang up knows the worker is gone (see _program).
    self._lifeline_r, self._lifeline_w = (_move_high(fd) for fd in os.pipe())
    self._devnull = _move_high(os.open(os.devnull, os.O_RDONLY))
    self._devnull_w = _move_high(os.open(os.devnull, os.O_WRONLY))
    self._output = _move_high(os.memfd_create("program-output", os.MFD_CLOEXEC))
    self._output_size = 0
    self._oom_watch = memory_cgroup.OomKillWatch()

  def run(self, sizes: list[int], job_fd: int) -> tuple[bytes, bytes, int]:
    """Runs the job whose texts (of these sizes) come next on job_fd. Returns the reply
    (JOB_REPLY), the verdict pipe's bytes that follow it, and the size of the output that
    send_output sends after them."""
    def body(report_fd: int, nonce: bytes) -> None:
      harness.run(TEXT_FD, sizes, report_fd, nonce, self.config.python_hash_seed,
                  self.config.run_as_main, self.program_path)

    self._discard_output()
    nonce, report, wait_status, timed_out, duration, out_of_memory = _retrying(
        self._fork, body, job_fd, sum(sizes))
    reply = JOB_REPLY.pack(JOB_REPLY_TAG, wait_status, timed_out, out_of_memory, duration,
                           len(report), self._output_size, nonce)
    return reply, report, self._output_size

  def send_output(self, result_fd: int) -> None:
    """Moves the last program's output (capped) to result_fd, inside the kernel."""
    offset, remaining = 0, self._output_size
    while remaining:
      moved = os.splice(self._output, result_fd, remaining, offset_src=offset)
      offset += moved
      remaining -= moved

  def screen(self, header: dict, job_fd: int) -> list[verdict.Result | None]:
    """The syntax-error verdicts of the jobs in `header` (the programs' text comes next on
    job_fd), found by compiling them all in one sandboxed process (harness.screen); None for
    each job that must be run. A job's verdict here is the one its own run would give, but
    for duration_s (the screen's time, shared out evenly)."""
    jobs = [(job_id, tests) for job_id, tests in header["screen"]]  # (id, number of tests)

    def body(report_fd: int, nonce: bytes) -> None:
      harness.screen(TEXT_FD, header["sizes"], report_fd, nonce, self.program_path)

    self._discard_output()
    nonce, report, _, _, duration, _ = _retrying(self._fork, body, job_fd, sum(header["sizes"]))
    return verdict.screened(jobs, report, nonce, duration / max(len(jobs), 1))

  def _fork(self, body, job_fd: int, text_size: int
            ) -> tuple[bytes, bytes, int, bool, float, bool]:
    """Runs body(REPORT_FD, nonce) in a fresh sandboxed process, passes it text_size bytes
    of job_fd on TEXT_FD, and watches it to its end: (nonce, verdict pipe bytes, wait
    status, timed out, seconds, whether the OOM killer struck in the worker's cgroup)."""
    nonce = os.urandom(16).hex().encode()
    report_r, report_w = os.pipe()
    output_r, output_w = os.pipe()
    text_r, text_w = os.pipe()
    # Out of the way of the program's fds 0-5, which _program sets up before it takes text_r
    # to TEXT_FD. (text_w needs no move: whatever its number, the program's process ends up
    # without it, as every fd there is replaced or closed.)
    text_r = _move_high(text_r)
    # Room for ~20k verdict records, so the worker need not wake up for each one: it reads
    # this pipe only once the program is gone (a program that floods it just blocks itself).
    watch_report = not _grow_pipe(report_w)  # If it stayed small, it must be drained live.
    _grow_pipe(output_w)  # Fewer wake-ups while draining a flood.
    start = time.monotonic()
    try:
      pid = self.isolation.fork_program()
    except BaseException:
      for fd in (report_r, report_w, output_r, output_w, text_r, text_w):
        os.close(fd)
      raise
    if pid == 0:
      self._program(body, nonce, report_w, output_w, text_r)  # Never returns.
    os.close(report_w)
    os.close(output_w)
    os.close(text_r)
    try:
      self._pass_text(job_fd, text_w, text_size)
    finally:
      os.close(text_w)
    try:
      report, wait_status, timed_out = self._supervise(pid, report_r, output_r, start,
                                                       watch_report)
    finally:
      os.close(report_r)
      os.close(output_r)
    duration = time.monotonic() - start
    # A program that ran to its end removed its own file (harness.run), so the scratch
    # directory is empty again and after_program's wipe costs one stat().
    self.isolation.after_program(pid)
    return nonce, report, wait_status, timed_out, duration, self._oom_watch.struck()

  def _pass_text(self, job_fd: int, text_w: int, size: int) -> None:
    """Moves `size` bytes from job_fd to the program's text pipe, without copying them into
    this process; what a process that died before reading them all left is discarded."""
    target = text_w
    while size:
      try:
        moved = os.splice(job_fd, target, size)
      except BrokenPipeError:
        target = self._devnull_w
        continue
      if moved == 0:
        raise EOFError("truncated request")
      size -= moved

  def _discard_output(self) -> None:
    if self._output_size:
      os.ftruncate(self._output, 0)
      os.lseek(self._output, 0, os.SEEK_SET)
      self._output_size = 0

  def _supervise(self, pid: int, report_r: int, output_r: int, start: float,
                 watch_report: bool) -> tuple[bytes, int, bool]:
    """Collects the verdict pipe, and the output into the output memfd, until the program is
    reaped; SIGKILLs it at the deadline."""
    pidfd = os.pidfd_open(pid)
    report = bytearray()
    output_cap = self.config.output_cap_bytes
    poller = select.poll()
    open_fds = {output_r, report_r} if watch_report else {output_r}
    for fd in (*open_fds, pidfd):
      poller.register(fd, select.POLLIN)
    deadline = start + self.config.timeout_s
    timed_out = False
    exited = False

    def pump(timeout_ms: int) -> bool:
      nonlocal exited
      events = poller.poll(timeout_ms)
      for fd, _ in events:
        if fd == pidfd:
          exited = True
          poller.unregister(pidfd)
          continue
        if fd == output_r:
          room = output_cap - self._output_size
          target = self._output
        else:
          room = _REPORT_CAP - len(report)
          target = None
        if room <= 0 or target is not None:
          # Output, or anything past a cap: moved inside the kernel, to the memfd or, past
          # the cap, to /dev/null.
          try:
            moved = os.splice(fd, target if room > 0 else self._devnull_w,
                              min(room, _READ_CHUNK) if room > 0 else _READ_CHUNK)
          except OSError:  # EFBIG: the output cap is above RLIMIT_FSIZE.
            self._output_size = output_cap
            continue
          if moved == 0:
            poller.unregister(fd)
            open_fds.discard(fd)
          elif room > 0:
            self._output_size += moved
          continue
        chunk = os.read(fd, _READ_CHUNK)
        if not chunk:
          poller.unregister(fd)
          open_fds.discard(fd)
          continue
        report.extend(chunk[:room])
      return bool(events)

    try:
      # With namespaces, the program is PID 1 of its own pid namespace, and the kernel reports
      # it exited only once every process in that namespace is gone.
      while not exited:
        now = time.monotonic()
        if not timed_out and now >= deadline:
          timed_out = True
          _kill(pid)
          deadline = float("inf")
        pump(-1 if timed_out else max(1, int((deadline - now) * 1000) + 1))
      _, wait_status = os.waitpid(pid, 0)
      # Every writer is gone now (in weak mode, stray writers are killed by after_program and
      # their output is not waited for); take what is still buffered.
      drain_until = time.monotonic() + _DRAIN_S
      while open_fds and pump(0) and time.monotonic() < drain_until:
        pass
      os.set_blocking(report_r, False)
      while len(report) < _REPORT_CAP:
        try:
          chunk = os.read(report_r, _READ_CHUNK)
        except BlockingIOError:
          break
        if not chunk:
          break
        report.extend(chunk)
    finally:
      os.close(pidfd)
    return bytes(report), wait_status, timed_out

  def _program(self, body, nonce: bytes, report_w: int, output_w: int, text_r: int):
    """P: isolates itself, then runs body(REPORT_FD, nonce) (the program). Never returns."""
    report_fd = report_w
    try:
      os.dup2(self._devnull, 0)
      os.dup2(output_w, 1)
      os.dup2(output_w, 2)
      os.dup2(report_w, REPORT_FD)
      report_fd = REPORT_FD
      os.dup2(self._lifeline_r, LIFELINE_FD)
      os.dup2(text_r, TEXT_FD)
      os.closerange(TEXT_FD + 1, 1 << 16)
      memory_cgroup.prefer_for_oom_killer()  # While still root (see there).
      self.isolation.enter_program_sandbox()
      # The parent-death signal, armed only now, cannot fire for a worker that died before;
      # the lifeline tells.
      if select.select([LIFELINE_FD], [], [], 0)[0]:
        os._exit(112)
      os.close(LIFELINE_FD)
    except BaseException as e:  # pylint: disable=broad-except
      try:
        _write_all(report_fd, b"%s setup_failed -1 %s\n" % (nonce, repr(e).encode()))
      finally:
        os._exit(111)
    try:
      body(REPORT_FD, nonce)
    finally:
      # Whatever happens (the program closed the verdict pipe, the harness itself raised), this
      # process must never fall back into the worker's loop.
      os._exit(113)


def _retrying(function, *arguments):
  for attempt in range(2):
    try:
      return function(*arguments)
    except BlockingIOError:  # fork() hit EAGAIN under momentary pressure: retry once.
      if attempt:
        raise
      time.sleep(0.05)
  raise AssertionError("unreachable")


def _move_high(fd: int) -> int:
  high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)
  os.close(fd)
  return high


def _grow_pipe(fd: int) -> bool:
  """Asks for a 1 MiB pipe buffer; False if the system refused (pipe-max-size, user quota)."""
  try:
    return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE) >= _PIPE_SIZE
  except OSError:
    return False


def _kill(pid: int) -> None:
  try:
    os.kill(pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def _write_all(fd: int, data: bytes) -> None:
  while data:
    data = data[os.write(fd, data):]


def main(argv: list[str]) -> int:
  config_json, index, job_fd, result_fd = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
  parent = int(argv[5]) if len(argv) > 5 else None
  strip_path = argv[6] if len(argv) > 6 else None
  # Die with the caller, so a crashed or killed caller never leaves workers (or programs) behind.
  linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
  if parent is not None and os.getppid() != parent:
    return 1
  # Long-lived descriptors live high up, so a program's fds 0-4 can be set up without clashes.
  job_fd, result_fd = (_move_high(fd) for fd in (job_fd, result_fd))
  # Ctrl-C reaches only the caller's process group (workers have their own session).
  config = SandboxConfig(**json.loads(config_json))
  if isolation.is_root():
    # The OOM killer takes a program, never the worker, however much memory a program holds
    # outside any process's RSS (memory_cgroup.py).
    memory_cgroup.protect_from_oom_killer()
  isolation_state = isolation.WorkerIsolation(config, index)
  try:
    # Before the isolation: the mount view holds no checkout to import from.
    _import_configured(config.preimport)
    isolation_state.prepare()
  except isolation.IsolationUnavailable as e:
    write_frame(result_fd, json.dumps({"ready": False, "error": str(e),
                                       "cgroup": isolation_state.cgroup}).encode())
    return 2
  _preimport()
  # Programs import from the interpreter's own paths only, never from this checkout.
  sys.path[:] = [p for p in sys.path if p and p not in (strip_path, "/")]
  worker = Worker(isolation_state)
  isolation_state.inherit_into_programs()
  harness.install_stdio()
  harness.install_signal_handlers()
  gc.collect()
  gc.freeze()  # Forked children then never touch (and copy) the worker's objects during GC.
  write_frame(result_fd, json.dumps({
      "ready": True, "layers": isolation_state.describe_layers(),
      "mode": "root" if isolation.is_root() else "user", "uid": isolation_state.uid,
      "cgroup": isolation_state.cgroup}).encode())
  while True:
    frame = read_frame(job_fd)
    if frame is None:
      isolation_state.close()
      return 0
    report, output_size = b"", 0
    try:
      if frame[:1] == JOB_REQUEST:
        reply, report, output_size = worker.run(memoryview(frame)[1:].cast("I").tolist(),
                                                job_fd)
      else:
        verdicts = worker.screen(json.loads(frame), job_fd)
        reply = json.dumps({"screened": [None if v is None else v.to_json()
                                         for v in verdicts]}).encode()
    except verdict.SandboxFailure as e:
      reply, report, output_size = json.dumps({"sandbox_failure": str(e)}).encode(), b"", 0
    write_frame(result_fd, reply, report)
    if output_size:
      worker.send_output(result_fd)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
