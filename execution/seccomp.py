"""A hand-assembled seccomp-BPF filter that denies the system calls sandboxed programs never need.

No maintained Python binding of libseccomp ships on PyPI for Python 3.11, and depending on the
libseccomp shared library would add a system package to every machine, so the filter is a few
dozen classic-BPF instructions built here. It is a deny list on top of the namespace and
privilege layers (a second wall, not the only one): it blocks kernel-attack surface and escape
routes (ptrace, mount and the new mount API, namespace creation, kexec, module loading, bpf,
perf, keyrings, userfaultfd, io_uring, cross-process memory access, clock changes, SysV IPC
object creation, ...).
Denied calls fail with EPERM, so Python raises PermissionError and the verdict is an ordinary
`error`; a foreign architecture or the x32 ABI (a classic filter bypass) kills the process.
Filters are inherited and cannot be removed, so the worker installs it on itself (with
no_new_privs) once its namespaces are built, and programs inherit it.

Numbers are taken from the kernel headers (asm/unistd_64.h and asm-generic/unistd.h).
"""
import ctypes
import errno
import struct

from execution import linux

# struct seccomp_data offsets.
_NR_OFFSET = 0
_ARCH_OFFSET = 4
_ARG0_LOW_OFFSET = 16  # Little-endian: the low 32 bits of args[0].
_ARG1_LOW_OFFSET = 24

# Classic BPF opcodes.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

_RET_KILL_PROCESS = 0x80000000
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000

_DENIED_NAMES = (
    "ptrace", "mount", "umount2", "pivot_root", "chroot", "swapon", "swapoff", "reboot",
    "sethostname", "setdomainname", "init_module", "finit_module", "delete_module", "quotactl",
    "acct", "settimeofday", "adjtimex", "clock_settime", "clock_adjtime", "kexec_load",
    "kexec_file_load", "bpf", "perf_event_open", "keyctl", "add_key",
    "request_key", "userfaultfd", "process_vm_readv", "process_vm_writev", "open_by_handle_at",
    "name_to_handle_at", "syslog", "personality", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount",
    "mount_setattr", "pidfd_getfd", "kcmp", "vhangup", "iopl", "ioperm",
    # SysV IPC objects outlive their creator; denying creation keeps programs from leaving
    # state behind for the next one (the worker's IPC namespace also hides the host's).
    "shmget", "semget", "msgget",
)

_ARCHITECTURES = {
    "x86_64": {
        "audit_arch": 0xC000003E,
        "x32_bit": 0x40000000,
        "syscalls": {
            "ptrace": 101, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
            "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
            "setdomainname": 171, "init_module": 175, "finit_module": 313,
            "delete_module": 176, "quotactl": 179, "acct": 163, "settimeofday": 164,
            "adjtimex": 159, "clock_settime": 227, "clock_adjtime": 305, "kexec_load": 246,
            "kexec_file_load": 320, "unshare": 272, "setns": 308, "bpf": 321,
            "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249,
            "userfaultfd": 323, "process_vm_readv": 310, "process_vm_writev": 311,
            "open_by_handle_at": 304, "name_to_handle_at": 303, "syslog": 103,
            "personality": 135, "io_uring_setup": 425, "io_uring_enter": 426,
            "io_uring_register": 427, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
            "fspick": 433, "open_tree": 428, "move_mount": 429, "mount_setattr": 442,
            "pidfd_getfd": 438, "kcmp": 312, "vhangup": 153, "iopl": 172, "ioperm": 173,
            "shmget": 29, "semget": 64, "msgget": 68, "clone": 56, "clone3": 435,
        },
    },
    "aarch64": {
        "audit_arch": 0xC00000B7,
        "x32_bit": None,
        "syscalls": {
            "ptrace": 117, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
            "swapon": 224, "swapoff": 225, "reboot": 142, "sethostname": 161,
            "setdomainname": 162, "init_module": 105, "finit_module": 273,
            "delete_module": 106, "quotactl": 60, "acct": 89, "settimeofday": 170,
            "adjtimex": 171, "clock_settime": 112, "clock_adjtime": 266, "kexec_load": 104,
            "kexec_file_load": 294, "unshare": 97, "setns": 268, "bpf": 280,
            "perf_event_open": 241, "keyctl": 219, "add_key": 217, "request_key": 218,
            "userfaultfd": 282, "process_vm_readv": 270, "process_vm_writev": 271,
            "open_by_handle_at": 265, "name_to_handle_at": 264, "syslog": 116,
            "personality": 92, "io_uring_setup": 425, "io_uring_enter": 426,
            "io_uring_register": 427, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
            "fspick": 433, "open_tree": 428, "move_mount": 429, "mount_setattr": 442,
            "pidfd_getfd": 438, "kcmp": 272, "vhangup": 58, "shmget": 194, "semget": 190,
            "msgget": 186, "clone": 220, "clone3": 435,
        },
    },
}

