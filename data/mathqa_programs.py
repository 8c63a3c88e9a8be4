"""What both MathQA conversions (data/mathqa_convert.py, data/mathqa_trax.py) share: the
numbers of a problem text, running a converted program, agreeing answers, the error that
says why a problem is dropped."""
import math
import re
from typing import Any

# A decimal number, optionally with thousands commas, a sign, a leading dot or exponent.
NUMBER_PATTERN = re.compile(r"[-+]?\.?\d+(?:,\d\d\d)*\.?\d*(?:[eE][-+]?\d+)?")

DEFAULT_RELATIVE_TOLERANCE = 0.01
# Guards for evaluating converted programs at build time: beyond these an operand is not
# a quantity of a word problem, and factorial/comb of it would stall the build.
_MAX_COMBINATORIAL_ARGUMENT = 10_000


class ConversionError(ValueError):
  """A MathQA problem cannot be turned into a Python program; `reason` says why."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason


def extract_numbers(problem: str) -> list[float]:
  """The numbers of a problem text, in order of appearance, thousands commas removed."""
  return [float(token.replace(",", "")) for token in NUMBER_PATTERN.findall(problem)]


def _guarded(function):
  def call(*args):
    if any(abs(a) > _MAX_COMBINATORIAL_ARGUMENT for a in args):
      raise OverflowError(f"{function.__name__}{args} is too large")
    return function(*args)
  return call


class _GuardedMath:
  """`math` as seen by build-time evaluation, refusing runaway combinatorics."""
  factorial = staticmethod(_guarded(math.factorial))
  comb = staticmethod(_guarded(math.comb))
  perm = staticmethod(_guarded(math.perm))

  def __getattr__(self, name: str) -> Any:
    return getattr(math, name)


def run_program(program: str, *, extra_modules: dict[str, Any] | None = None) -> float:
  """Runs a converted program (our own straight-line arithmetic) and returns `answer`.

  Raises ConversionError("program error", ...) if it fails or `answer` is not real.
  Running it in-process is safe because the program is made only of OPERATION_TEMPLATES
  (or data/mathqa_trax.py's, which also use `extra_modules`, i.e. scipy).
  """
  namespace: dict[str, Any] = {}
  modules = {"math": _GuardedMath(), **(extra_modules or {})}
  source = program
  for name in modules:  # the program's imports, given here instead of importable.
    source = source.replace(f"import {name}\n", "", 1)
  try:
    exec(source, {**modules, "__builtins__": {  # noqa: S102
        "max": max, "min": min, "int": int, "round": round, "abs": abs}}, namespace)
  except (ArithmeticError, ValueError, TypeError) as e:
    raise ConversionError("program error", f"{type(e).__name__}: {e}") from e
  answer = namespace.get("answer")
  if isinstance(answer, bool) or not isinstance(answer, (int, float)):
    raise ConversionError("program error", f"answer is {answer!r}")
  if not math.isfinite(answer):
    raise ConversionError("program error", f"answer is {answer!r}")
  return float(answer)


def problem_with_numbers(problem: str, numbers: list[float]) -> str:
  """The model's input text: the problem followed by ` n0 = 5.0 n1 = 31.1`."""
  return problem + "".join(f" n{i} = {number!r}" for i, number in enumerate(numbers))


def answers_agree(expected: float, actual: float, relative_tolerance: float) -> bool:
  return math.isclose(expected, actual, rel_tol=relative_tolerance)


def converted_record(raw: dict[str, Any], problem: str, numbers: list[float], program: str,
                     expected: float, actual: float) -> dict[str, Any]:
  """A kept problem: the model's input text, its program and answers, the raw fields kept."""
  return {
      "problem": problem,
      "text": problem_with_numbers(problem, numbers),
      "numbers": numbers,
      "program": program,
      "answer": expected,            # the value of the correct option
      "program_answer": actual,      # what the program computes (within tolerance of it)
      "options": raw["options"],
      "correct": raw["correct"],
      "linear_formula": raw["linear_formula"],
      "annotated_formula": raw["annotated_formula"],
      "rationale": raw["Rationale"],
      "category": raw["category"],
  }
