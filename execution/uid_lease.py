"""Host-wide leases of sandbox uids (root mode): no two workers on a host run programs as one uid.

As root, a worker runs its programs as a uid no account uses. The kernel counts RLIMIT_NPROC
per uid across the whole host, and the weak mode's cleanup kills every process of the uid, so
a uid must belong to one worker at a time, also across pools in different processes: two
evals of a sweep on one machine, the processes of a multi-host eval started on one host, a
test suite next to an eval. Shared, one pool's program that holds many threads would use up
another pool's process limit, and a benign threaded program there would fail with "can't
start new thread": a false fail that changes pass@k.

A lease is an exclusive flock() on `<LEASE_DIR>/<uid>.lock`, held by the worker for its life.
The kernel drops it when the worker dies (kill -9 included), so leases never go stale and
need no cleanup. Worker i tries base + i first (alone on a host a pool gets exactly the uids
SandboxConfig documents), then the uids after it. The directory is root's and private, so
nobody else (a sandboxed program of the weak mode included) can take or hold a lease.
"""
import errno
import fcntl
import os
import stat

# How many uids after base + index a worker tries before giving up.
MAX_PROBES = 4096


class LeaseUnavailable(OSError):
  """No uid could be leased (the directory is unsafe or every uid tried is taken)."""


def lease_dir() -> str:
  """/run/lock/... (a tmpfs, emptied at boot) where it exists, else under the temp directory."""
  if os.path.isdir("/run/lock"):
    parent = "/run/lock"
  else:
    # Imported only here: tempfile brings shutil, bz2, lzma and more into every worker, whose
    # every page each fork must map again.
    import tempfile  # pylint: disable=import-outside-toplevel
    parent = tempfile.gettempdir()
  return os.path.join(parent, "execution-sandbox-uids")


def _private_dir(path: str) -> None:
  try:
    os.mkdir(path, 0o700)
  except FileExistsError:
    pass
  info = os.lstat(path)
  if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
    raise LeaseUnavailable(
        errno.EPERM, f"{path} must be a directory owned by uid {os.geteuid()} that nobody "
        "else can write (someone else created it?); remove it and start again")


def lease(base: int, index: int, directory: str | None = None) -> tuple[int, int]:
  """(uid, fd): the first free uid from base + index on, held until fd is closed."""
  directory = directory or lease_dir()
  _private_dir(directory)
  for uid in range(base + index, base + index + MAX_PROBES):
    fd = os.open(os.path.join(directory, f"{uid}.lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      continue
    return uid, fd
  raise LeaseUnavailable(
      errno.EBUSY, f"every sandbox uid from {base + index} to {base + index + MAX_PROBES - 1} "
      f"is leased by another worker ({directory}); stop some pools or set sandbox_uid_base")
