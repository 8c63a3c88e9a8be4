"""The Python API: a pool of warm workers that runs a batch of jobs and returns results in order.

    from execution import Job, SandboxConfig, run_programs
    results = run_programs([Job("a", "def f(): return 1", ("assert f() == 1",))])

Workers are separate interpreters (never the caller's), started with a fixed hash seed and a
clean environment. Each reports at start-up whether the requested isolation could be set up;
if any cannot, the pool raises IsolationUnavailable with the reason, and runs nothing.
Workers are tied to the caller with PR_SET_PDEATHSIG, which fires when the *thread* that
created the pool exits: create and use a pool from the same, long-lived thread. A pool runs
one batch at a time (run() is not reentrant), and can run many batches.
"""
import array
import collections
import dataclasses
import fcntl
import json
import os
import queue
import select
import struct
import subprocess
import sys
import termios
import threading
from typing import Callable, Iterable, Sequence

from execution import isolation
from execution import memory_cgroup
from execution import verdict
from execution import worker as worker_module
from execution.config import SandboxConfig
from execution.records import Job, Result

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ProgressCallback = Callable[[int, int], None]
_PIPE_SIZE = 1 << 20
# A pipe holds whole pages, and a page the worker has read only part of still takes its slot.
_PIPE_SLACK = 3 * 4096
_START_TIMEOUT_S = 60.0
# Not `-m execution.worker`, which would import the worker module twice (runpy warns).
_WORKER_ENTRY = "import sys; from execution.worker import main; sys.exit(main(sys.argv))"


class _WorkerHandle:
  """One worker process and the two pipes to it."""

  def __init__(self, config: SandboxConfig, index: int, python: str):
    job_r, self._job_w = os.pipe()
    self._result_r, result_w = os.pipe()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": _PACKAGE_PARENT,
           "PYTHONHASHSEED": str(config.python_hash_seed), "PYTHONDONTWRITEBYTECODE": "1",
           "LANG": "C.UTF-8"}
    argv = [python, "-s", "-c", _WORKER_ENTRY, json.dumps(dataclasses.asdict(config)),
            str(index), str(job_r), str(result_w), str(os.getpid()), _PACKAGE_PARENT]
    self.cgroup: str | None = None
    self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, pass_fds=(job_r, result_w),
                                    env=env, cwd="/", start_new_session=True)
    os.close(job_r)
    os.close(result_w)
    self.big_pipes = True
    for fd in (self._job_w, self._result_r):
      try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
      except OSError:  # Above /proc/sys/fs/pipe-max-size.
        self.big_pipes = False

  def hello(self) -> dict:
    if not select.select([self._result_r], [], [], _START_TIMEOUT_S)[0]:
      self.process.kill()
      return {"ready": False, "error": f"worker did not start within {_START_TIMEOUT_S:.0f} s"}
    frame = worker_module.read_frame(self._result_r)
    if frame is None:
      return {"ready": False, "error": f"worker exited with status {self.process.wait()}"}
    hello = json.loads(frame)
    self.cgroup = hello.get("cgroup")
    return hello

  @staticmethod
  def request(job: Job) -> bytes:
    """`job` as the worker reads it: a header, then the texts (see worker.py)."""
    encoded = _encode((job.program, job.setup, *job.tests))
    sizes = array.array("I", [len(data) for data in encoded]).tobytes()
    return worker_module.frame(worker_module.JOB_REQUEST + sizes, b"".join(encoded))

  def send(self, request: bytes) -> None:
    worker_module.write_all(self._job_w, request)

  def room(self) -> int:
    """Bytes the job pipe takes now without blocking (its size less what waits in it)."""
    waiting = struct.unpack("i", fcntl.ioctl(self._job_w, termios.FIONREAD, b"\0" * 4))[0]
    return _PIPE_SIZE - waiting

  def receive(self, job: Job) -> Result:
    """The Result of `job`, the oldest one sent and not yet received."""
    frame = self._frame()
    if frame[:1] != worker_module.JOB_REPLY_TAG:
      self._json(frame)  # Raises the SandboxFailure it holds.
      raise verdict.SandboxFailure(f"unexpected reply from the worker: {frame[:200]!r}")
    (_, wait_status, timed_out, out_of_memory, duration, report_size, output_size,
     nonce) = worker_module.JOB_REPLY.unpack(frame)
    report = self._raw(report_size)
    output = self._raw(output_size).decode("utf-8", "replace")
    seen = verdict.Observation(report, nonce, wait_status, timed_out, len(job.tests), duration,
                               output, out_of_memory)
    return verdict.decide(job.id, seen)

  def _raw(self, size: int) -> bytes:
    if not size:
      return b""
    data = worker_module.read_exactly(self._result_r, size)
    if data is None:
      raise verdict.SandboxFailure(f"worker died (status {self.process.wait()})")
    return data

  def screen(self, jobs: Sequence[Job]) -> list[Result | None]:
    """The syntax screen's verdicts on `jobs` (worker.Worker.screen); None: must run."""
    self.send(_request({"screen": [(job.id, len(job.tests)) for job in jobs]},
                       [job.program for job in jobs]))
    return [None if r is None else Result(**r) for r in self._json(self._frame())["screened"]]

  def _frame(self) -> bytes:
    try:
      frame = worker_module.read_frame(self._result_r)
    except EOFError:
      frame = None
    if frame is None:
      raise verdict.SandboxFailure(f"worker died (status {self.process.wait()})")
    return frame

  @staticmethod
  def _json(frame: bytes) -> dict:
    reply = json.loads(frame)
    if "sandbox_failure" in reply:
      raise verdict.SandboxFailure(reply["sandbox_failure"])
    return reply

  def close(self) -> None:
    for fd in (self._job_w, self._result_r):
      try:
        os.close(fd)
      except OSError:
        pass
    try:
      self.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()
    if self.cgroup:
      memory_cgroup.remove(self.cgroup)


