"""Hostile programs aimed at the warm worker itself (execution/worker.py): whatever a program
does, the worker must survive it, give it its own verdict, and run the next program as if it
were the first; and no program may find another's text in the memory it inherits."""
import hashlib
import os
import textwrap

import pytest

from execution import Job, SandboxConfig, WorkerPool

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hostile suite runs as root (CI)")

AFTER = Job("after", "def f(x):\n  return x + 1\n", ("assert f(1) == 2",))


def _run_one_worker(jobs: list[Job], **config) -> dict:
  """Runs `jobs` one after the other in a single warm worker; verdicts by id."""
  settings = dict(timeout_s=10.0, workers=1, screen_batch=0)
  settings.update(config)
  with WorkerPool(SandboxConfig(**settings)) as pool:
    return {r.id: r for r in pool.run(jobs)}


def test_a_scratch_tree_deeper_than_the_descriptor_limit_is_wiped():
  # 300 levels of 200-character names: more levels than RLIMIT_NOFILE (256) has descriptors,
  # a path 60,000 characters long (PATH_MAX is 4,096), some levels unreadable and unwritable.
  nest = Job("nest", textwrap.dedent("""
      import os
      for level in range(300):
        name = "d" * 200
        os.mkdir(name)
        open(os.path.join(name, "f"), "w").close()
        os.chdir(name)
      for level in range(300):
        os.chdir("..")
        if level % 7 == 0:
          os.chmod("d" * 200, 0)
      """), ("assert True",))
  empty = Job("empty", "import os\nlisted = sorted(os.listdir('.'))\n",
              ("assert listed == ['program.py'], listed",))
  verdicts = _run_one_worker([nest, empty, AFTER])
  assert {k: r.status for k, r in verdicts.items()} == {
      "nest": "passed", "empty": "passed", "after": "passed"}, verdicts


def test_memory_outside_every_process_kills_the_program_not_the_worker():
  # memfd pages written but never mapped are in no process's RSS, yet count in the worker's
  # memory cgroup: 600 MiB of them, in files under RLIMIT_FSIZE, against a 256 MiB cgroup.
  memfd = Job("memfd", textwrap.dedent("""
      import os
      chunk = b"x" * (1 << 20)
      files = []
      for _ in range(40):
        files.append(os.memfd_create("fill"))
        for _ in range(15):
          os.write(files[-1], chunk)
      """), ("assert True",))
  verdicts = _run_one_worker([memfd, AFTER], worker_memory_mb=256, memory_mb=512)
  assert verdicts["memfd"].status == "killed", verdicts["memfd"]
  assert "memory limit" in verdicts["memfd"].error
  assert verdicts["after"].status == "passed"


# A program finds others' text by reading all of its own memory (ctypes, /proc/self/maps).
_SCANNER = textwrap.dedent("""
    import ctypes, hashlib
    def leaked(prefix, digest):
      hits = 0
      with open("/proc/self/maps") as maps:
        regions = [line.split() for line in maps]
      for fields in regions:
        start, end = (int(x, 16) for x in fields[0].split("-"))
        name = fields[5] if len(fields) > 5 else ""
        # Readable, private or anonymous (not a mapped file that might be shorter than it).
        if not fields[1].startswith("r") or name.startswith("[v") or (
            name.startswith("/") and not name.startswith("/memfd")):
          continue
        data = ctypes.string_at(start, end - start)
        at = data.find(prefix)
        while at >= 0:
          if hashlib.sha256(data[at:at + len(prefix) + 16]).hexdigest() == digest:
            hits += 1
          at = data.find(prefix, at + 1)
      return hits
    """)


def test_no_program_finds_another_programs_text_in_its_memory():
  secret = os.urandom(8).hex()  # 16 characters, in the earlier and the later job only.
  marker = "LEAK" + "MARK:"
  digest = hashlib.sha256((marker + secret).encode()).hexdigest()
  scan = f"assert leaked({marker.encode()!r}, {digest!r}) == 0"
  # The scanner's own text holds the marker and the digest, never the secret.
  assert secret not in _SCANNER + scan
  earlier = Job("earlier", f"s = {marker + secret!r}\n", (f"assert s.endswith({secret!r})",))
  later = Job("later", "x = 1\n", (f"assert {marker + secret!r}",))
  scanner = Job("scanner", _SCANNER, (scan,))
  # The same warm worker runs the earlier program, then the scanner; with the syntax screen,
  # it has compiled the later job's batch (the scanner's included) before the scanner runs.
  verdicts = _run_one_worker([earlier, scanner, later], screen_batch=64)
  assert {k: (r.status, r.error) for k, r in verdicts.items()} == {
      "earlier": ("passed", ""), "scanner": ("passed", ""), "later": ("passed", "")}
  # The scan itself works: it finds the secret where it is (a program's own text).
  own = Job("own", _SCANNER + f"s = {marker + secret!r}\n",
            (f"assert leaked({marker.encode()!r}, {digest!r}) > 0",))
  assert _run_one_worker([own])["own"].status == "passed"
