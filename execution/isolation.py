"""The isolation layers: set up once per warm worker, then once per program in its fresh fork.

Process tree (W = warm worker, trusted; P = the program, untrusted):

    caller --spawn--> W --(unshare(CLONE_NEWPID) + fork)--> P = PID 1 of a new pid namespace

A pid namespace per program is what makes cleanup airtight: when its PID 1 dies (normally, or
by the worker's SIGKILL at the deadline), the kernel SIGKILLs every process in it, setsid
daemons and double-forked orphans included, and only then reports PID 1 as exited. From
inside, nothing outside can be seen or signalled, so kill(-1) or killing the parent is
harmless. W gets one cheaply per program: unshare(CLONE_NEWPID) only redirects W's *next*
child, and right after the fork W points that back at its own namespace with setns(), so each
program costs one fork. PR_SET_PDEATHSIG chains caller -> W -> P, so nothing outlives a
killed caller (P re-arms it after its uid change, which clears it, and checks a lifeline pipe
for a worker that died in between).

Once per worker (the slow parts, inherited by every program):
* As root: unshare(mount|net|ipc). As an ordinary user: unshare(user|mount|net|ipc|pid),
  mapping only the user's own uid/gid (setgroups denied), then W forks once and continues as
  PID 1 of that pid namespace (setns() back to a pid namespace needs CAP_SYS_ADMIN over it,
  which a user has only for namespaces its own user namespace owns). The net namespace has
  only its own loopback interface, up (programs that serve and connect on 127.0.0.1 work, as
  they do anywhere), so programs reach nothing else, not even listeners on the host's
  127.0.0.1.
* A private mount view: propagation private; home directories (/root, /home, $HOME) hidden
  under empty tmpfs except the interpreter's prefixes, which are bind-mounted back at the same
  paths; /etc/passwd and /etc/group replaced by copies that also hold the sandbox user, whose
  home is the scratch directory (accounts.py); every mount then read-only and nosuid; a
  size-capped tmpfs on /tmp (the programs' scratch, cwd and HOME) and another on /dev/shm
  (POSIX semaphores and shared memory: multiprocessing), both wiped after every program; a
  fresh /proc (as root with hidepid=invisible, so a program sees only its own processes).
  Why the homes: as root programs run as an unprivileged uid, and this machine's interpreter
  lives under /root (mode 700); stdlib modules the worker did not pre-import must still be
  importable by that uid, without opening the rest of /root. It also keeps users' keys and
  tokens unreadable.
* As root, a memory cgroup under the caller's own (memory_cgroup.py): a cap on all of W's
  programs together, which RLIMIT_AS x RLIMIT_NPROC alone would allow to exceed the machine.
* no_new_privs and the seccomp filter of seccomp.py, installed on W itself; the clean
  environment, cwd and the rlimits that suit W too (file size, open files, no core dumps, no
  locked memory or message queues); the programs' stdio objects.

Once per program, in P before any untrusted byte runs: its own process group (a session with
SandboxConfig.own_session; see there why not by default); rlimits on address space, CPU time
and processes; privileges dropped (as root: setgroups([]) and setresgid/setresuid to a
per-worker uid no account uses and no other worker on the host holds (uid_lease.py), which
clears all capabilities; as a user: capset() to nothing); the parent-death signal. Everything
else is inherited, because here each page of the worker a program touches costs a
copy-on-write fault, and that is most of what a program costs.

The explicit weaker mode `rlimits` (for machines without namespaces) keeps the process,
session, rlimits, uid drop (as root), seccomp and a private scratch directory, and loses the
pid/net/mount/ipc namespaces: programs can see the network and the filesystem as their uid
can, and as a non-root user, processes that leave the program's process group can survive it.
As root, every process of the worker's sandbox uid is killed after each program, which still
catches them. Without a mount namespace there are no passwd/group entries for the sandbox uid
(as root, user lookups raise KeyError) and /dev/shm is the host's.
"""
import os
import resource
import signal
import sys

from execution import accounts
from execution import linux
from execution import memory_cgroup
from execution import scratch_wipe
from execution import seccomp
from execution import uid_lease
from execution.config import NAMESPACES, SandboxConfig

