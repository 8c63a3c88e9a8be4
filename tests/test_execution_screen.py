"""The syntax screen (harness.screen, Worker.screen): compiling a batch of programs in one
sandboxed process must give each program that stops at compile time exactly the verdict its
own run gives, and leave every other program to run on its own."""
import dataclasses
import os

import pytest

from execution import Job, SandboxConfig, WorkerPool, verdict

TESTS = ("assert f(1) == 2",)
F = "def f(x):\n  return x + 1\n"

# id -> (program, decided by the screen?)
CASES = {
    "valid": (F, False),
    "valid_printing": (F + "print('loaded')\n", False),
    "valid_with_warning": ("x = 1 is 1\n" + F, False),
    "exits_early": ("import sys\nsys.exit(0)\n" + F, False),
    "invalid_syntax": ("def f(x):\n  return x +\n", True),
    "unclosed_paren": ("def f(x:\n  pass\n", True),
    "indentation": ("def f(x):\nreturn x\n", True),
    "tab_error": ("def f(x):\n\tif x:\n        return x\n", True),
    "unterminated_string": ("s = 'abc\n" + F, True),
    "fstring": ("s = f'{'\n" + F, True),
    "return_outside_function": ("return 5\n", True),       # Found by the compiler, not the parser.
    "nonlocal_at_module_level": ("def g():\n  nonlocal q\n", True),  # By the symbol table.
    "break_outside_loop": ("break\n", True),
    "too_many_parentheses": ("x = " + "(" * 250 + ")" * 250 + "\n", True),
    # The parser stops before the compiler would warn: nothing printed, decided.
    "error_before_a_warning": ("x = 1 is 1\n(\n", True),
    # The compiler prints a SyntaxWarning before the error: the run has output, so it runs.
    "warning_then_error": ("x = 1 is 1\nbreak\n", False),
    "null_byte": ("a\0b\n", True),
    # Not a SyntaxError: compile() raises RecursionError; it runs on its own.
    "deep_expression": ("x = " + "1+" * 100_000 + "1\n" + F, False),
}


@pytest.mark.skipif(os.geteuid() != 0, reason="sandbox tests run as root (CI)")
def test_screened_verdicts_equal_those_of_each_programs_own_run():
  jobs = [Job(name, program, TESTS) for name, (program, _) in CASES.items()]
  by_config = {}
  for screen_batch in (0, 4):
    with WorkerPool(SandboxConfig(workers=2, screen_batch=screen_batch)) as pool:
      results = pool.run(jobs)
      by_config[screen_batch] = ([dataclasses.replace(r, duration_s=0.0) for r in results],
                                 pool.screened)
  (alone, none_screened), (screened, count) = by_config[0], by_config[4]
  assert none_screened == 0
  assert count == sum(decided for _, decided in CASES.values())
  assert screened == alone
  by_id = {r.id: r for r in alone}
  assert by_id["valid"].passed and by_id["exits_early"].status == "error"
  for name, (_, decided) in CASES.items():
    if decided:
      assert by_id[name].status == "syntax_error" and by_id[name].output == "", name
  assert "SyntaxWarning" in by_id["warning_then_error"].output
  assert by_id["deep_expression"].error.startswith("RecursionError")


def _report(nonce: bytes, *lines: bytes) -> bytes:
  return b"".join(nonce + b" " + line + b"\n" for line in lines)


def test_only_the_screens_own_syntax_error_records_count():
  nonce = b"0123456789abcdef0123456789abcdef"
  jobs = [Job(f"j{i}", "x", ("assert 1", "assert 2")) for i in range(5)]
  report = _report(nonce, b"ready -1 ", b"syntax_error 0 SyntaxError: invalid syntax",
                   b"syntax_error 0 SyntaxError: second record", b"pass 1 ",
                   b"syntax_error 7 SyntaxError: out of range")
  report += _report(b"f" * 32, b"syntax_error 2 SyntaxError: forged")  # Another nonce.
  report += _report(nonce, b"syntax_error 3 SyntaxError: unexpected indent")
  first, *rest = verdict.screened([(j.id, len(j.tests)) for j in jobs], report, nonce, 0.01234)
  assert first == verdict.Result("j0", "syntax_error", False, 0, 2,
                                 "SyntaxError: invalid syntax", 0.0123)
  # A screen that was killed or timed out leaves the jobs it did not report to run.
  assert rest[0] is None and rest[1] is None and rest[3] is None
  assert rest[2].error == "SyntaxError: unexpected indent"
