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
"""
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
    return path
  except OSError:
    return None


def remove(path: str) -> None:
  """Removes an empty cgroup directory (after its processes have exited)."""
  try:
    os.rmdir(path)
  except OSError:
    pass
