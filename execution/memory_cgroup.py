"""A memory cgroup per worker (root only, best effort): caps what all of a worker's programs
can use together.

RLIMIT_AS caps each process, and RLIMIT_NPROC the number of processes, but their product (32
processes x 1 GiB) is more than a small machine has: a program that forks and fills memory in
every child could push the host into the OOM killer. A memory cgroup closes that gap. It is
created *under the caller's own cgroup* (so whatever limits the machine already imposes still
hold above it), the worker moves itself in, and programs inherit it. Without root, or without
a usable memory controller (cgroup v1 "memory" hierarchy or cgroup v2 with "memory" enabled
for children), the layer is simply absent and describe_layers() says so: the per-process limits
still hold.

The worker cannot remove its own cgroup; the pool removes the (then empty) directory after
the worker has exited, and a new worker removes those left behind by killed callers.

When the programs reach the limit, the kernel's OOM killer picks a victim inside the cgroup,
by resident memory. Memory that is in no process's RSS (a memfd written to but never mapped,
files on tmpfs) still counts against the limit, so the worker, the biggest process there, used
to be the one killed. Hence the worker makes itself unkillable by the OOM killer and each
program killable first (protect_from_oom_killer, prefer_for_oom_killer), and the cgroup's own
count of OOM kills (OomKillWatch) tells the worker that a program died for memory.
"""
import fcntl
import os

_V1_ROOT = "/sys/fs/cgroup/memory"
_V2_ROOT = "/sys/fs/cgroup"


def _own_cgroup(controller: str | None) -> str | None:
  """This process's cgroup path in the v1 `controller` hierarchy (or v2 when None)."""
  with open("/proc/self/cgroup") as f:
    for line in f:
      _, controllers, path = line.rstrip("\n").split(":", 2)
      if (controller is None and controllers == "") or controller in controllers.split(","):
        return path
  return None


def _write(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)


PREFIX = "execution-sandbox-"
_OOM_SCORE_ADJ = "/proc/self/oom_score_adj"
_HIGH_FD = 100
_oom_counter_fd = -1  # The joined cgroup's OOM-kill count (v1 memory.oom_control, v2 .events).


def _remove_stale_siblings(parent: str) -> None:
  """Removes empty cgroups of workers that are gone (their caller was killed before it could)."""
  for entry in os.listdir(parent):
    if not entry.startswith(PREFIX) or not entry[len(PREFIX):].isdigit():
      continue
    try:
      os.kill(int(entry[len(PREFIX):]), 0)
    except ProcessLookupError:
      remove(os.path.join(parent, entry))
    except OSError:
      pass


def join(limit_bytes: int) -> str | None:
  """Creates a cgroup for this process under its own, limits it, moves in; returns its path.

  Returns None when no memory controller can be used here (never raises for that).
  """
  name = f"{PREFIX}{os.getpid()}"
  try:
    v1_parent = _own_cgroup("memory")
    if v1_parent is not None and os.path.isfile(os.path.join(_V1_ROOT, "memory.limit_in_bytes")):
      parent = os.path.join(_V1_ROOT, v1_parent.lstrip("/"))
      _remove_stale_siblings(parent)
      path = os.path.join(parent, name)
      os.mkdir(path, 0o755)
      _write(os.path.join(path, "memory.limit_in_bytes"), str(limit_bytes))
      swap_limit = os.path.join(path, "memory.memsw.limit_in_bytes")
      if os.path.exists(swap_limit):  # Memory plus swap: no escaping the cap into swap.
        _write(swap_limit, str(limit_bytes))
    else:
      v2_parent = _own_cgroup(None)
      parent = os.path.join(_V2_ROOT, (v2_parent or "").lstrip("/"))
      with open(os.path.join(parent, "cgroup.subtree_control")) as f:
        if "memory" not in f.read().split():
          return None
      _remove_stale_siblings(parent)
      path = os.path.join(parent, name)
      os.mkdir(path, 0o755)
      _write(os.path.join(path, "memory.max"), str(limit_bytes))
      _write(os.path.join(path, "memory.swap.max"), "0")
    _write(os.path.join(path, "cgroup.procs"), str(os.getpid()))
  except OSError:
    return None
  global _oom_counter_fd
  for counter in ("memory.events", "memory.oom_control"):
    try:
      # Opened now, held for the worker's life: the mount view may hide /sys later.
      fd = os.open(os.path.join(path, counter), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
      continue
    _oom_counter_fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)
    os.close(fd)
    break
  return path


def _oom_counter_text() -> bytes | None:
  if _oom_counter_fd < 0:
    return None
  try:
    return os.pread(_oom_counter_fd, 4096, 0)
  except OSError:
    return None


def _parse_oom_kills(text: bytes | None) -> int | None:
  """The count of OOM kills in the counter file's text; None without a cgroup (or on kernels
  older than 4.13, which do not count them)."""
  for line in (text or b"").splitlines():
    key, _, value = line.partition(b" ")
    if key == b"oom_kill":
      return int(value)
  return None


class OomKillWatch:
  """Tells the worker, after each program, whether the OOM killer struck in its cgroup.

  Asked once per program, so it costs one pread and one comparison of bytes: the counter
  file is parsed only when its text changed (an OOM kill, or another of its fields)."""

  def __init__(self):
    self._text = _oom_counter_text()
    self._kills = _parse_oom_kills(self._text)

  def struck(self) -> bool:
    """Whether the count of OOM kills grew since the last call (or since construction)."""
    text = _oom_counter_text()
    if text == self._text:
      return False
    kills = _parse_oom_kills(text)
    struck = kills is not None and kills != self._kills
    self._text, self._kills = text, kills
    return struck


def protect_from_oom_killer() -> None:
  """In the worker, as root: the OOM killer never picks this process (its children start
  with the same setting, and prefer_for_oom_killer undoes it in each program)."""
  try:
    with open(_OOM_SCORE_ADJ, "w") as f:
      f.write("-1000")
  except OSError:
    pass  # Not root: it cannot lower its score; programs still raise theirs above it.


def prefer_for_oom_killer() -> None:
  """In a program's process, before it drops root: the OOM killer picks it (and whatever it
  starts) before anything else. Written while root, the value is also the floor the program
  cannot lower itself below again."""
  try:
    fd = os.open(_OOM_SCORE_ADJ, os.O_WRONLY)
    try:
      os.write(fd, b"1000")
    finally:
      os.close(fd)
  except OSError:
    if os.geteuid() == 0:
      raise  # Else the program would keep the worker's immunity: it must not run.
    # A user's program without a writable /proc keeps the score it had, like the worker's.


def remove(path: str) -> None:
  """Removes an empty cgroup directory (after its processes have exited)."""
  try:
    os.rmdir(path)
  except OSError:
    pass
