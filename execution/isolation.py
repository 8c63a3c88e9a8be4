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
  127.0.0.1 or its abstract unix sockets (those are per net namespace). After a program that
  left any socket in it (a port in TIME_WAIT would fail the next program's plain bind()), the
  worker moves to a fresh one; the check reads two counters, the new namespace costs
  milliseconds, so only programs that used the network pay for it.
* A root built from nothing (_build_mount_view): an empty tmpfs holding only the system
  directories (SYSTEM_PATHS: /usr, /etc, the /bin and /lib links), the interpreter's paths
  (its prefixes and sys.path, never the checkout this package was imported from), /dev/null
  and a few other devices, a fresh /proc (as root with hidepid=invisible, so a program sees
  only its own processes) and /etc/passwd and /etc/group replaced by copies that also hold
  the sandbox user, whose home is the scratch directory (accounts.py); all of it read-only
  and nosuid; the worker pivots into it. Then a size-capped tmpfs on /tmp (the programs'
  scratch, cwd and HOME) and another on /dev/shm (POSIX semaphores and shared memory:
  multiprocessing), both wiped after every program. So nothing else of the host can be
  read or connected to: not /run or /var/run and their unix sockets, not the host's /tmp
  and other jobs' files there, not the homes (users' keys and tokens), not the checkout,
  its runs/ or the data beside it. Directories above an interpreter path are fresh ones
  (mode 755): an interpreter under /root (mode 700) or a checkout under `mktemp -d` stays
  usable by the unprivileged uid. An interpreter under /tmp (a CI checkout with its venv)
  is mounted back inside the private /tmp, on a small read-only tmpfs per top-level entry,
  so /tmp is private and writable wherever the project is installed.
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
import importlib
import os
import re
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
# The programs' private scratch tmpfs (their cwd, HOME and TMPDIR), wherever the project lives.
SCRATCH = "/tmp"
# Where multiprocessing's semaphores and shared_memory live (sem_open, shm_open).
SHARED_MEMORY_DIR = "/dev/shm"
# Where interpreter paths that lie under /tmp or /dev/shm on the host (a CI checkout with its
# venv under `mktemp -d`) appear in the programs' root, so that their /tmp stays empty and
# theirs alone wherever the project is installed (_relocate_interpreter).
RELOCATED = "/interpreter"
# The host's directories a program's root holds besides the interpreter's own: programs,
# shared libraries and system configuration (ld.so.cache, zoneinfo links, certificates).
# Whichever of them is a symlink on the host (merged /usr) is recreated as one.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Read by libc for the number of CPUs (os.cpu_count); left out where it cannot be bound.
OPTIONAL_PATHS = ("/sys/devices/system/cpu",)
DEVICES = ("null", "zero", "full", "random", "urandom")
DEVICE_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                "stderr": "/proc/self/fd/2"}
ACCOUNT_FILES = ("/etc/passwd", "/etc/group")
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
# The directory that holds this package: the checkout when run from one (pool.py puts it on
# the worker's PYTHONPATH). The worker has imported what it needs from it before its view is
# built, and programs must not read it (runs/, the datasets' reference solutions beside it).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Per-namespace socket counters ("inuse" and TIME_WAIT "tw" of TCP, UDP and raw sockets).
SOCKET_COUNTERS = ("/proc/net/sockstat", "/proc/net/sockstat6")
# Only these are per namespace ("orphan", "alloc" and "mem" count the whole host).
_SOCKET_COUNTS = re.compile(rb" (?:inuse|tw) (\d+)")


class IsolationUnavailable(RuntimeError):
  """The requested isolation cannot be provided here; the message says which layer and why."""


def is_root() -> bool:
  return os.geteuid() == 0


def interpreter_paths() -> list[str]:
  """Outermost directories the child interpreter must read (stdlib, extensions, site), without
  the directory this package was imported from (PACKAGE_PARENT) unless a prefix holds it."""
  paths = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                         sys.base_exec_prefix)}
  package_parent = os.path.realpath(PACKAGE_PARENT)
  paths |= {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)} - {package_parent}
  return _outermost(paths)


