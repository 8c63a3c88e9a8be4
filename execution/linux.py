"""Thin ctypes wrappers for the Linux system calls the sandbox needs.

Python 3.11 exposes neither unshare(2) nor mount(2), and no maintained PyPI binding covers the
newer mount API, so these go straight to libc. Every wrapper raises OSError with errno on
failure, so callers can report *why* an isolation layer is unavailable instead of silently
running without it.
"""
import ctypes
import errno
import os

# The interpreter is linked against libc, so its own symbol table has every call used here;
# this avoids ctypes.util.find_library, which would pull subprocess and tempfile into workers.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# Namespace flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags (linux/mount.h).
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2  # umount2(2)

# New mount API (Linux >= 5.2 / 5.12). These syscall numbers are shared by all architectures.
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_RECURSIVE = 0x8000
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

_SYSCALL_NUMBERS = {
    # (capset, ...) differ per architecture; only what is called through syscall() is listed.
    "x86_64": {"capset": 126, "pivot_root": 155},
    "aarch64": {"capset": 91, "pivot_root": 41},
}


def _check(result: int, what: str) -> int:
  if result < 0:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")
  return result


def machine() -> str:
  return os.uname().machine


# Called around every program's fork (a pid namespace each): declared argument types, and an
# error message built only on failure, keep the pages a call touches (each a copy-on-write
# fault in the worker) few.
_unshare = _libc.unshare
_unshare.argtypes = [ctypes.c_int]
_unshare.restype = ctypes.c_int
_setns = _libc.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_setns.restype = ctypes.c_int


def unshare(flags: int) -> None:
  if _unshare(flags) != 0:
    _check(-1, f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
  if _setns(fd, nstype) != 0:
    _check(-1, f"setns({nstype:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
  enc = lambda s: None if s is None else s.encode()
  _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
         f"mount({source!r}, {target!r}, {fstype!r})")


def umount(target: str, flags: int = 0) -> None:
  _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount2({target!r})")


def pivot_root(new_root: str, put_old: str) -> None:
  """pivot_root(2), which glibc does not wrap."""
  numbers = _SYSCALL_NUMBERS.get(machine())
  if numbers is None:
    raise OSError(errno.ENOSYS, f"pivot_root: unsupported architecture {machine()}")
  _check(_libc.syscall(ctypes.c_long(numbers["pivot_root"]), new_root.encode(),
                       put_old.encode()), f"pivot_root({new_root!r}, {put_old!r})")


def open_tree_clone(path: str) -> int:
  """Returns an fd holding a detached recursive copy of the mount tree at `path`."""
  return _check(
      _libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), path.encode(),
                    ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)),
      f"open_tree({path!r})")


def move_mount_fd(tree_fd: int, target: str) -> None:
  _check(
      _libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(tree_fd), b"",
                    ctypes.c_int(AT_FDCWD), target.encode(),
                    ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)),
      f"move_mount(-> {target!r})")


class _MountAttr(ctypes.Structure):
  _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
              ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def make_tree_read_only(path: str) -> None:
  """Marks every mount at and below `path` read-only and nosuid (in this mount namespace).

  Not nodev: /dev/null and /dev/urandom must stay usable; the other device nodes are root-only
  by permission, and the program never runs as root.
  """
  attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
  _check(
      _libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), path.encode(),
                    ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr),
                    ctypes.c_size_t(ctypes.sizeof(attr))),
      f"mount_setattr({path!r}, RDONLY|NOSUID)")


_prctl_ints = _libc.prctl
_prctl_ints.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_prctl_ints.restype = ctypes.c_int


def set_parent_death_signal(signal_number: int) -> None:
  """prctl(PR_SET_PDEATHSIG): the cheapest path, since each program pays for it."""
  if _prctl_ints(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0:
    _check(-1, "prctl(PR_SET_PDEATHSIG)")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
  return _check(_prctl_ints(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def prctl_pointer(option: int, arg2: int, pointer: ctypes.c_void_p) -> int:
  return _check(_prctl_ints(option, arg2, pointer.value, 0, 0), f"prctl({option}, ptr)")


class _CapHeader(ctypes.Structure):
  _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
  _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
              ("inheritable", ctypes.c_uint32)]


def drop_all_capabilities() -> None:
  """Clears the effective, permitted and inheritable capability sets of this thread."""
  numbers = _SYSCALL_NUMBERS.get(machine())
  if numbers is None:
    raise OSError(errno.ENOSYS, f"capset: unsupported architecture {machine()}")
  header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit data words.
  data = (_CapData * 2)()
  _check(_libc.syscall(ctypes.c_long(numbers["capset"]), ctypes.byref(header),
                       ctypes.byref(data)), "capset(0)")


def write_file(path: str, text: str) -> None:
  fd = os.open(path, os.O_WRONLY)
  try:
    os.write(fd, text.encode())
  finally:
    os.close(fd)


# Network interface flags (linux/sockios.h, net/if.h).
_AF_INET = 2
_SOCK_DGRAM = 2
_SOCK_CLOEXEC = 0o2000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class _IfReq(ctypes.Structure):
  """struct ifreq: the interface name, then a 24-byte union whose first member is the flags."""
  _fields_ = [("name", ctypes.c_char * 16), ("flags", ctypes.c_short),
              ("padding", ctypes.c_char * 22)]


def bring_up_loopback() -> None:
  """Sets `lo` of this net namespace up (needs CAP_NET_ADMIN over the namespace)."""
  fd = _check(_libc.socket(_AF_INET, _SOCK_DGRAM | _SOCK_CLOEXEC, 0), "socket(AF_INET)")
  try:
    request = _IfReq(b"lo", 0)
    _check(_libc.ioctl(fd, ctypes.c_ulong(_SIOCGIFFLAGS), ctypes.byref(request)),
           "ioctl(lo, SIOCGIFFLAGS)")
    request.flags |= _IFF_UP
    _check(_libc.ioctl(fd, ctypes.c_ulong(_SIOCSIFFLAGS), ctypes.byref(request)),
           "ioctl(lo, SIOCSIFFLAGS)")
  finally:
    os.close(fd)


# Larger than struct sigaction on every Linux libc ABI (152 bytes for glibc and musl on x86_64
# and aarch64); the contents are only ever copied back, never interpreted. All zeros is
# SIG_DFL with an empty mask and no flags.
_SIGACTION_BYTES = 256
_DEFAULT_ACTION = ctypes.create_string_buffer(_SIGACTION_BYTES)


def signal_action(number: int) -> ctypes.Array:
  """The kernel-level disposition of a signal, as opaque bytes for set_signal_action."""
  action = ctypes.create_string_buffer(_SIGACTION_BYTES)
  _check(_libc.sigaction(ctypes.c_int(number), None, action), f"sigaction({number})")
  return action


def set_signal_action(number: int, action: ctypes.Array | None = None) -> None:
  """Sets a disposition saved by signal_action, or SIG_DFL. Unlike signal.signal, this works
  from any thread, and leaves the signal module's own table of Python handlers alone."""
  _check(_libc.sigaction(ctypes.c_int(number), action if action is not None else _DEFAULT_ACTION,
                         None), f"sigaction({number})")