_MIB = 1024 * 1024
# Where the private scratch tmpfs is mounted: /tmp, unless the interpreter or its packages
# live under /tmp (say, a CI checkout with its venv), which the mount would hide; then the
# next candidate, and the host's /tmp stays visible, read-only. HOME and TMPDIR point at it.
SCRATCH_CANDIDATES = ("/tmp", "/dev/shm", "/var/tmp")
# Where multiprocessing's semaphores and shared_memory live (sem_open, shm_open).
SHARED_MEMORY_DIR = "/dev/shm"
ACCOUNT_FILES = ("/etc/passwd", "/etc/group")
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class IsolationUnavailable(RuntimeError):
  """The requested isolation cannot be provided here; the message says which layer and why."""


def is_root() -> bool:
  return os.geteuid() == 0


def interpreter_paths() -> list[str]:
  """Outermost directories the child interpreter must read (stdlib, extensions, site)."""
  paths = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                         sys.base_exec_prefix)}
  paths |= {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
  outermost: list[str] = []
  for p in sorted(paths, key=len):
    if not any(p == q or p.startswith(q + os.sep) for q in outermost):
      outermost.append(p)
  return outermost


def _untraversable_ancestors(keep: list[str]) -> list[str]:
  """As root, the outermost directory above each interpreter path that others cannot enter
  (a checkout under `mktemp -d`, mode 700): the sandbox uid could not reach the interpreter
  through it, so it is hidden like a home and the interpreter path mounted back."""
  if not is_root():
    return []  # Programs keep the caller's uid, which can enter them.
  found = []
  for path in keep:
    parts = path.strip(os.sep).split(os.sep)
    for depth in range(1, len(parts)):
      d = os.sep + os.path.join(*parts[:depth])
      if not os.stat(d).st_mode & 0o001:
        found.append(d)
        break
  return found


def _hidden_dirs(keep: list[str]) -> list[str]:
  hidden: list[str] = []
  for d in ("/root", "/home", os.path.expanduser("~"), *_untraversable_ancestors(keep)):
    d = os.path.realpath(d)
    if d == "/" or not os.path.isdir(d):
      continue
    if any(d == h or d.startswith(h + os.sep) for h in hidden):
      continue
    if any(d == k or d.startswith(k + os.sep) for k in keep):
      continue  # Hiding it would hide the interpreter itself.
    hidden.append(d)
  return hidden


class WorkerIsolation:
  """Per-worker isolation state; `fork_program` starts a program in its own pid namespace."""

  def __init__(self, config: SandboxConfig, index: int):
    self.config = config
    self.index = index
    self.namespaces = config.isolation == NAMESPACES
    # As root: a uid no account uses, leased host-wide in prepare() (uid_lease.py).
    self.uid = config.sandbox_uid_base + index if is_root() else os.getuid()
    self.gid = config.sandbox_uid_base + index if is_root() else os.getgid()
    self._uid_lease_fd = -1  # Held for the worker's life; the kernel drops it when W dies.
    self.fresh_proc = False
    self.loopback = False
    self.shared_memory: str | None = None  # Private tmpfs on SHARED_MEMORY_DIR, if mounted.
    self.user_name: str | None = None      # The sandbox user's passwd entry, if provided.
    self._empty_sizes: dict[str, int] = {}  # Wiped directories whose size tells if empty.
    self._own_pid_ns = -1
    self._filter: seccomp.Filter | None = None
    self._program_rlimits: list = []
    self.scratch = SCRATCH_CANDIDATES[0]
    self.cgroup: str | None = None

  # --- once per worker -------------------------------------------------------------------

  def prepare(self) -> None:
    """Enters the worker's namespaces and builds its view. Raises IsolationUnavailable.

    As a non-root user this forks: the calling process only waits for the worker to end and
    exits with its status, and the worker continues in the child.
    """
    if not seccomp.is_supported():
      raise IsolationUnavailable(f"no seccomp filter for architecture {linux.machine()}")
    self._filter = seccomp.Filter()
    if is_root():  # First: the scratch directory, passwd entry and cleanup use the uid.
      try:
        uid, self._uid_lease_fd = uid_lease.lease(self.config.sandbox_uid_base, self.index)
      except OSError as e:
        raise IsolationUnavailable(f"cannot lease a sandbox uid: {e}") from e
      self.uid = self.gid = uid
    if is_root() and self.config.worker_memory_mb:
      # Before the mount view: /sys becomes read-only there.
      self.cgroup = memory_cgroup.join(self.config.worker_memory_mb * _MIB)
    if not self.namespaces:
      import tempfile  # pylint: disable=import-outside-toplevel
      self.scratch = tempfile.mkdtemp(prefix=f"sandbox-{self.index}-")
      os.chmod(self.scratch, 0o700)
      if is_root():
        os.chown(self.scratch, self.uid, self.gid)
      try:
        self._filter.install()
      except OSError as e:
        raise IsolationUnavailable(f"cannot install the seccomp filter: {e}") from e
      return
    step = "namespaces"
    try:
      if is_root():
        linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWNET | linux.CLONE_NEWIPC)
      else:
        step = "user namespace"
        uid, gid = os.getuid(), os.getgid()
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS | linux.CLONE_NEWNET
                      | linux.CLONE_NEWIPC | linux.CLONE_NEWPID)
        step = "uid/gid maps"
        linux.write_file("/proc/self/setgroups", "deny")
        linux.write_file("/proc/self/uid_map", f"{uid} {uid} 1")
        linux.write_file("/proc/self/gid_map", f"{gid} {gid} 1")
        step = "pid namespace"
        _continue_as_pid_one()
      step = "loopback interface"
      linux.bring_up_loopback()
      self.loopback = True
      step = "read-only mount view"
      self._build_mount_view()
      step = "pid namespace handle"
      self._own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
      step = "pid namespace per program"
      pid = self.fork_program()  # Probe the per-program pid namespace once.
      if pid == 0:
        os._exit(0 if os.getpid() == 1 else 3)
      _, status = os.waitpid(pid, 0)
      if status != 0:
        raise OSError(f"probe program was not PID 1 of a new pid namespace ({status})")
      step = "scratch directories"
      for directory in (self.scratch, self.shared_memory):
        if directory is not None:
          self._probe_empty_size(directory)
      step = "seccomp filter"
      self._filter.install()
    except OSError as e:
      hint = ""
      if not is_root() and step in ("user namespace", "uid/gid maps"):
        hint = (" (unprivileged user namespaces may be disabled: check "
                "/proc/sys/user/max_user_namespaces, kernel.unprivileged_userns_clone and "
                "kernel.apparmor_restrict_unprivileged_userns; or ask for isolation='rlimits')")
      raise IsolationUnavailable(f"cannot set up {step}: {e}{hint}") from e

  def inherit_into_programs(self) -> None:
    """Gives the worker itself what programs should start with, so forks inherit it for free:
    the clean environment, the scratch directory as cwd, and the rlimits that suit both.
    Call after the worker has opened every descriptor it needs (RLIMIT_NOFILE)."""
    os.environ.clear()
    os.environ.update(SANDBOX_ENV)
    os.environ["HOME"] = os.environ["TMPDIR"] = self.scratch
    os.environ["PYTHONHASHSEED"] = str(self.config.python_hash_seed)
    os.chdir(self.scratch)
    shared, self._program_rlimits = self._rlimits()
    for which, soft, hard in shared:
      resource.setrlimit(which, (soft, hard))

  def _build_mount_view(self) -> None:
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    keep = interpreter_paths()
    for candidate in SCRATCH_CANDIDATES:
      if os.path.isdir(candidate) and not any(
          p == candidate or p.startswith(candidate + os.sep) for p in keep):
        self.scratch = candidate
        break
    else:
      raise OSError(f"no scratch mount point among {SCRATCH_CANDIDATES} that would not hide "
                    f"the interpreter ({keep})")
    hidden = _hidden_dirs(keep)
    exposed = [p for p in keep if any(p.startswith(h + os.sep) for h in hidden)]
    trees = [(p, linux.open_tree_clone(p)) for p in exposed]
    for h in hidden:
      linux.mount("tmpfs", h, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=755,size=1m")
    for path, tree_fd in trees:
      os.makedirs(path, mode=0o755, exist_ok=True)
      linux.move_mount_fd(tree_fd, path)
      os.close(tree_fd)
    self._mount_account_files()
    linux.make_tree_read_only("/")
    self._mount_scratch()
    if self.scratch != SHARED_MEMORY_DIR and os.path.isdir(SHARED_MEMORY_DIR) and not any(
        p == SHARED_MEMORY_DIR or p.startswith(SHARED_MEMORY_DIR + os.sep) for p in keep):
      linux.mount("tmpfs", SHARED_MEMORY_DIR, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                  f"mode=1777,size={self.config.scratch_mb}m,nr_inodes=1024")
      self.shared_memory = SHARED_MEMORY_DIR
    proc_flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    try:
      linux.mount("proc", "/proc", "proc", proc_flags, "hidepid=invisible" if is_root() else None)
      self.fresh_proc = True
    except OSError:
      # Container runtimes that mask parts of /proc forbid a fresh proc mount in a user
      # namespace. The old, read-only /proc stays; the pid namespace still hides every
      # process from signals, and describe_layers() says the layer is missing.
      pass

  def _mount_account_files(self) -> None:
    """Bind-mounts generated /etc/passwd and /etc/group over the host's (before the view is
    made read-only, which then covers them). They are staged on a throwaway tmpfs on the
    scratch mount point, detached again at once: the bind mounts keep the files alive, and
    the scratch tmpfs mounted there next starts empty."""
    texts = {}
    for path in ACCOUNT_FILES:
      try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
          texts[path] = f.read()
      except FileNotFoundError:
        pass  # Nothing to mount over; lookups then fail as they would outside.
    if "/etc/passwd" not in texts:
      return
    texts["/etc/passwd"], self.user_name = accounts.passwd_with_user(
        texts["/etc/passwd"], self.uid, self.gid, self.scratch)
    if "/etc/group" in texts:
      texts["/etc/group"] = accounts.group_with_group(texts["/etc/group"], self.gid,
                                                      self.user_name)
    linux.mount("tmpfs", self.scratch, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV
                | linux.MS_NOEXEC, "mode=755,size=1m")
    try:
      for path, text in texts.items():
        staged = os.path.join(self.scratch, os.path.basename(path))
        with open(staged, "w", encoding="utf-8", errors="surrogateescape") as f:
          f.write(text)
        os.chmod(staged, 0o644)
        linux.mount(staged, path, None, linux.MS_BIND)
    finally:
      linux.umount(self.scratch, linux.MNT_DETACH)

  def _mount_scratch(self) -> None:
    linux.mount("tmpfs", self.scratch, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                f"mode=1777,size={self.config.scratch_mb}m,nr_inodes=8192")

  # --- once per program ------------------------------------------------------------------

  def fork_program(self) -> int:
    """fork(), with the child as PID 1 of a fresh pid namespace when namespaces are on."""
    if not self.namespaces:
      return os.fork()
    # pid_ns_for_children is back at our own namespace since the last fork (see below).
    linux.unshare(linux.CLONE_NEWPID)
    try:
      pid = os.fork()
    except OSError:
      linux.setns(self._own_pid_ns, linux.CLONE_NEWPID)
      raise
    if pid:
      # Point pid_ns_for_children back at our own namespace, so the one just created dies
      # with its PID 1 and nothing else the worker forks lands in it.
      linux.setns(self._own_pid_ns, linux.CLONE_NEWPID)
    return pid

  def enter_program_sandbox(self) -> None:
    """In P, first thing: the isolation that cannot be inherited from the worker.

    Kept short on purpose: each page of the worker this touches costs a copy-on-write fault,
    which is most of what a program costs. Whatever can be inherited instead (environment,
    cwd, stdio objects, the rlimits that also suit the worker) is set once in the worker.
    """
    if self.namespaces and not self.config.own_session:
      # PID 1 of its own pid namespace already cannot reach anything outside; a new process
      # group keeps kill(0) and killpg() inside it. setsid() would add nothing but cost more
      # than the rest of this function: the kernel creates a scheduler autogroup per session.
      os.setpgid(0, 0)
    else:
      os.setsid()
    for which, soft, hard in self._program_rlimits:
      resource.setrlimit(which, (soft, hard))
    if is_root():
      os.setgroups([])
      os.setresgid(self.gid, self.gid, self.gid)
      os.setresuid(self.uid, self.uid, self.uid)
    elif self.namespaces:
      linux.drop_all_capabilities()
    # Armed after the uid change, which clears it (the worker checks the window before, see
    # Worker._program). Without it a program could outlive a killed worker.
    linux.set_parent_death_signal(signal.SIGKILL)

  def _rlimits(self) -> tuple[list, list]:
    """(limits that also suit the worker and are set there once, per-program limits)."""
    config = self.config
    cpu_s = int(config.timeout_s) + 2
    shared = [
        (resource.RLIMIT_FSIZE, config.max_file_mb * _MIB, config.max_file_mb * _MIB),
        (resource.RLIMIT_NOFILE, config.max_open_files, config.max_open_files),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_MEMLOCK, 0, 0),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
    ]
    per_program = [
        (resource.RLIMIT_AS, config.memory_mb * _MIB, config.memory_mb * _MIB),
        # A backstop only: the wall-clock deadline is enforced from outside with SIGKILL.
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_NPROC, config.max_processes, config.max_processes),
    ]
    return shared, per_program

  def after_program(self, program_pid: int) -> None:
    """In W, after P was reaped: kill stragglers (weak mode) and wipe the scratch directory."""
    if not self.namespaces:
      if is_root():
        _kill_all_processes_of(self.uid)
      else:
        try:
          os.killpg(program_pid, signal.SIGKILL)
        except OSError:
          pass
    self._wipe_scratch()

  def _wipe_scratch(self) -> None:
    # Failure raises: the pool then stops, rather than let one program's files reach the next.
    for directory in (self.scratch, self.shared_memory):
      if directory is None:
        continue
      if os.stat(directory).st_size == self._empty_sizes.get(directory):
        continue  # Nothing in it: one stat() instead of listing it.
      scratch_wipe.wipe(directory)  # Any depth, in a few descriptors (scratch_wipe.py).

  def _probe_empty_size(self, directory: str) -> None:
    """Records the size of `directory` while empty if, as on tmpfs, that size changes with
    every entry (tmpfs counts each one in the directory's size), so that the wipe after a
    program can tell an empty directory from one stat(). Checked here rather than assumed."""
    empty = os.stat(directory).st_size
    probe = os.path.join(directory, ".empty-size-probe")
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    grew = os.stat(directory).st_size != empty
    os.unlink(probe)
    if grew and os.stat(directory).st_size == empty:
      self._empty_sizes[directory] = empty

  def close(self) -> None:
    """In W, on a clean exit: the weak mode's scratch directory is a real one; remove it."""
    if not self.namespaces:
      self._wipe_scratch()
      os.chdir("/")
      os.rmdir(self.scratch)

  def describe_layers(self) -> list[str]:
    session = ("own session" if self.config.own_session or not self.namespaces
               else "own process group")
    layers = ["own process per program, forked from a warm worker", session,
              "wall-clock SIGKILL from outside",
              "rlimits: AS, CPU, FSIZE, NOFILE, NPROC, CORE=0, MEMLOCK=0, MSGQUEUE=0",
              "clean environment, stdin /dev/null, capped output",
              f"no_new_privs + seccomp deny-list filter ({linux.machine()}), set in the worker",
              "scratch directory wiped after every program"]
    if self.namespaces:
      layers += ["pid namespace per program (the kernel kills every descendant)",
                 "ipc namespace (SysV object creation denied)",
                 "net namespace with only its own loopback" if self.loopback
                 else "net namespace without interfaces",
                 "read-only filesystem, homes hidden, private tmpfs " + " and ".join(
                     d for d in (self.scratch, self.shared_memory) if d),
                 "parent-death signals: nothing outlives the caller"]
      layers.append("fresh /proc" + (" (hidepid=invisible)" if is_root() else "")
                    if self.fresh_proc else "host /proc (read-only; fresh mount refused)")
      if self.user_name:
        layers.append(f"passwd/group entries for user {self.user_name!r}, home {self.scratch}")
      if not is_root():
        layers.append("user namespace mapping only the caller's uid; capabilities dropped")
    if is_root():
      layers.append(f"unprivileged uid/gid {self.uid} (leased: no other worker on this host "
                    "uses it), no supplementary groups")
    if self.cgroup:
      layers.append(f"memory cgroup: {self.config.worker_memory_mb} MiB for all of a "
                    "worker's processes")
    else:
      layers.append("no memory cgroup (needs root and a memory controller); per-process "
                    "limits only")
    return layers


def _continue_as_pid_one() -> None:
  """Forks; the parent waits for the child and exits with its status; the child returns."""
  pid = os.fork()
  if pid == 0:
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    return
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  _, status = os.waitpid(pid, 0)
  os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _kill_all_processes_of(uid: int) -> None:
  """Root, weak mode: SIGKILL every process running as `uid` (kill(-1) from that uid)."""
  for _ in range(100):
    helper = os.fork()
    if helper == 0:
      try:
        os.setresuid(uid, uid, uid)
        os.kill(-1, signal.SIGKILL)  # Everything this uid may signal, except the helper.
        os._exit(0)
      except ProcessLookupError:
        os._exit(1)  # Nothing left to kill.
      except BaseException:
        os._exit(2)
    _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
      return
