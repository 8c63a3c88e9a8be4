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

Scoring a prediction (the model is asked for the call's *value*):

  * The prediction must be a value: text that `ast.literal_eval` accepts (literals,
    containers of literals, negative numbers, `set()`). Anything else (an echo of the call,
    a name from the program, `mock.ANY`, an attribute) is `invalid_prediction` and is never
    executed. In full MBPP 2,919 of the 2,922 expected values are literals; the 3 others are
    `sys.getsizeof(...)` (task 596, train split), documented in NON_LITERAL_EXPECTED.
  * The call is executed after the program and compared with the predicted value by
    `same_value`: Python's `==` with types respected, recursively (bool is not a number;
    int and float compare by value, so `3` matches `3.0`; a list is not a tuple). Any
    spelling of the right value (`[1,2]` or `[1, 2]`) counts.
"""
import ast
import dataclasses
import inspect
from typing import Any, Iterable

INVALID_PREDICTION = "invalid_prediction"
# Expected values in MBPP's asserts that are not literals, so that the dataset's own text is
# not a valid answer (the value it denotes is): {config: {task_id: count}}. Sanitized MBPP
# writes `set([...])` where full MBPP writes a list or a set display.
NON_LITERAL_EXPECTED = {"full": {596: 3}, "sanitized": {2: 3, 7: 3, 111: 3, 140: 3, 232: 3,
                                                         596: 3}}
# Asserts whose expected literal passes only by Python's loose `==` across types, so that
# the dataset's text is *not* the returned value under `same_value`: {task_id: why}.
LOOSE_EQUALITY_ASSERTS = {
    414: "the reference returns 0/1 where the asserts write False/True (True == 1)",
}


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


class InvalidPrediction(ValueError):
  """A prediction that is not a value (not accepted by `ast.literal_eval`)."""


def parse_prediction(prediction: str) -> Any:
  """The value that `prediction` (literal source text) denotes.

  Raises:
    InvalidPrediction: naming why the text is not a value.
  """
  text = prediction.strip()
  if not text:
    raise InvalidPrediction("empty prediction")
  try:
    return ast.literal_eval(text)
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
    reason = f"{type(e).__name__}: {e}".splitlines()[0][:120]
    raise InvalidPrediction(f"not a literal value ({reason})") from e


def same_value(returned, predicted):
  """Whether `returned` (what the call gave) is the value `predicted` (a parsed literal).

  Python's `==` with types respected, recursively through containers:
    * bool is not a number: True matches only True (Python says True == 1 == 1.0);
    * numbers compare by value across int, float and complex (3 matches 3.0: MBPP's own
      asserts write `240` for a returned 240.0 in 54 places);
    * str, bytes and None match only their own kind;
    * a list, tuple, dict or set literal matches that kind or a subclass (a returned
      Counter or defaultdict matches a dict literal, a namedtuple a tuple), and set and
      frozenset match each other (no literal spells a frozenset); elements, keys and values
      are compared the same way.

  This function's source is also what the sandbox runs (see `scoring_assert`), so it is
  self-contained (no annotations, its one import inside).
  """
  import numbers  # pylint: disable=import-outside-toplevel

  def same(got, want):
    if isinstance(want, bool) or isinstance(got, bool):
      return type(got) is bool and type(want) is bool and got == want
    if isinstance(want, (int, float, complex)):
      return isinstance(got, numbers.Number) and got == want
    if want is None:
      return got is None
    if isinstance(want, (str, bytes)):
      return isinstance(got, type(want)) and got == want
    if isinstance(want, (list, tuple)):
      return (isinstance(got, type(want)) and len(got) == len(want)
              and all(same(g, w) for g, w in zip(got, want)))
    if isinstance(want, (set, frozenset)):
      if not isinstance(got, (set, frozenset)) or len(got) != len(want):
        return False
      stored = {w: w for w in want}  # Looks up want's own element equal to each of got's.
      return all(g in stored and same(g, stored[g]) for g in got)
    if isinstance(want, dict):
      if not isinstance(got, dict) or len(got) != len(want):
        return False
      stored = {w: w for w in want}
      return all(k in stored and same(k, stored[k]) and same(v, want[stored[k]])
                 for k, v in got.items())
    return False  # literal_eval yields no other type.
  return same(returned, predicted)


def _sandbox_source(function, name: str) -> str:
  """`function`'s source without its docstring, renamed to `name` (compiled per program)."""
  definition = ast.parse(inspect.getsource(function)).body[0]
  definition.name = name
  del definition.body[0]  # The docstring.
  return ast.unparse(definition) + "\n"


# In the sandbox the comparison runs in the program's namespace under a name no program uses,
# after the call has been evaluated (so the program's own names are all as it left them).
_SANDBOX_SAME_VALUE = "__same_value__"
_SAME_VALUE_SOURCE = _sandbox_source(same_value, _SANDBOX_SAME_VALUE)
_MESSAGE_REPR_CAP = 200


def scoring_assert(call: str, prediction: str) -> str:
  """The test that decides whether `prediction` is the value of `call`.

  It evaluates the call once, then checks it with `same_value` against the prediction's own
  text (a literal, so evaluating it runs no code); the assertion message says what the call
  returned.

  Raises:
    InvalidPrediction: `prediction` is not a value; it must not be run.
  """
  parse_prediction(prediction)
  # Parenthesised on lines of its own, the text denotes what literal_eval parsed: `1, 2` is
  # one tuple (not two arguments), and a trailing `# comment` cannot swallow the `)`.
  return (f"__returned__ = {call}\n"
          f"__predicted__ = (\n{prediction.strip()}\n)\n"
          f"{_SAME_VALUE_SOURCE}"
          f"assert {_SANDBOX_SAME_VALUE}(__returned__, __predicted__), "
          f"'returned ' + repr(__returned__)[:{_MESSAGE_REPR_CAP}]\n")
