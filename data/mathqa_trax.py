"""MathQA -> Python exactly as trax's generator did it: the paper's MathQA-Python.

Austin et al. 2021 made MathQA-Python with google/trax's
`trax/examples/MathQA_Python_generation_notebook.ipynb`: it runs
`trax.data.CreateMathQAInputs(cumulative=False, python_code=True, full_dict=True)` from
`trax/data/tf_inputs.py` and reads the generator until the first repeated problem text.
The notebook pins trax commit 220a623, which is not on trax's master branch; the MathQA code
on master the day the notebook was added (b20e4921, 2021-07-15) is that of commit 79680633,
and later changes (df631ba2, 2024: `scipy.gcd` -> `np.gcd`) change no value. Run on the
official dev/test files, that code keeps 2,822 / 1,883 problems: exactly the paper's numbers.
This module re-implements it; tests/test_mathqa_programs.py checks it program for program
against golden values recorded from trax's own code run on those files. Per problem, trax:

  1. reads the annotated answer its own way (`process_single_mathqa_example`): the first
     number after the first `<correct> )` in the options, even one in a later option, divided
     by the next number if a `/` sits where it expects one (`_trax_answer`);
  2. evaluates the formula with its own operations (`compute_result`); an operation it lacks
     (`min`, `surface_cylinder`) gives None;
  3. drops the problem if the answer or the result is 0 or None (`if not answer_num or not
     python_result[-1]`), or if they differ by more than 1% (`math.isclose(rel_tol=0.01)`);
  4. writes the program (`single_op_to_python_command`, `compute_program`), runs it, and
     keeps the problem only if the program's `answer` is within 1% of the annotated one too.
     Programs differ from the evaluator of step 2 where trax's two implementations disagree:
     `speed_in_still_water` / `stream_speed` are written `a + b / 2` / `a - b / 2`, and
     division by zero is 0 in step 2 but an error in the program.

Operations as trax implements them differ from their intended meaning (data/mathqa_programs.py
follows the intent): exponents are capped at 5 (`x**min(y, 5)`), factorial arguments at 15,
`log` and `sqrt` clamp their argument, `combined_work`/`find_work` take each operand as a rate
or a time, whichever is below 1, and `original_price_before_loss` adds 1e-5 to the divisor.

Where trax would crash (an exception in step 2 or 4, or the notebook's check that program
and formula agree to 7 decimals) we drop the problem and count why; none of this happens on
the official dev/test/challenge files (nor does the guard of mathqa_programs.run_program,
which refuses factorials of more than 10,000: trax caps `factorial` at 15 but not
`permutation`). Two deliberate differences in the program text:
programs end with a newline (the project's prompt format), and `gcd`/`lcm` are written
`math.gcd`/`math.lcm`: trax wrote `scipy.gcd`/`scipy.lcm`, NumPy aliases that SciPy removed
(1.12), so trax's text no longer runs; the values are the same.
"""
import math
import re
from typing import Any

from data import mathqa_programs
from data.mathqa_programs import ConversionError

# trax's number pattern (tf_inputs.compute_nums), used for texts, options and operands.
_NUMBER = re.compile(r"[-+]?[.]?[\d]+(?:,\d\d\d)*[\.]?\d*(?:[eE][-+]?\d+)?")