_NAMESPACE_FLAGS = (linux.CLONE_NEWNS | linux.CLONE_NEWCGROUP | linux.CLONE_NEWUTS
                    | linux.CLONE_NEWIPC | linux.CLONE_NEWUSER | linux.CLONE_NEWPID
                    | linux.CLONE_NEWNET)


class _SockFilter(ctypes.Structure):
  _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
              ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
  _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def is_supported() -> bool:
  return linux.machine() in _ARCHITECTURES


def build_filter(machine: str) -> list[tuple[int, int, int, int]]:
  """Returns the filter as (code, jt, jf, k) instructions for `machine`."""
  if machine not in _ARCHITECTURES:
    raise OSError(errno.ENOSYS, f"seccomp filter: unsupported architecture {machine!r}")
  spec = _ARCHITECTURES[machine]
  numbers = spec["syscalls"]
  deny = _RET_ERRNO | errno.EPERM
  program = [
      (_LD_W_ABS, 0, 0, _ARCH_OFFSET),
      (_JEQ_K, 1, 0, spec["audit_arch"]),
      (_RET_K, 0, 0, _RET_KILL_PROCESS),
      (_LD_W_ABS, 0, 0, _NR_OFFSET),
  ]
  if spec["x32_bit"] is not None:
    program += [(_JGE_K, 0, 1, spec["x32_bit"]), (_RET_K, 0, 0, _RET_KILL_PROCESS)]
  for name in _DENIED_NAMES:
    if name in numbers:
      program += [(_JEQ_K, 0, 1, numbers[name]), (_RET_K, 0, 0, deny)]
  # The worker, which carries this filter itself, makes each program's pid namespace with
  # unshare(CLONE_NEWPID) and setns(fd, CLONE_NEWPID), and a fresh net namespace after a
  # program that used the network with unshare(CLONE_NEWNET). All need CAP_SYS_ADMIN, which
  # programs never have; every other namespace request (CLONE_NEWUSER above all) is denied.
  program += [
      (_JEQ_K, 0, 5, numbers["unshare"]),
      (_LD_W_ABS, 0, 0, _ARG0_LOW_OFFSET),
      (_JEQ_K, 2, 0, linux.CLONE_NEWPID),
      (_JEQ_K, 1, 0, linux.CLONE_NEWNET),
      (_RET_K, 0, 0, deny),
      (_RET_K, 0, 0, _RET_ALLOW),
      (_JEQ_K, 0, 4, numbers["setns"]),
      (_LD_W_ABS, 0, 0, _ARG1_LOW_OFFSET),
      (_JEQ_K, 1, 0, linux.CLONE_NEWPID),
      (_RET_K, 0, 0, deny),
      (_RET_K, 0, 0, _RET_ALLOW),
  ]
  program += [(_LD_W_ABS, 0, 0, _NR_OFFSET)]
  # clone3 passes its flags in memory a filter cannot read; ENOSYS makes libc fall back to clone.
  program += [(_JEQ_K, 0, 1, numbers["clone3"]), (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
  # clone itself is fine (fork, threads) unless it asks for new namespaces.
  program += [
      (_JEQ_K, 0, 3, numbers["clone"]),
      (_LD_W_ABS, 0, 0, _ARG0_LOW_OFFSET),
      (_JSET_K, 0, 1, _NAMESPACE_FLAGS),
      (_RET_K, 0, 0, deny),
      (_RET_K, 0, 0, _RET_ALLOW),
  ]
  return program


class Filter:
  """The assembled filter. The worker installs it on itself once (the kernel compiles a filter
  on every attach, which would cost each program a fraction of a millisecond), and every
  program inherits it through fork."""

  def __init__(self, machine: str | None = None):
    program = build_filter(machine or linux.machine())
    self._instructions = (_SockFilter * len(program))(*[_SockFilter(*i) for i in program])
    self._fprog = _SockFprog(len(program), self._instructions)
    self._pointer = ctypes.cast(ctypes.pointer(self._fprog), ctypes.c_void_p)

  def install(self) -> None:
    """Installs the filter on the calling thread (and all future children); irreversible."""
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    linux.prctl_pointer(linux.PR_SET_SECCOMP, linux.SECCOMP_MODE_FILTER, self._pointer)


def describe(machine: str) -> bytes:
  """The filter as raw sock_filter bytes (for tests and debugging)."""
  return b"".join(struct.pack("<HBBI", *ins) for ins in build_filter(machine))