def _encode(texts: Sequence[str]) -> list[bytes]:
  # Lone surrogates (which JSON can carry) survive the trip, as they did inside JSON.
  return [text.encode("utf-8", "surrogatepass") for text in texts]


def _request(header: dict, texts: Sequence[str]) -> bytes:
  encoded = _encode(texts)
  header["sizes"] = [len(data) for data in encoded]
  return worker_module.frame(json.dumps(header).encode(), b"".join(encoded))


def _queue(items: Iterable) -> queue.SimpleQueue:
  work: queue.SimpleQueue = queue.SimpleQueue()
  for item in items:
    work.put(item)
  return work


class WorkerPool:
  """Warm sandbox workers; reusable across batches. Use as a context manager."""

  def __init__(self, config: SandboxConfig | None = None, python: str | None = None):
    self.config = config or SandboxConfig()
    self._workers: list[_WorkerHandle] = []
    try:
      for i in range(self.config.worker_count):
        self._workers.append(_WorkerHandle(self.config, i, python or sys.executable))
      hellos = [w.hello() for w in self._workers]
    except BaseException:
      self.close()
      raise
    refusals = [h["error"] for h in hellos if not h.get("ready")]
    if refusals:
      self.close()
      raise isolation.IsolationUnavailable(
          f"sandbox isolation {self.config.isolation!r} unavailable: {refusals[0]}")
    self.layers: list[str] = hellos[0]["layers"]
    self.mode: str = hellos[0]["mode"]
    # The uid each worker's programs run as (as root, leased host-wide: uid_lease.py).
    self.uids: list[int] = [h["uid"] for h in hellos]
    self.screened = 0  # Jobs whose verdict the syntax screen gave, over this pool's life.

  def run(self, jobs: Sequence[Job], progress: ProgressCallback | None = None,
          on_result: Callable[[int, Result], None] | None = None) -> list[Result]:
    """Runs every job; results come back in input order.

    With config.screen_batch, the jobs are first compiled in batches (worker.Worker.screen):
    the ones that stop at a syntax error get their verdict there, and only the others run,
    each in its own process. Either way a job's Result is the same but for duration_s.

    `on_result(index, result)` is called as each job finishes (in completion order, one call
    at a time, from the pool's threads), for callers that stream results out; an exception
    from it stops the batch and is raised here.
    Raises SandboxFailure if the sandbox itself broke (never for anything a program does);
    the pool is closed then.
    """
    if not self._workers:
      raise verdict.SandboxFailure("this pool is closed")
    results: list[Result | None] = [None] * len(jobs)
    failures: list[BaseException] = []
    done_lock = threading.Lock()
    done = [0]

    def finish(index: int, result: Result) -> bool:
      """Records a verdict; False if the batch must stop."""
      results[index] = result
      with done_lock:
        done[0] += 1
        if progress is not None:
          progress(done[0], len(jobs))
        if on_result is not None:
          try:
            on_result(index, result)
          except BaseException as e:  # e.g. the output's disk is full: stop everyone
            failures.append(e)
            return False
      return True

    def screen(handle: _WorkerHandle, batches: queue.SimpleQueue) -> None:
      while not failures:
        try:
          indices = batches.get_nowait()
        except queue.Empty:
          return
        try:
          verdicts = handle.screen([jobs[i] for i in indices])
        except BaseException as e:  # Stop everyone; re-raised in the caller's thread.
          failures.append(e)
          return
        for index, result in zip(indices, verdicts):
          if result is not None and not finish(index, result):
            return

    def drive(handle: _WorkerHandle, todo: queue.SimpleQueue) -> None:
      # With big pipes, keep a second job queued in the worker's pipe while it runs one, so it
      # never idles waiting for this thread to wake up. A job is queued ahead only if it fits
      # in the job pipe at once, so this thread never blocks writing while the worker blocks
      # writing a reply (which carries the verdict pipe's bytes and the output, and may not
      # fit in the result pipe) that only this thread would read.
      depth = 2 if handle.big_pipes else 1
      in_flight: collections.deque = collections.deque()
      held = None  # (index, request): taken from `todo`, not sent yet.
      while True:
        # Queue ahead only while plenty is left, so a short batch spreads over all workers.
        while not failures and (not in_flight or (
            len(in_flight) < depth and (held or todo.qsize() > len(self._workers)))):
          if held is None:
            try:
              i = todo.get_nowait()
            except queue.Empty:
              break
            held = (i, handle.request(jobs[i]))
          if in_flight and len(held[1]) > handle.room() - _PIPE_SLACK:
            break  # Sent once the job in flight is done.
          try:
            handle.send(held[1])
          except BaseException as e:  # Stop everyone; re-raised in the caller's thread.
            failures.append(e)
            return
          in_flight.append(held[0])
          held = None
        if not in_flight:
          return
        try:
          index = in_flight.popleft()
          result = handle.receive(jobs[index])
        except BaseException as e:
          failures.append(e)
          return
        if not finish(index, result):
          return

    if self.config.screen_batch and jobs:
      # Even batches, at least one per worker, so the screen ends on every worker together.
      count = max(len(self._workers), -(-len(jobs) // self.config.screen_batch))
      size = -(-len(jobs) // count)
      self._on_every_worker(screen, _queue(range(start, min(start + size, len(jobs)))
                                           for start in range(0, len(jobs), size)))
      self.screened += sum(r is not None for r in results)
    if not failures:
      self._on_every_worker(drive, _queue(i for i, r in enumerate(results) if r is None))
    if failures:
      # Other workers may hold results nobody read; a later batch must not receive them.
      self.close()
      raise failures[0]
    return results  # type: ignore[return-value]

  def _on_every_worker(self, function, work: queue.SimpleQueue) -> None:
    """function(handle, work) on a thread per worker; returns when all are done."""
    threads = [threading.Thread(target=function, args=(w, work), daemon=True)
               for w in self._workers]
    for t in threads:
      t.start()
    for t in threads:
      t.join()

  def close(self) -> None:
    for w in self._workers:
      w.close()
    self._workers = []

  def __enter__(self) -> "WorkerPool":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def run_programs(jobs: Iterable[Job], config: SandboxConfig | None = None,
                 progress: ProgressCallback | None = None) -> list[Result]:
  """One-shot convenience: start a pool, run `jobs`, stop the pool."""
  jobs = list(jobs)
  with WorkerPool(config) as pool:
    return pool.run(jobs, progress)
