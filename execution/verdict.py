"""Turns what the worker observed about one program into a Result.

Inputs are the raw bytes of the verdict pipe, the per-program nonce, the wait status of the
program's process (PID 1 of its namespace) and whether the worker had to kill it at the
deadline. Only records carrying the nonce count; everything else on the pipe is ignored.
"""
import dataclasses
import os
import signal

from execution import records
from execution.records import Result


class SandboxFailure(RuntimeError):
  """The sandbox itself could not be set up for a program (never the program's fault)."""


@dataclasses.dataclass
class Observation:
  report: bytes          # Everything read from the verdict pipe.
  nonce: bytes
  wait_status: int | None  # None if the process could not be waited for.
  timed_out: bool
  tests_total: int
  duration_s: float
  output: str = ""
  # The OOM killer killed a process in the worker's memory cgroup while the program ran (it
  # never picks the worker: memory_cgroup.py).
  out_of_memory: bool = False


def _parse(report: bytes, nonce: bytes) -> list[tuple[str, int, str]]:
  parsed = []
  prefix = nonce + b" "
  for line in report.split(b"\n"):
    if not line.startswith(prefix):
      continue
    fields = line[len(prefix):].split(b" ", 2)
    if len(fields) < 2:
      continue
    try:
      index = int(fields[1])
    except ValueError:
      continue
    detail = fields[2].decode("utf-8", "replace") if len(fields) > 2 else ""
    parsed.append((fields[0].decode("ascii", "replace"), index, detail))
  return parsed


# Records of a test that did not pass: its assert failed, it raised, it did not compile.
_TEST_FAILURES = ("fail", "test_error", "test_syntax_error")


def _is_memory_error(detail: str) -> bool:
  return detail.startswith("MemoryError")


def _signal_name(number: int) -> str:
  try:
    return signal.Signals(number).name
  except ValueError:
    return f"signal {number}"


def screened(jobs: list[tuple[str, int]], report: bytes, nonce: bytes, duration_s: float
             ) -> list[Result | None]:
  """The verdicts a syntax screen (harness.screen) reported on `jobs` (id, number of tests);
  None where it reported none (the job must run). Each is the Result decide() gives the job's
  own run when it stops at compile time with nothing printed; only duration_s is the
  screen's."""
  verdicts: list[Result | None] = [None] * len(jobs)
  for kind, index, detail in _parse(report, nonce):
    if kind == "syntax_error" and 0 <= index < len(jobs) and verdicts[index] is None:
      job_id, tests_total = jobs[index]
      verdicts[index] = Result(job_id, records.SYNTAX_ERROR, False, 0, tests_total, detail,
                               round(duration_s, 4))
  return verdicts


def decide(job_id: str, seen: Observation) -> Result:
  events = _parse(seen.report, seen.nonce)
  kinds = {kind: (index, detail) for kind, index, detail in reversed(events)}  # First wins.
  if "setup_failed" in kinds and "ready" not in kinds:
    raise SandboxFailure(f"job {job_id}: sandbox setup failed: {kinds['setup_failed'][1]}")
  passes: set[int] = set()
  first_failure: tuple[int, str, str] | None = None
  for kind, index, detail in events:
    if not 0 <= index < seen.tests_total:
      continue
    if kind == "pass":
      passes.add(index)
    elif kind in _TEST_FAILURES:
      if first_failure is None or index < first_failure[0]:
        first_failure = (index, kind, detail)
      passes.discard(index)
  failed_indices = {i for k, i, _ in events if k in _TEST_FAILURES}
  passes -= failed_indices

  status = seen.wait_status
  exited_cleanly = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
  all_tests_done = "done" in kinds and len(passes) == seen.tests_total
  passed = all_tests_done and exited_cleanly and not seen.timed_out

  def result(verdict: str, error: str = "") -> Result:
    return Result(job_id, verdict, verdict == records.PASSED, len(passes), seen.tests_total,
                  error, round(seen.duration_s, 4), seen.output)

  if passed:
    return result(records.PASSED)
  if seen.out_of_memory:
    return result(records.KILLED, "out of memory: the OOM killer killed it (memory limit)")
  # A MemoryError while compiling is the parser's (nesting deeper than its stack), which
  # `python prog.py` reports as the program's error too; at run time it means the memory limit.
  for kind, verdict, where, at_run_time in (
      ("syntax_error", records.SYNTAX_ERROR, "", False),
      ("program_error", records.ERROR, "", True),
      ("setup_syntax_error", records.ERROR, "in setup: ", False),
      ("setup_error", records.ERROR, "in setup: ", True)):
    if kind in kinds:
      detail = kinds[kind][1]
      if at_run_time and _is_memory_error(detail):
        return result(records.KILLED, f"{where}{detail} (memory limit)")
      return result(verdict, f"{where}{detail}")
  if first_failure is not None:
    index, kind, detail = first_failure
    if kind == "fail":
      return result(records.FAILED, f"test {index}: {detail or 'AssertionError'}")
    if kind == "test_error" and _is_memory_error(detail):
      return result(records.KILLED, f"test {index}: {detail} (memory limit)")
    return result(records.ERROR, f"test {index}: {detail}")
  if seen.timed_out:
    return result(records.TIMEOUT, "wall-clock timeout")
  if "signal" in kinds:  # It sent itself a signal (see harness._die_by_signal).
    number = kinds["signal"][0]
    if number == signal.SIGXCPU:
      return result(records.TIMEOUT, "CPU time limit")
    return result(records.KILLED, f"killed by {_signal_name(number)}")
  if status is None:
    return result(records.KILLED, "process vanished")
  if os.WIFSIGNALED(status):
    number = os.WTERMSIG(status)
    if number == signal.SIGXCPU:
      return result(records.TIMEOUT, "CPU time limit")
    return result(records.KILLED, f"killed by {_signal_name(number)}")
  code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
  if "ready" not in kinds:
    return result(records.KILLED, f"died before the program started (exit status {code})")
  return result(records.ERROR, f"exited with status {code} before all tests finished")
