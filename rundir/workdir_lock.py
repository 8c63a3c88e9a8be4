"""One run per directory: an exclusive lock that dies with the process that holds it.

A run locks its directory with `fcntl.flock` on a lock file in it. The kernel releases the lock
when the holder exits for any reason (kill -9 and OOM kills included), so a dead run never
leaves its directory stuck, and a second run on the same directory is refused at once with the
holder's pid, host, start time and command, which the holder writes into the lock file.

Shared filesystems: Linux maps flock onto NFS byte-range locks (NFSv4, or v3 with lockd), so
runs on different hosts exclude each other there too; Lustre needs its `flock` mount option,
and a filesystem without lock support fails loudly (ENOLCK), never silently.

Within one process the lock is re-entrant (a study holds its folder while it evaluates
variants, and tests train twice in one process): a second acquire counts, and the last release
unlocks. This module imports nothing of the project and nothing outside the standard library.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import socket
import sys
import threading
from typing import Any

# errno values that mean "this directory cannot be written": the user has to pick another.
UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC,
                               errno.EDQUOT})

# How tensorstore (orbax's writer) words the same failures: ValueErrors carrying the text.
_STORAGE_TEXT = re.compile(r"No space left on device|Disk quota exceeded|Read-only file system")
_STORAGE_PATH = re.compile(r'(?:Failed writing: |local file |open file )"([^"]+)"')

_held_lock = threading.Lock()
_held: dict[str, list[Any]] = {}   # real path of the lock file -> [fd, count]


class WorkdirLocked(RuntimeError):
  """Another process holds the directory; the message names it."""


class WorkdirNotWritable(OSError):
  """The directory (or its lock file) cannot be created or written."""


def describe_holder(info: dict[str, Any] | None) -> str:
  if not info:
    return "holder unknown: it has not written its details yet"
  return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started "
          f"{info.get('started', '?')}: {info.get('command', '?')}")


def read_holder(path: str) -> dict[str, Any] | None:
  """What the holder wrote into the lock file (None if nothing readable)."""
  try:
    with open(path, encoding="utf-8") as f:
      info = json.loads(f.read() or "null")
  except (OSError, ValueError):
    return None
  return info if isinstance(info, dict) else None


class WorkdirLock:
  """`with WorkdirLock(lock_path, directory):` holds `directory` exclusively or raises."""

  def __init__(self, lock_path: str, directory: str):
    self.path = os.path.abspath(lock_path)
    self.directory = directory
    self._key: str | None = None

  def acquire(self) -> None:
    try:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
    except OSError as e:
      raise self._unwritable(e) from e
    key = os.path.realpath(self.path)
    with _held_lock:
      if key in _held:  # this process holds it already
        _held[key][1] += 1
        self._key = key
        return
      _held[key] = [self._lock_fd(), 1]
      self._key = key

  def _lock_fd(self) -> int:
    while True:
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
      except OSError as e:
        raise self._unwritable(e) from e
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        os.close(fd)
        raise WorkdirLocked(
            f"{self.directory} is in use by another run ({describe_holder(read_holder(self.path))})"
            "; wait for it to end or stop it (a stopped run releases the directory at once, "
            "kill -9 included)") from None
      except OSError as e:
        os.close(fd)
        raise self._unwritable(e) from e
      # The previous holder may have removed the file between our open and our lock: then we
      # hold a lock on a file nobody else can see; start again on the current one.
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv) or sys.executable}
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(info).encode(), 0)
    except OSError as e:
      os.close(fd)
      raise self._unwritable(e) from e
    return fd

  def _unwritable(self, error: OSError) -> OSError:
    if error.errno in UNWRITABLE_ERRNOS:
      return WorkdirNotWritable(error.errno, f"cannot write to {self.directory} "
                                f"({os.strerror(error.errno)}); choose a writable directory")
    return error

  def release(self) -> None:
    if self._key is None:
      return
    with _held_lock:
      entry = _held[self._key]
      entry[1] -= 1
      if entry[1] == 0:
        del _held[self._key]
        # Unlink before unlocking: whoever opened the old file re-checks its inode (above).
        try:
          os.unlink(self.path)
        except OSError:
          pass
        os.close(entry[0])
    self._key = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def storage_failure(error: BaseException) -> str | None:
  """One line for a full disk, a quota or a read-only directory found anywhere in an
  exception's chain (orbax reports them from its writer threads, wrapped); None otherwise."""
  seen: set[int] = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, WorkdirNotWritable):
      return error.strerror
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
      where = f" writing {error.filename}" if error.filename else ""
      return (f"{os.strerror(error.errno)}{where}; free some space or choose a writable "
              "directory, then run the same command again")
    match = _STORAGE_TEXT.search(str(error))
    if match:
      paths = _STORAGE_PATH.findall(str(error))  # the last is the most specific
      where = f" writing {paths[-1]}" if paths else ""
      return (f"{match.group(0)}{where}; free some space or choose a writable directory, "
              "then run the same command again")
    error = error.__cause__ or error.__context__
  return None
