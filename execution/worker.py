"""A warm worker: imports the stdlib once, then forks one sandboxed process per program.

Started by pool.py as `python -c <call main> CONFIG_JSON INDEX JOB_FD RESULT_FD PARENT_PID
PACKAGE_PARENT`. It reads length-prefixed JSON frames from JOB_FD, each a job or a batch to
screen ({"screen": [jobs]}: Worker.screen), and writes one length-prefixed JSON reply per
frame to RESULT_FD. The first frame it writes says whether its isolation could
be set up (and if not, why), so the caller fails loudly instead of running anything
unsandboxed.

The worker never executes untrusted code itself; see isolation.py for the process tree and
harness.py for the verdict channel. Forking from a warm interpreter is what makes this fast: a
fresh `python` costs 10-40 ms, a fork of this process about a millisecond.
"""
import fcntl
import gc
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
from execution import verdict
from execution.config import SandboxConfig
from execution.records import Job

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
_HIGH_FD = 100
_READ_CHUNK = 1 << 20
_REPORT_CAP = 1 << 20
_PIPE_SIZE = 1 << 20
_DRAIN_S = 1.0
_HEADER = struct.Struct("!I")


def read_frame(fd: int) -> bytes | None:
  header = _read_exactly(fd, _HEADER.size)
  if header is None:
    return None
  body = _read_exactly(fd, _HEADER.unpack(header)[0])
  if body is None:
    raise EOFError("truncated frame")
  return body


def _read_exactly(fd: int, size: int) -> bytes | None:
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


def write_frame(fd: int, payload: bytes) -> None:
  data = _HEADER.pack(len(payload)) + payload
  while data:
    data = data[os.write(fd, data):]


def _preimport() -> None:
  for name in PREIMPORTED_MODULES:
    try:
      __import__(name)
    except Exception:  # Optional modules (e.g. regex) may be absent; that is fine.
      pass


class Worker:
  """Runs jobs one at a time, each in a fresh sandboxed process."""

  def __init__(self, isolation_state: isolation.WorkerIsolation):
    self.isolation = isolation_state
    self.config = isolation_state.config
    # The worker holds the write end for its whole life and never writes: a program process
    # that sees it hang up knows the worker is gone (see _program).
    self._lifeline_r, self._lifeline_w = (_move_high(fd) for fd in os.pipe())
    self._devnull = _move_high(os.open(os.devnull, os.O_RDONLY))
    self._devnull_w = _move_high(os.open(os.devnull, os.O_WRONLY))

  def run(self, job: Job) -> verdict.Result:
    def body(report_fd: int, nonce: bytes) -> None:
      harness.run(job.program, job.setup, job.tests, report_fd, nonce,
                  self.config.python_hash_seed, self.config.run_as_main)

    nonce, report, output, wait_status, timed_out, duration = _retrying(self._fork, body)
    text = output[:self.config.output_cap_bytes].decode("utf-8", "replace")
    seen = verdict.Observation(report, nonce, wait_status, timed_out, len(job.tests), duration,
                               text)
    return verdict.decide(job.id, seen)

  def screen(self, jobs: list[Job]) -> list[verdict.Result | None]:
    """The syntax-error verdicts of `jobs`, found by compiling them all in one sandboxed
    process (harness.screen); None for each job that must be run. A job's verdict here is the
    one its own run would give, but for duration_s (the screen's time, shared out evenly)."""
    def body(report_fd: int, nonce: bytes) -> None:
      harness.screen(tuple(job.program for job in jobs), report_fd, nonce)

    nonce, report, _, _, _, duration = _retrying(self._fork, body)
    return verdict.screened(jobs, report, nonce, duration / max(len(jobs), 1))

  def _fork(self, body) -> tuple[bytes, bytes, bytes, int, bool, float]:
    """Runs body(REPORT_FD, nonce) in a fresh sandboxed process and watches it to its end:
    (nonce, verdict pipe bytes, output bytes, wait status, timed out, seconds)."""
    nonce = os.urandom(16).hex().encode()
    report_r, report_w = os.pipe()
    output_r, output_w = os.pipe()
    # Room for ~20k verdict records, so the worker need not wake up for each one: it reads
    # this pipe only once the program is gone (a program that floods it just blocks itself).
    watch_report = not _grow_pipe(report_w)  # If it stayed small, it must be drained live.
    _grow_pipe(output_w)  # Fewer wake-ups while draining a flood.
    start = time.monotonic()
    try:
      pid = self.isolation.fork_program()
    except BaseException:
      for fd in (report_r, report_w, output_r, output_w):
        os.close(fd)
      raise
    if pid == 0:
      self._program(body, nonce, report_w, output_w)  # Never returns.
    os.close(report_w)
    os.close(output_w)
    try:
      report, output, wait_status, timed_out = self._supervise(pid, report_r, output_r, start,
                                                               watch_report)
    finally:
      os.close(report_r)
      os.close(output_r)
    duration = time.monotonic() - start
    self.isolation.after_program(pid)
    return nonce, report, output, wait_status, timed_out, duration

  def _supervise(self, pid: int, report_r: int, output_r: int, start: float,
                 watch_report: bool) -> tuple[bytes, bytes, int, bool]:
    """Collects both pipes until the program is reaped; SIGKILLs it at the deadline."""
    pidfd = os.pidfd_open(pid)
    buffers = {report_r: bytearray(), output_r: bytearray()}
    caps = {report_r: _REPORT_CAP, output_r: self.config.output_cap_bytes}
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
        room = caps[fd] - len(buffers[fd])
        if room <= 0:
          # Past the cap: move the rest to /dev/null inside the kernel, without copying.
          if os.splice(fd, self._devnull_w, _READ_CHUNK) == 0:
            poller.unregister(fd)
            open_fds.discard(fd)
          continue
        chunk = os.read(fd, _READ_CHUNK)
        if not chunk:
          poller.unregister(fd)
          open_fds.discard(fd)
          continue
        buffers[fd] += chunk[:room]
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
      while len(buffers[report_r]) < _REPORT_CAP:
        try:
          chunk = os.read(report_r, _READ_CHUNK)
        except BlockingIOError:
          break
        if not chunk:
          break
        buffers[report_r] += chunk
    finally:
      os.close(pidfd)
    return bytes(buffers[report_r]), bytes(buffers[output_r]), wait_status, timed_out

  def _program(self, body, nonce: bytes, report_w: int, output_w: int):
    """P: isolates itself, then runs body(REPORT_FD, nonce) (the program). Never returns."""
    report_fd = report_w
    try:
      os.dup2(self._devnull, 0)
      os.dup2(output_w, 1)
      os.dup2(output_w, 2)
      os.dup2(report_w, REPORT_FD)
      report_fd = REPORT_FD
      os.dup2(self._lifeline_r, LIFELINE_FD)
      os.closerange(LIFELINE_FD + 1, 1 << 16)
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


def _retrying(function, argument):
  for attempt in range(2):
    try:
      return function(argument)
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
  isolation_state = isolation.WorkerIsolation(config, index)
  try:
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
    request = json.loads(frame)
    try:
      if "screen" in request:
        verdicts = worker.screen([Job.from_json(r) for r in request["screen"]])
        reply = {"screened": [None if v is None else v.to_json() for v in verdicts]}
      else:
        reply = {"result": worker.run(Job.from_json(request)).to_json(with_output=True)}
    except verdict.SandboxFailure as e:
      reply = {"sandbox_failure": str(e)}
    write_frame(result_fd, json.dumps(reply).encode())


if __name__ == "__main__":
  sys.exit(main(sys.argv))
