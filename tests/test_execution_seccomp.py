"""The hand-assembled seccomp filter, run on a small classic-BPF interpreter for both
architectures (the aarch64 table cannot be exercised on this x86_64 machine otherwise)."""
import errno
import struct

import pytest

from execution import linux
from execution import seccomp

ALLOW, KILL = 0x7FFF0000, 0x80000000
EPERM, ENOSYS = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
X86_64, AARCH64 = 0xC000003E, 0xC00000B7


def _run_filter(program, nr: int, arch: int, args=(0,) * 6) -> int:
  """Evaluates classic BPF over a struct seccomp_data; returns the filter's verdict."""
  data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
  accumulator, pc = 0, 0
  while True:
    code, jt, jf, k = program[pc]
    if code == 0x20:                       # LD W ABS
      accumulator = struct.unpack_from("<I", data, k)[0]
      pc += 1
    elif code == 0x06:                     # RET K
      return k
    else:
      taken = {0x15: accumulator == k, 0x35: accumulator >= k,
               0x45: bool(accumulator & k)}[code]
      pc += 1 + (jt if taken else jf)
    assert 0 <= pc < len(program), "jump out of the program"


@pytest.mark.parametrize("machine, arch, numbers", [
    ("x86_64", X86_64, {"read": 0, "mount": 165, "ptrace": 101, "clone": 56, "clone3": 435,
                        "unshare": 272, "setns": 308, "bpf": 321, "shmget": 29,
                        "kexec_load": 246, "getpid": 39}),
    ("aarch64", AARCH64, {"read": 63, "mount": 40, "ptrace": 117, "clone": 220, "clone3": 435,
                          "unshare": 97, "setns": 268, "bpf": 280, "shmget": 194,
                          "kexec_load": 104, "getpid": 172}),
])
def test_filter_verdicts(machine, arch, numbers):
  program = seccomp.build_filter(machine)
  run = lambda name, *args: _run_filter(program, numbers[name], arch, args + (0,) * (6 - len(args)))
  assert run("read") == ALLOW and run("getpid") == ALLOW
  for name in ("mount", "ptrace", "bpf", "shmget", "kexec_load"):
    assert run(name) == EPERM, name
  assert run("clone", 0x11) == ALLOW                             # fork: SIGCHLD only.
  assert run("clone", linux.CLONE_NEWUSER | 0x11) == EPERM
  assert run("clone", linux.CLONE_NEWNET) == EPERM
  assert run("clone3") == ENOSYS                                 # libc falls back to clone.
  assert run("unshare", linux.CLONE_NEWPID) == ALLOW             # Still needs CAP_SYS_ADMIN.
  assert run("unshare", linux.CLONE_NEWUSER) == EPERM
  assert run("unshare", linux.CLONE_NEWPID | linux.CLONE_NEWNS) == EPERM
  assert run("unshare", linux.CLONE_NEWNET) == ALLOW             # A fresh loopback, likewise.
  assert run("unshare", linux.CLONE_NEWNET | linux.CLONE_NEWUSER) == EPERM
  assert run("setns", 3, linux.CLONE_NEWPID) == ALLOW
  assert run("setns", 3, 0) == EPERM                             # "Any type" is refused.
  other_arch = AARCH64 if arch == X86_64 else X86_64
  assert _run_filter(program, numbers["read"], other_arch) == KILL


def test_x32_syscalls_are_killed_on_x86_64():
  program = seccomp.build_filter("x86_64")
  assert _run_filter(program, 0x40000000 | 0, X86_64) == KILL


def test_unknown_architecture_is_refused():
  with pytest.raises(OSError, match="unsupported architecture"):
    seccomp.build_filter("vax")
