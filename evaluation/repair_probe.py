"""What a failing equality test's call really returned, found by running it in the sandbox.

The paper's people told the model "f(2) returned 4, expected 3"; the repair study says the
same, from an execution rather than a guess. For the one failed sample per problem that is fed
back, a probe job replays the program, the setup and the tests before the failing one (they
passed, and running them keeps any state they leave), then evaluates the failing test's call
and raises an AssertionError whose message carries repr(value), capped inside the sandbox.
The verdict's error string brings it back; a frame around it tells a probe's message from an
AssertionError the program itself raised. All probes of a round go to the sandbox in one run.
Anything unexpected (the call raises, times out, an earlier test fails this time) gives no
value, and the caller keeps the plain feedback line.
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Sequence

from execution import FAILED, Job, SandboxConfig, run_programs

# Longest repr (and expected text) shown; the harness caps verdict messages at a few hundred
# characters, and a page of repr helps the model no more than its head.
VALUE_CAP = 120
_OPEN = "repair-probe<"
_CLOSE = ">end"
_VARIABLE = "_repair_probe_value"


@dataclasses.dataclass(frozen=True)
class EqualityAssert:
  """`assert CALL == EXPECTED`: the two sides' source text."""
  call: str
  expected: str


@dataclasses.dataclass(frozen=True)
class Probe:
  """Evaluate `call` after `program` + `setup` + `tests_before` (the tests that passed)."""
  id: str
  program: str
  setup: str
  tests_before: tuple[str, ...]
  call: str


def _source(text: str, node: ast.expr) -> str:
  segment = ast.get_source_segment(text, node) or ast.unparse(node)
  return ast.unparse(node) if "\n" in segment else segment  # One line in the feedback.


def equality_assert(test: str) -> EqualityAssert | None:
  """The sides of `assert CALL == EXPECTED` (one `==`, nothing else); None for other tests."""
  text = test.strip()
  try:
    module = ast.parse(text)
  except SyntaxError:
    return None
  if len(module.body) != 1 or not isinstance(module.body[0], ast.Assert):
    return None
  compare = module.body[0].test
  if not (isinstance(compare, ast.Compare) and len(compare.ops) == 1
          and isinstance(compare.ops[0], ast.Eq)):
    return None
  return EqualityAssert(_source(text, compare.left), _source(text, compare.comparators[0]))


def cap(text: str) -> str:
  return text if len(text) <= VALUE_CAP else text[:VALUE_CAP] + "..."


def probe_test(call: str) -> str:
  """The test that reports repr(call) through its AssertionError's message."""
  return (f"{_VARIABLE} = repr({call})\n"
          f"if len({_VARIABLE}) > {VALUE_CAP}:\n"
          f"  {_VARIABLE} = {_VARIABLE}[:{VALUE_CAP}] + '...'\n"
          f"raise AssertionError({_OPEN!r} + {_VARIABLE} + {_CLOSE!r})\n")


def probe_job(probe: Probe) -> Job:
  return Job(probe.id, probe.program, probe.tests_before + (probe_test(probe.call),),
             probe.setup)


def returned_value(probe: Probe, status: str, error: str) -> str | None:
  """repr of the returned value from a probe job's verdict, or None if the probe failed."""
  head = f"test {len(probe.tests_before)}: AssertionError: {_OPEN}"
  if status != FAILED or not error.startswith(head) or not error.endswith(_CLOSE):
    return None
  return error[len(head):-len(_CLOSE)]


def returned_values(probes: Sequence[Probe],
                    sandbox_config: SandboxConfig | None = None) -> dict[str, str | None]:
  """{probe id: repr of what its call returned, or None}; one sandbox run for all."""
  if not probes:
    return {}
  if len({p.id for p in probes}) != len(probes):
    raise ValueError("probe ids must be unique")
  results = run_programs([probe_job(p) for p in probes], sandbox_config)
  return {p.id: returned_value(p, r.status, r.error) for p, r in zip(probes, results)}
