"""Execution-prediction examples from MBPP asserts: given a program and a call, predict
the value.

Each test `assert CALL == EXPECTED` becomes one example whose target is EXPECTED's source
text. Asserts are parsed with `ast`; one counts as parseable when it is a single `assert`
statement whose test is exactly one `==` comparison with a function call on the left:

  * `assert f(x) == y, "message"`: parseable; the message is ignored.
  * `assert f(x) == 1,2` (tasks 313, 362, 436): Python reads `assert (f(x) == 1), 2`, so
    the example's expected value is `1`, which is all the test ever checked.
  * `assert set(f(x)) == set(y)`: parseable; the call is the whole left side `set(f(x))`.
  * Anything else cannot be parsed: `assert f(x)`, `assert not f(x)`,
    `assert math.isclose(f(x), y)`, `assert a == b == c`, `assert f(x) != y`, a left side
    that is not a call (`assert x == f(y)`), or text that is not valid Python.

A prediction is scored by running `assert CALL == PREDICTION` after the program, so any
spelling of the right value (`[1,2]` or `[1, 2]`) counts.
"""
import ast
import dataclasses
from typing import Any, Iterable


@dataclasses.dataclass(frozen=True)
class ExecutionCase:
  """One call of a problem's function and the value its test expects.

  Attributes:
    task_id: MBPP task id.
    test_index: position of the assert in the problem's `test_list`.
    call: source text of the left side, e.g. `remove_Occ("hello","l")`.
    expected: source text of the right side, e.g. `"heo"`.
  """
  task_id: int
  test_index: int
  call: str
  expected: str

  @property
  def assert_source(self) -> str:
    return f"assert {self.call} == {self.expected}"


@dataclasses.dataclass(frozen=True)
class UnparsedTest:
  task_id: int
  test_index: int
  test: str
  reason: str


def parse_assert(test: str) -> tuple[str, str]:
  """Returns (call, expected) source texts of `assert CALL == EXPECTED`.

  Raises:
    ValueError: naming why the assert is not an execution-prediction example.
  """
  source = test.strip()
  try:
    module = ast.parse(source)
  except SyntaxError as e:
    raise ValueError(f"not valid Python: {e.msg}") from e
  if len(module.body) != 1 or not isinstance(module.body[0], ast.Assert):
    raise ValueError("not a single assert statement")
  condition = module.body[0].test
  if not isinstance(condition, ast.Compare):
    raise ValueError(f"assert of a {type(condition).__name__}, not a comparison")
  if len(condition.ops) != 1 or not isinstance(condition.ops[0], ast.Eq):
    raise ValueError("comparison is not a single ==")
  if not isinstance(condition.left, ast.Call):
    raise ValueError("left side of == is not a call")
  call = ast.get_source_segment(source, condition.left)
  expected = ast.get_source_segment(source, condition.comparators[0])
  if call is None or expected is None:
    raise ValueError("cannot recover the source text")
  return call, expected


def cases_from_problem(problem: dict[str, Any]
                       ) -> tuple[list[ExecutionCase], list[UnparsedTest]]:
  """Splits one MBPP problem's `test_list` into examples and unparseable tests."""
  cases, unparsed = [], []
  for index, test in enumerate(problem["test_list"]):
    try:
      call, expected = parse_assert(test)
    except ValueError as e:
      unparsed.append(UnparsedTest(problem["task_id"], index, test, str(e)))
      continue
    cases.append(ExecutionCase(problem["task_id"], index, call, expected))
  return cases, unparsed


def cases_from_problems(problems: Iterable[dict[str, Any]]
                        ) -> tuple[list[ExecutionCase], list[UnparsedTest]]:
  cases, unparsed = [], []
  for problem in problems:
    problem_cases, problem_unparsed = cases_from_problem(problem)
    cases += problem_cases
    unparsed += problem_unparsed
  return cases, unparsed


def scoring_assert(call: str, prediction: str) -> str:
  """The test that decides whether `prediction` is the value of `call`."""
  return f"assert {call} == {prediction.strip()}"