# tf_inputs.single_op_to_python_command, template for template ({k} = k-th operand), with
# trax's spacing and comments: the paper's targets are these exact strings.
PROGRAM_TEMPLATES: dict[str, str] = {
    "add": "{0} + {1}",
    "circle_arc": "{0} / 360 * math.pi * 2 * {1}",
    "circle_area": "math.pi * {0}**2",
    "circle_sector_area": "{1} / 360 * math.pi * ({0}**2)",
    "circumface": "2 * math.pi * {0}",
    "choose": "scipy.special.comb({0}, {1})",
    "cosine": "math.cos({0})",
    "cube_edge_by_volume": "{0}**(1 / 3)",
    "combined_work": "1 / (min({0}, 1 / {0}) + min({1}, 1 / {1}))",
    "count_interval": "{0} - {1} + 1",
    "diagonal": "math.sqrt({0}**2 + {1}**2)",
    # trax tests `num_args[1] != 0` here, but on operand *names* ('n1', 't0'), which are never
    # 0: the program always divides.
    "divide": "{0} / {1}",
    "speed": "{0} / {1}",
    "factorial": "math.factorial(min(15, int({0})))",
    "floor": "math.floor({0})",
    "find_work": ("1 / (max(min({0}, 1 / {0}), min({1}, 1 / {1})) - min(min({0}, 1 / {0}), "
                  "min({1}, 1 / {1})))"),
    "from_percent": "{0} / 100",
    "gain_percent": "100 + {0}",
    # trax: scipy.gcd / scipy.lcm (NumPy's, re-exported by SciPy until 1.12); same values.
    "gcd": "math.gcd(int({0}), int({1}))",
    "inverse": "1 / {0}",  # as for divide, never the `0` branch.
    "lcm": "math.lcm(int({0}), int({1}))",
    "log": "math.log(max(1e-5, {0}), 2)",
    "loss_percent": "100 - {0}",
    "max": "max({0},{1})",
    "multiply": "{0} * {1}",
    "negate_percent": "100 - {0}",
    "negate": "-{0}",
    "original_price_before_loss": "{1} * 100 / (100 + 1e-5 - {0})  # original price before loss",
    "original_price_before_gain": "{1} * 100 / (100 + {0})  # original_price_before gain",
    "permutation": ("math.factorial(int(max({0}, {1}))) / math.factorial(int(max({0}, {1}) "
                    "- min({0}, {1})))  # find all permutations"),
    "power": "{0}**min({1}, 5)",
    "percent": "{0} / 100 * {1}",
    "price_after_gain": "(1 + {0} / 100) * {1}",
    "p_after_gain": "(1 + {0} / 100) * {1}",
    # trax tests `op_name == 'price_after_loss'` twice, so p_after_loss has no implementation.
    "price_after_loss": "(1 - {0} / 100) * {1}",
    "quadrilateral_area": "{0} * ({1} + {2}) / 2  # quadrilateral area",
    "reminder": "{0} % {1}",
    "rectangle_area": "{0} * {1}  # area of rectangle",
    "rectangle_perimeter": "2 * ({0} + {1})  # perimetere of rectangle",
    "rhombus_area": "{0} * {1} / 2",
    "sine": "math.sin({0})",
    "sqrt": "math.sqrt(max(0, {0}))",
    "subtract": "{0} - {1}",
    "square_edge_by_perimeter": "{0} / 4. # square edge given perimeter",
    "square_edge_by_area": "math.sqrt({0})  # square edge given area",
    "square_area": "{0}**2",
    "surface_cube": "6 * {0}**2  # surface of a cube",
    "surface_rectangular_prism": ("2 * ({0} * {1} + {0} * {2} + {1} * {2})  # surface of a "
                                  "rectangular prism"),
    "semi_circle_perimiter": "math.pi * {0} + 2 * {0}  # perimeter of a semi-circle",
    "square_perimeter": "4 * {0}",
    "rhombus_perimeter": "4 * {0}",
    "surface_sphere": "4 * math.pi * {0}**2",
    "speed_ratio_steel_to_stream": "({0} + {1}) / ({0} - {1})",
    # sic: trax's program text (its evaluator, FORMULA_TEMPLATES, has the parentheses).
    "speed_in_still_water": "{0} + {1} / 2",
    "stream_speed": "{0} - {1} / 2",
    "trapezium_area": "{0} * ({1} + {2}) / 2",
    "triangle_area": "{0} * {1} / 2",
    "triangle_perimeter": "{0} + {1} + {2}  # perimeter of a triangle",
    "triangle_area_three_edges": ("(lambda s, a, b, c: math.sqrt(max(0, s * (s - a) * (s - b) "
                                  "* (s - c))))(({0} + {1} + {2}) / 2, {0}, {1}, {2})  "
                                  "# Heron's formula"),
    "union_prob": "{0} + {1} - {2}",
    "negate_prob": "1 - {0}",
    "volume_cube": "{0}**3",
    "volume_cone": "math.pi * {0}**2 * {1} / 3",
    "volume_cylinder": "math.pi * {0}**2 * {1}",
    "volume_rectangular_prism": "{0} * {1} * {2}",
    "volume_sphere": "4 / 3 * math.pi * {0}**3",
}
# tf_inputs.compute_single_result, trax's evaluator of the formula (step 2), computes the same
# expressions in the same order except here. 12 of MathQA's 77 operations have neither (the
# official dev/test files use two of them, `min` and `surface_cylinder`): trax's evaluator
# gives None for them, so problems using them are dropped ("unknown operation").
FORMULA_TEMPLATES: dict[str, str] = {
    **PROGRAM_TEMPLATES,
    "speed_in_still_water": "({0} + {1}) / 2",
    "stream_speed": "({0} - {1}) / 2",
    "divide": "({0} / {1} if {1} != 0 else 0)",
    "speed": "({0} / {1} if {1} != 0 else 0)",
    "inverse": "(1 / {0} if {0} != 0 else 0)",
}
# The notebook asserts `np.testing.assert_almost_equal(program answer, formula answer)`.
_NOTEBOOK_DECIMALS = 7


