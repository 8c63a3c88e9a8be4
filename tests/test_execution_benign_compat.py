"""Benign programs that pass under `python program.py` must pass in the sandbox too: the
program is a real file (`__file__`, source lines for inspect and tracebacks), multiprocessing's
spawn and forkserver start methods work, and an error the parser raises is the program's own."""
import os
import subprocess
import sys
import textwrap

import pytest

from execution import Job, SandboxConfig, WorkerPool

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox tests run as root (CI)")

POOL_PROGRAM = textwrap.dedent("""
    import multiprocessing
    def square(x):
      return x * x
    def squares(method):
      with multiprocessing.get_context(method).Pool(2) as pool:
        return pool.map(square, [1, 2, 3])
    """)

# id -> (program, tests): each passes as `python program.py` (the tests in its main block).
CASES = {
    "dunder_file": ("import os\npath = __file__\n",
                    ("assert os.path.basename(path) == 'program.py'",
                     "assert open(path).read().startswith('import os')")),
    "inspect_getsource": ("import inspect\ndef f(x):\n  return x + 1\n",
                          ("assert inspect.getsource(f) == 'def f(x):\\n  return x + 1\\n'",)),
    "traceback_source_lines": (textwrap.dedent("""
        import traceback
        def fails():
          raise ValueError("boom")
        try:
          fails()
        except ValueError:
          text = traceback.format_exc()
        """), ("assert 'raise ValueError(\"boom\")' in text, text",)),
    "multiprocessing_spawn": (POOL_PROGRAM, ("assert squares('spawn') == [1, 4, 9]",)),
    "multiprocessing_forkserver": (POOL_PROGRAM, ("assert squares('forkserver') == [1, 4, 9]",)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_reference_passes_as_python_program_py(name, tmp_path):
  program, tests = CASES[name]
  script = tmp_path / "program.py"
  # The tests under a main guard, as the sandbox runs them: outside the program's file, so
  # spawned interpreters that import it again do not run them.
  script.write_text(program + "if __name__ == '__main__':\n"
                    + "".join(f"  {test}\n" for test in tests))
  done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                        text=True, timeout=60)
  assert done.returncode == 0, done.stderr[-2000:]


@needs_root
def test_they_pass_in_the_sandbox():
  jobs = [Job(name, program, tests) for name, (program, tests) in CASES.items()]
  # Short timeout: a spawn Pool that cannot import the program's functions waits forever.
  with WorkerPool(SandboxConfig(timeout_s=10.0, workers=2)) as pool:
    results = pool.run(jobs)
  assert {r.id: (r.status, r.error) for r in results} == {
      name: ("passed", "") for name in CASES}, [r.output[-1500:] for r in results]


@needs_root
def test_a_main_block_starting_a_spawn_pool_runs_as_under_python():
  program = POOL_PROGRAM + "if __name__ == '__main__':\n  print(squares('spawn'))\n"
  with WorkerPool(SandboxConfig(timeout_s=10.0, workers=1, run_as_main=True)) as pool:
    result, = pool.run([Job("main", program, ())])
  assert (result.status, result.output) == ("passed", "[1, 4, 9]\n")


@needs_root
def test_a_parser_memory_error_is_the_programs_own_error():
  # CPython 3.11's parser raises MemoryError past its stack depth; `python program.py` prints
  # "MemoryError" and exits 1, with nothing to do with the memory limit.
  deep = "-" * 100_000 + "1"
  jobs = [Job("program", f"x = {deep}\n", ("assert True",)),
          Job("setup", "x = 1\n", ("assert True",), setup=f"y = {deep}\n"),
          Job("test", "x = 1\n", (f"assert x == {deep}", "assert x == 1"))]
  with WorkerPool(SandboxConfig(workers=1, screen_batch=0)) as pool:
    verdicts = {r.id: (r.status, r.error, r.tests_passed) for r in pool.run(jobs)}
  assert verdicts == {"program": ("syntax_error", "MemoryError", 0),
                      "setup": ("error", "in setup: MemoryError", 0),
                      "test": ("error", "test 0: MemoryError", 1)}
