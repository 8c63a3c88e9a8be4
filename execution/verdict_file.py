"""The CLI's output file: held by one run, written as verdicts arrive, resumed after a kill.

* One writer: `PATH.lock` is flock-ed for the run (the kernel drops the lock when the process
  dies, kill -9 included), so a second run on the same output is refused at once, naming the
  first (pid, host, start time, command). rundir/workdir_lock.py does the same for run
  directories; execution/ imports nothing of the project, so it keeps its own few lines.
* Streaming: verdicts are appended as jobs finish, through a reorder buffer, so the file is
  always an input-order prefix of the complete output; a verdict waits only for the slower
  jobs before it.
* Resume: a restart reads the verdicts already there (a torn last line, cut by a kill, is
  dropped) and runs only the other ids.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
import threading
import time
from typing import Any

from execution.records import Result

_VERDICT_KEYS = ("id", "status", "passed", "tests_passed", "tests_total", "error",
                 "duration_s")
_FSYNC_EVERY_S = 1.0  # flushed per line (a kill loses nothing); synced to disk this often


class OutputBusy(RuntimeError):
  """Another run is writing the same output file."""


def lock(path: str) -> int:
  """Holds PATH exclusively (via PATH.lock) until `unlock`; raises OutputBusy if held."""
  lock_path = path + ".lock"
  while True:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      try:
        with open(lock_path, encoding="utf-8") as f:
          holder = f.read().strip() or "holder unknown"
      except OSError:
        holder = "holder unknown"
      raise OutputBusy(f"{path} is being written by another run ({holder}); wait for it to "
                       "end or stop it, or choose another --output") from None
    try:  # the previous holder may have removed the file between our open and our lock
      if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
        break
    except FileNotFoundError:
      pass
    os.close(fd)
  started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}: "
            f"{' '.join(sys.argv)}".encode(), 0)
  return fd


def unlock(path: str, fd: int) -> None:
  try:
    os.unlink(path + ".lock")  # before unlocking: a waiter re-checks the inode it locked
  except OSError:
    pass
  os.close(fd)


def result_from_json(record: Any) -> Result:
  if not isinstance(record, dict) or any(k not in record for k in _VERDICT_KEYS):
    raise ValueError("not a verdict line")
  return Result(record["id"], record["status"], record["passed"], record["tests_passed"],
                record["tests_total"], record["error"], record["duration_s"],
                record.get("output", ""))


def read_done(path: str) -> dict[str, dict[str, Any]]:
  """The verdicts already in PATH, by id, in file order; cuts off a torn last line."""
  if not os.path.exists(path):
    return {}
  with open(path, "rb") as f:
    data = f.read()
  end = data.rfind(b"\n") + 1
  if end < len(data):
    print(f"{path}: dropping a torn last line (the previous run was killed mid-write)",
          file=sys.stderr)
    with open(path, "r+b") as f:
      f.truncate(end)
  done: dict[str, dict[str, Any]] = {}
  for number, raw in enumerate(data[:end].splitlines(), 1):
    try:
      record = json.loads(raw)
      result_from_json(record)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
      raise ValueError(f"{path}:{number}: not a verdict line of this command; choose "
                       "another --output") from None
    done[record["id"]] = record
  return done


class OrderedWriter:
  """Appends verdicts in input order as they arrive in any order (a reorder buffer)."""

  def __init__(self, file, with_output: bool):
    self._file = file
    self._with_output = with_output
    self._waiting: dict[int, Result] = {}
    self._next = 0
    self._lock = threading.Lock()
    self._synced = time.monotonic()

  def add(self, index: int, result: Result) -> None:
    """Called by the pool per finished job (`index` into the batch it runs)."""
    with self._lock:
      self._waiting[index] = result
      lines = []
      while self._next in self._waiting:
        lines.append(json.dumps(self._waiting.pop(self._next).to_json(self._with_output)))
        self._next += 1
      if lines:
        self._file.write("".join(line + "\n" for line in lines))
        self._file.flush()
        if time.monotonic() - self._synced > _FSYNC_EVERY_S:
          os.fsync(self._file.fileno())
          self._synced = time.monotonic()

  def close(self) -> None:
    self._file.flush()
    os.fsync(self._file.fileno())
    self._file.close()