def _trax_answer(options: str, correct: str) -> float:
  """tf_inputs.process_single_mathqa_example's reading of the correct option, quirks kept."""
  index = options.find(f"{correct} )")  # -1 (not found) reads from the last character.
  numbers = _NUMBER.findall(options[index:])
  if not numbers:
    raise ConversionError("no numeric answer", f"no number after {correct!r} in {options!r}")
  answer = float(numbers[0].replace(",", ""))
  # A fraction only where `N.0 / D` would put its slash: `c ) 1 / 2` yes, `c ) 1.5 / 2` no.
  end = index + len(str(answer)) + 3
  if end < len(options) and options[end] == "/":
    denominator = _NUMBER.findall(options[end:])
    if not denominator or float(denominator[0].replace(",", "")) == 0:
      raise ConversionError("no numeric answer", f"bad fraction in {options!r}")
    answer /= float(denominator[0].replace(",", ""))
  return answer


def _trax_constant(name: str) -> float:
  """tf_inputs.compute_program's constants: const_3_6 -> 3 + float('0.6')."""
  if name == "const_pi":
    return math.pi
  if name == "const_deg_to_rad":
    return math.pi / 180
  parts = _NUMBER.findall(name)
  if not parts:
    raise ConversionError("unknown constant", name)
  if len(parts) == 1:
    return float(parts[0])
  return float(parts[0]) + float("0." + parts[1])


def _operand_index(argument: str) -> int:
  """K of `#K` or `nK`: trax's int(first number in the operand)."""
  digits = _NUMBER.findall(argument)
  if not digits or not digits[0].isdigit():
    raise ConversionError("malformed formula", f"operand {argument!r} has no index")
  return int(digits[0])


def _operations(linear_formula: str, num_numbers: int) -> list[tuple[str, list[str]]]:
  """(name, operand sources) per operation, parsed the way tf_inputs.compute_program does."""
  operations = linear_formula.split("|")
  if not operations[-1]:  # tf_inputs.compute_ops drops one trailing empty element.
    operations = operations[:-1]
  if not operations:
    raise ConversionError("malformed formula", "empty formula")
  parsed = []
  for index, operation in enumerate(operations):
    name = operation.split("(")[0]
    if name not in PROGRAM_TEMPLATES:
      raise ConversionError("unknown operation", name)
    operands = []
    for argument in operation[operation.find("(") + 1:operation.find(")")].split(","):
      if argument.startswith("#"):
        position = _operand_index(argument)
        if position >= index:
          raise ConversionError("malformed formula", f"{argument} used before it is computed")
        operands.append(f"t{position}")
      elif argument.startswith("n"):
        if _operand_index(argument) >= num_numbers:
          raise ConversionError("number missing from text",
                                f"{argument} but the text has {num_numbers} numbers")
        operands.append(argument)
      elif argument.startswith("c"):
        operands.append(str(_trax_constant(argument)))
      # trax skips any other operand silently; the template then lacks one (below).
    arity = 1 + max(int(i) for i in re.findall(r"\{(\d)\}", PROGRAM_TEMPLATES[name]))
    if len(operands) != arity:
      raise ConversionError("malformed formula",
                            f"{name} takes {arity} operands, got {operation!r}")
    parsed.append((name, operands))
  return parsed


