"""The records that cross the module boundary: a job to run and the verdict on it."""
import dataclasses
from typing import Any

# Verdict statuses, from best to worst; `passed` is the only one that scores.
PASSED = "passed"
FAILED = "failed"          # A test's assert failed.
ERROR = "error"            # The program, setup or a test raised (type in `error`), or exited early.
SYNTAX_ERROR = "syntax_error"
TIMEOUT = "timeout"        # Wall-clock limit hit; the process tree was SIGKILLed from outside.
KILLED = "killed"          # Died on a signal or a resource limit (memory, CPU, files, crash).
STATUSES = (PASSED, FAILED, ERROR, SYNTAX_ERROR, TIMEOUT, KILLED)


@dataclasses.dataclass(frozen=True)
class Job:
  """One untrusted program and the tests that decide whether it is correct."""
  id: str
  program: str
  tests: tuple[str, ...]
  setup: str = ""  # Runs after the program, before the tests (MBPP's test_setup_code).

  @classmethod
  def from_json(cls, record: dict[str, Any]) -> "Job":
    for key, kind in (("id", str), ("program", str), ("tests", list)):
      if not isinstance(record.get(key), kind):
        raise ValueError(f"job needs {key!r} of type {kind.__name__}: {str(record)[:200]}")
    if not all(isinstance(t, str) for t in record["tests"]):
      raise ValueError(f"job {record['id']!r}: every test must be a string")
    setup = record.get("setup") or ""
    if not isinstance(setup, str):
      raise ValueError(f"job {record['id']!r}: setup must be a string")
    return cls(record["id"], record["program"], tuple(record["tests"]), setup)


@dataclasses.dataclass(frozen=True)
class Result:
  """The verdict on one job. `passed` is True only with proof that every test ran to its end."""
  id: str
  status: str
  passed: bool
  tests_passed: int
  tests_total: int
  error: str
  duration_s: float
  output: str = ""  # Head of the program's merged stdout/stderr, capped.

  def to_json(self, with_output: bool = False) -> dict[str, Any]:
    # Spelled out rather than dataclasses.asdict, which deep-copies: this runs per program.
    record = {"id": self.id, "status": self.status, "passed": self.passed,
              "tests_passed": self.tests_passed, "tests_total": self.tests_total,
              "error": self.error, "duration_s": self.duration_s}
    if with_output:
      record["output"] = self.output
    return record
