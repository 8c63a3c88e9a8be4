"""The verdict rules, on synthetic observations (no processes involved)."""
import signal

import pytest

from execution import verdict

NONCE = b"0123456789abcdef0123456789abcdef"
EXIT_0 = 0            # Wait status of a normal exit with code 0.
EXIT_3 = 3 << 8


def _seen(lines: list[bytes], wait_status=EXIT_0, timed_out=False, tests=2, nonce=NONCE):
  report = b"".join(nonce + b" " + line + b"\n" for line in lines)
  return verdict.Observation(report, NONCE, wait_status, timed_out, tests, 0.01)


def test_all_passes_done_and_clean_exit_is_passed():
  r = verdict.decide("a", _seen([b"ready -1 ", b"pass 0 ", b"pass 1 ", b"done -1 "]))
  assert (r.status, r.passed, r.tests_passed, r.tests_total) == ("passed", True, 2, 2)


@pytest.mark.parametrize("lines, wait_status, timed_out, status", [
    ([b"ready -1 ", b"pass 0 ", b"pass 1 "], EXIT_0, False, "error"),        # No "done".
    ([b"ready -1 ", b"pass 0 ", b"pass 1 ", b"done -1 "], EXIT_3, False, "error"),
    ([b"ready -1 ", b"pass 0 ", b"pass 1 ", b"done -1 "], signal.SIGKILL, False, "killed"),
    ([b"ready -1 ", b"pass 0 ", b"pass 1 ", b"done -1 "], signal.SIGKILL, True, "timeout"),
    ([b"ready -1 ", b"pass 0 "], signal.SIGKILL, True, "timeout"),
    ([b"ready -1 "], signal.SIGSEGV, False, "killed"),
    ([b"ready -1 "], signal.SIGXCPU, False, "timeout"),
    ([b"ready -1 ", b"pass 0 ", b"fail 1 AssertionError", b"done -1 "], EXIT_0, False,
     "failed"),
    ([b"ready -1 ", b"test_error 0 NameError: x", b"pass 1 ", b"done -1 "], EXIT_0, False,
     "error"),
    ([b"ready -1 ", b"test_error 0 MemoryError", b"done -1 "], EXIT_0, False, "killed"),
    ([b"ready -1 ", b"syntax_error -1 SyntaxError: x"], EXIT_0, False, "syntax_error"),
    ([b"ready -1 ", b"program_error -1 SystemExit: 0"], EXIT_0, False, "error"),
    ([b"ready -1 ", b"setup_error -1 NameError: Node"], EXIT_0, False, "error"),
    ([], EXIT_0, False, "killed"),                                         # Never started.
    ([b"ready -1 ", b"pass 0 ", b"signal 15 "], (128 + 15) << 8, False, "killed"),
    ([b"ready -1 ", b"signal 24 "], (128 + 24) << 8, False, "timeout"),    # SIGXCPU.
])
def test_anything_short_of_proof_is_not_passed(lines, wait_status, timed_out, status):
  r = verdict.decide("a", _seen(lines, wait_status, timed_out))
  assert (r.status, r.passed) == (status, False)


def test_records_without_the_nonce_are_ignored():
  forged = b"".join(b"%s %s\n" % (b"f" * 32, line)
                    for line in (b"pass 0 ", b"pass 1 ", b"done -1 "))
  seen = verdict.Observation(forged + NONCE + b" ready -1 \n", NONCE, EXIT_0, False, 2, 0.1)
  r = verdict.decide("a", seen)
  assert (r.passed, r.tests_passed) == (False, 0)


def test_a_reported_failure_beats_a_later_forged_pass():
  r = verdict.decide("a", _seen([b"ready -1 ", b"fail 0 AssertionError", b"pass 0 ", b"pass 1 ",
                                 b"done -1 "]))
  assert (r.status, r.passed, r.tests_passed) == ("failed", False, 1)


def test_setup_failure_of_the_sandbox_raises_instead_of_judging():
  with pytest.raises(verdict.SandboxFailure):
    verdict.decide("a", _seen([b"setup_failed -1 PermissionError()"], 111 << 8))


@pytest.mark.parametrize("lines, status, error", [
    # At compile time a MemoryError is the parser's (nesting too deep): the program's error.
    ([b"ready -1 ", b"syntax_error -1 MemoryError"], "syntax_error", "MemoryError"),
    ([b"ready -1 ", b"setup_syntax_error -1 MemoryError"], "error", "in setup: MemoryError"),
    ([b"ready -1 ", b"test_syntax_error 0 MemoryError", b"pass 1 ", b"done -1 "], "error",
     "test 0: MemoryError"),
    # At run time it is the memory limit.
    ([b"ready -1 ", b"setup_error -1 MemoryError"], "killed",
     "in setup: MemoryError (memory limit)"),
])
def test_a_memory_error_means_the_limit_only_at_run_time(lines, status, error):
  r = verdict.decide("a", _seen(lines))
  assert (r.status, r.error) == (status, error)


def test_an_oom_kill_in_the_cgroup_is_the_memory_limit():
  seen = _seen([b"ready -1 "], signal.SIGKILL)
  assert verdict.decide("a", seen).error == "killed by SIGKILL"
  seen.out_of_memory = True
  r = verdict.decide("a", seen)
  assert (r.status, r.passed) == ("killed", False) and "memory limit" in r.error