def _commands(operations: list[tuple[str, list[str]]], templates: dict[str, str]
              ) -> list[str]:
  """tf_inputs.compute_program: `tK = <operation K>`."""
  return [f"t{i} = {templates[name].format(*operands)}"
          for i, (name, operands) in enumerate(operations)]


def _header(commands: list[str], numbers: list[float]) -> str:
  header = "import math\n" if any("math" in c for c in commands) else ""
  header += "import scipy\n" if any("scipy" in c for c in commands) else ""
  return header + "".join(f"n{i} = {number}\n" for i, number in enumerate(numbers))


def trax_program(operations: list[tuple[str, list[str]]], numbers: list[float]) -> str:
  """CreateMathQAInputs' program text: imports, `nK = ...`, `tK = ...`, `answer =...`."""
  commands = _commands(operations, PROGRAM_TEMPLATES)
  # sic: a one-operation program keeps the empty line that joining no commands leaves.
  return (_header(commands, numbers) + "\n".join(commands[:-1]) + "\nanswer ="
          + commands[-1].split("=")[1] + "\n")


def formula_value(operations: list[tuple[str, list[str]]], numbers: list[float]) -> float:
  """What tf_inputs.compute_result computes for the formula (step 2)."""
  commands = _commands(operations, FORMULA_TEMPLATES)
  return run_program(_header(commands, numbers) + "\n".join(commands)
                     + f"\nanswer = t{len(commands) - 1}\n")


def run_program(program: str) -> float:
  """Runs a trax-style program (which may use scipy.special.comb) and returns `answer`."""
  import scipy.special  # pylint: disable=import-outside-toplevel  (only `choose` needs it)
  return mathqa_programs.run_program(program, extra_modules={"scipy": scipy})


def convert_problem(raw: dict[str, Any], *,
                    relative_tolerance: float = mathqa_programs.DEFAULT_RELATIVE_TOLERANCE
                    ) -> dict[str, Any]:
  """One raw MathQA record the way trax converts it; ConversionError when trax drops it."""
  problem = raw["Problem"]  # trax does not strip it (MathQA's texts need no stripping).
  numbers = mathqa_programs.extract_numbers(problem)
  expected = _trax_answer(raw["options"], raw["correct"])
  operations = _operations(raw["linear_formula"], len(numbers))
  formula_answer = formula_value(operations, numbers)
  if not expected:
    raise ConversionError("zero answer", "the correct option is 0")
  if not formula_answer:
    raise ConversionError("zero result", "the formula computes 0")
  if not mathqa_programs.answers_agree(expected, formula_answer, relative_tolerance):
    raise ConversionError("answer mismatch",
                          f"formula gives {formula_answer}, option {expected}")
  program = trax_program(operations, numbers)
  actual = run_program(program)
  if not mathqa_programs.answers_agree(expected, actual, relative_tolerance):
    raise ConversionError("program answer mismatch",
                          f"program gives {actual}, formula {formula_answer}, option {expected}")
  if abs(actual - formula_answer) >= 1.5 * 10 ** -_NOTEBOOK_DECIMALS:
    raise ConversionError("program differs from formula",
                          f"program gives {actual}, formula {formula_answer}")
  return mathqa_programs.converted_record(raw, problem, numbers, program, expected, actual)