def _relocate_interpreter(paths: list[str]) -> None:
  """The interpreter's own view of itself after its paths under /tmp or /dev/shm moved to
  RELOCATED + path: sys.path, the prefixes and the executable (which programs run again,
  e.g. multiprocessing's spawn) name the new place; modules imported from there are found
  again through a fresh path cache."""
  if not paths:
    return
  def moved(value: str) -> str:
    for path in paths:
      if _within(os.path.realpath(value), path):
        return RELOCATED + os.path.realpath(value)
      if _within(value, path):
        return RELOCATED + value
    return value
  sys.path[:] = [moved(p) if p else p for p in sys.path]
  for name in ("prefix", "exec_prefix", "base_prefix", "base_exec_prefix"):
    setattr(sys, name, moved(getattr(sys, name)))
  sys.executable = moved(sys.executable)
  sys._base_executable = moved(sys._base_executable)  # pylint: disable=protected-access
  spawn = sys.modules.get("multiprocessing.spawn")
  if spawn is not None:  # It took the executable's path when imported.
    spawn.set_executable(sys.executable)
  sys.path_importer_cache.clear()
  importlib.invalidate_caches()


def _outermost(paths) -> list[str]:
  outermost: list[str] = []
  for p in sorted(paths, key=len):
    if not any(_within(p, q) for q in outermost):
      outermost.append(p)
  return outermost


def _within(path: str, directory: str) -> bool:
  return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


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
    self.scratch = SCRATCH
    self._socket_counters: list[int] = []  # Open SOCKET_COUNTERS of the current net namespace.
    self._sockets_at_start: tuple = ()
    self._socket_text_unused = b""  # Their last text whose counts were the ones at start.
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
      step = "socket counters"
      self._watch_sockets()
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
    """Builds the programs' root from nothing and pivots into it: an empty tmpfs holding only
    the system directories (SYSTEM_PATHS), the interpreter's paths (interpreter_paths), a few
    device nodes, a fresh /proc and generated account files, all read-only; then private
    tmpfs mounts on /tmp and /dev/shm. Nothing else of the host is reachable: not its /run
    or /tmp (and the unix sockets there), not the homes, not the checkout or its runs and
    data. Paths above an interpreter path are fresh directories (mode 755), so a checkout
    under `mktemp -d` (mode 700) is no obstacle, and an interpreter under /tmp or /dev/shm
    appears under RELOCATED instead (_relocate_interpreter): the private /tmp holds nothing of
    the host's, wherever the project is installed."""
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    keep = interpreter_paths()
    for path in keep:
      if path in ("/", SCRATCH, SHARED_MEMORY_DIR) or _within(path, "/proc") or _within(
          path, "/dev") and not _within(path, SHARED_MEMORY_DIR):
        raise OSError(f"interpreter path {path} cannot be mounted back in the sandbox's view")
    links = {p: os.readlink(p) for p in SYSTEM_PATHS if os.path.islink(p)}
    binds = _outermost([p for p in SYSTEM_PATHS if p not in links and os.path.isdir(p)] + keep)
    relocated = [p for p in binds if _within(p, SCRATCH) or _within(p, SHARED_MEMORY_DIR)]
    # Every tree is cloned first, while the host's view is whole: the new root is then
    # assembled on a tmpfs mounted over the host's /tmp.
    trees = [(p, linux.open_tree_clone(p)) for p in binds]
    devices = [(f"/dev/{name}", linux.open_tree_clone(f"/dev/{name}")) for name in DEVICES
               if os.path.exists(f"/dev/{name}")]
    optional = []
    for path in OPTIONAL_PATHS:
      try:
        optional.append((path, linux.open_tree_clone(path)))
      except OSError:
        pass
    try:
      host_proc = linux.open_tree_clone("/proc")
    except OSError:
      host_proc = -1
    accounts_text = self._account_texts()
    root = SCRATCH
    linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=755,size=1m")
    for path, target in links.items():
      os.symlink(target, root + path)
    for path, tree_fd in trees + devices + optional:
      target = root + (RELOCATED + path if path in relocated else path)
      _mount_point(target, directory=not path.startswith("/dev/"))
      linux.move_mount_fd(tree_fd, target)
      os.close(tree_fd)
    for path in (SCRATCH, SHARED_MEMORY_DIR, "/proc"):
      os.makedirs(root + path, mode=0o755, exist_ok=True)
    for name, target in DEVICE_LINKS.items():
      os.symlink(target, f"{root}/dev/{name}")
    self._mount_account_files(root, accounts_text)
    linux.make_tree_read_only(root)
    # Before the pivot: in a user namespace the kernel allows a fresh proc only while a
    # fully visible one is still in this mount namespace.
    proc_flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    try:
      linux.mount("proc", root + "/proc", "proc", proc_flags,
                  "hidepid=invisible" if is_root() else None)
      self.fresh_proc = True
    except OSError:
      # Container runtimes that mask parts of /proc forbid a fresh proc mount in a user
      # namespace. The host's stays, read-only; the pid namespace still hides every
      # process from signals, and describe_layers() says the layer is missing.
      if host_proc < 0:
        raise
      linux.move_mount_fd(host_proc, root + "/proc")
      linux.make_tree_read_only(root + "/proc")
    if host_proc >= 0:
      os.close(host_proc)
    os.chdir(root)
    linux.pivot_root(".", ".")  # The old root now lies over the new one at "/": detach it.
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
    self._mount_scratch()
    linux.mount("tmpfs", SHARED_MEMORY_DIR, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                f"mode=1777,size={self.config.scratch_mb}m,nr_inodes=1024")
    self.shared_memory = SHARED_MEMORY_DIR
    _relocate_interpreter(relocated)

  def _mount_scratch(self) -> None:
    linux.mount("tmpfs", self.scratch, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                f"mode=1777,size={self.config.scratch_mb}m,nr_inodes=8192")

  @staticmethod
  def _account_texts() -> dict[str, str]:
    texts = {}
    for path in ACCOUNT_FILES:
      try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
          texts[path] = f.read()
      except FileNotFoundError:
        pass  # Nothing to mount over; lookups then fail as they would outside.
    return texts

  def _mount_account_files(self, root: str, texts: dict[str, str]) -> None:
    """Bind-mounts generated /etc/passwd and /etc/group over the host's in the new root
    (before it is made read-only, which then covers them). They are staged on a throwaway
    tmpfs, detached again at once: the bind mounts keep the files alive."""
    if "/etc/passwd" not in texts or not os.path.exists(root + "/etc/passwd"):
      return
    texts = dict(texts)
    texts["/etc/passwd"], self.user_name = accounts.passwd_with_user(
        texts["/etc/passwd"], self.uid, self.gid, self.scratch)
    if "/etc/group" in texts:
      texts["/etc/group"] = accounts.group_with_group(texts["/etc/group"], self.gid,
                                                      self.user_name)
    staging = root + SCRATCH
    linux.mount("tmpfs", staging, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV
                | linux.MS_NOEXEC, "mode=755,size=1m")
    try:
      for path, text in texts.items():
        staged = os.path.join(staging, os.path.basename(path))
        with open(staged, "w", encoding="utf-8", errors="surrogateescape") as f:
          f.write(text)
        os.chmod(staged, 0o644)
        linux.mount(staged, root + path, None, linux.MS_BIND)
    finally:
      linux.umount(staging, linux.MNT_DETACH)

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
    else:
      self._renew_network_if_used()
    self._wipe_scratch()

  def _watch_sockets(self) -> None:
    """Opens this net namespace's socket counters and notes what they read while unused."""
    for fd in self._socket_counters:
      os.close(fd)
    self._socket_counters = []
    for path in SOCKET_COUNTERS:
      try:
        self._socket_counters.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
      except FileNotFoundError:
        pass  # No IPv6 in this kernel.
    self._socket_text_unused = self._socket_counter_text()
    self._sockets_at_start = self._sockets_in_use(self._socket_text_unused)

  def _socket_counter_text(self) -> bytes:
    """The counters' text (the files stay open and are read again from offset 0)."""
    return b"".join([os.pread(fd, 4096, 0) for fd in self._socket_counters])

  @staticmethod
  def _sockets_in_use(text: bytes) -> tuple:
    """The namespace's "inuse" and "tw" (TIME_WAIT) counts of every protocol in the text."""
    return tuple(_SOCKET_COUNTS.findall(text))

  def _renew_network_if_used(self) -> None:
    """Moves the worker, and so the next programs, to a fresh net namespace (its own new
    loopback) if the last program left sockets in this one: a port in TIME_WAIT would make
    the next program's plain bind() fail. Every process of the program is gone by now, so
    what is left is what the kernel still holds. Creating a namespace costs milliseconds,
    so only programs that used the network pay for it; the others cost a read of the
    counters, parsed only when their text changed (host-wide fields in it change too)."""
    if not self._socket_counters:
      return
    text = self._socket_counter_text()
    if text == self._socket_text_unused:
      return
    if self._sockets_in_use(text) == self._sockets_at_start:
      self._socket_text_unused = text
      return
    linux.unshare(linux.CLONE_NEWNET)
    linux.bring_up_loopback()
    self._watch_sockets()

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
                 "net namespace with only its own loopback, renewed after a program that "
                 "leaves sockets in it" if self.loopback
                 else "net namespace without interfaces",
                 "read-only filesystem of system directories and the interpreter's paths only "
                 "(no host /run, /tmp, homes or checkout), private tmpfs " + " and ".join(
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


def _mount_point(path: str, directory: bool) -> None:
  """Creates an empty directory or file (for a device node) to mount on, and its parents."""
  os.makedirs(path if directory else os.path.dirname(path), mode=0o755, exist_ok=True)
  if not directory:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


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
