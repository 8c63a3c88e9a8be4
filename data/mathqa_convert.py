"""MathQA (Amini et al. 2019) -> MathQA-Python, the way Austin et al. 2021 built it.

Each MathQA problem carries a `linear_formula`, a straight-line program in MathQA's own
operation language, e.g. `divide(n0,n1)|multiply(#0,const_100)|`, where `nK` is the K-th
number in the problem text, `#K` the result of the K-th operation and `const_X` a constant.
We translate it into Python:

    import math            <- only when an operation needs it
    n0 = 5.0               <- every number of the problem text, in order of appearance
    n1 = 31.1
    t0 = n0 / n1           <- one line per operation but the last
    answer = t0 * 100.0    <- the last operation assigns `answer`

and keep a problem only if the program runs and its `answer` is within a relative
tolerance (1%, as in trax's `CreateMathQAInputs`, which produced the paper's data) of the
annotated answer, i.e. the number in the text of the correct option, and the problem's
text was not seen before in the same split. Every drop is counted by reason.

Numbers are found in the text the way trax does it (and the paper's data was made): every
token that looks like a decimal number, with thousands commas removed, in order; MathQA
text is tokenised with spaces, so "3 - 4" yields 3 and 4, not -4.

The meaning of each operation (OPERATION_TEMPLATES) follows MathQA's operation names and
trax's implementation; where trax's Python disagreed with its own evaluator (e.g. it wrote
`a + b / 2` for speed_in_still_water) we use the evident intent, `(a + b) / 2`. Unlike trax
we do not clamp `power` exponents to 5 or `factorial` arguments to 15, and we do not turn
division by zero into 0: such programs are not straight-line arithmetic any more, and a
program that fails is dropped. We also implement the operations trax lacks (`min`,
`surface_cylinder`, ...) and keep problems whose answer is 0.

This is the default, compat="faithful". `convert_split(..., compat="trax")` instead
reproduces trax's programs and drops (data/mathqa_trax.py): the paper's split.
"""
import collections
import dataclasses
import re
from typing import Any, Iterable

from data import mathqa_trax
from data.mathqa_programs import (DEFAULT_RELATIVE_TOLERANCE, NUMBER_PATTERN, ConversionError,
                                  answers_agree, converted_record, extract_numbers,
                                  run_program)

# Operand placeholders are {0}, {1}, {2}; they are always plain names or numbers
# (n0, t3, 100.0, math.pi), so templates need no extra parentheses around them.
OPERATION_TEMPLATES: dict[str, str] = {
    # Arithmetic.
    "add": "{0} + {1}",
    "subtract": "{0} - {1}",
    "multiply": "{0} * {1}",
    "divide": "{0} / {1}",
    "inverse": "1 / {0}",
    "negate": "-{0}",
    "power": "{0} ** {1}",
    "sqrt": "math.sqrt({0})",
    # Base 2 as in trax; on the dev set it agrees with 4 more annotated answers than ln.
    "log": "math.log({0}, 2)",
    "max": "max({0}, {1})",
    "min": "min({0}, {1})",
    "reminder": "{0} % {1}",  # sic: MathQA's name for remainder.
    "round": "round({0})",
    "floor": "math.floor({0})",
    # Integer functions take int() because MathQA numbers are floats and math.factorial,
    # math.comb etc. refuse floats.
    "factorial": "math.factorial(int({0}))",
    "gcd": "math.gcd(int({0}), int({1}))",
    "lcm": "math.lcm(int({0}), int({1}))",
    "choose": "math.comb(int({0}), int({1}))",
    "combination": "math.comb(int({0}), int({1}))",
    "permutation": "math.perm(int({0}), int({1}))",
    "sum_consecutive_number": "{0} * ({0} + 1) / 2",
    "count_interval": "{0} - {1} + 1",
    # Trigonometry (angles in radians, as MathQA's converters produce them).
    "sine": "math.sin({0})",
    "cosine": "math.cos({0})",
    "tangent": "math.tan({0})",
    "radians_to_degree": "{0} * 180 / math.pi",
    "degree_to_radians": "{0} * math.pi / 180",
    # Circles (radius first; angles in degrees).
    "circle_area": "math.pi * {0} ** 2",
    "circumface": "2 * math.pi * {0}",  # sic: circumference.
    "circle_arc": "2 * math.pi * {0} * {1} / 360",
    "semi_circle_perimiter": "math.pi * {0} + 2 * {0}",  # sic.
    "circle_sector_area": "{1} / 360 * math.pi * {0} ** 2",
    # Polygons.
    "rectangle_perimeter": "2 * ({0} + {1})",
    "rectangle_area": "{0} * {1}",
    "square_perimeter": "4 * {0}",
    "square_area": "{0} ** 2",
    "trapezium_area": "{0} * ({1} + {2}) / 2",
    "rhombus_perimeter": "4 * {0}",
    "rhombus_area": "{0} * {1} / 2",
    "quadrilateral_area": "{0} * ({1} + {2}) / 2",
    "side_by_diagonal": "{0} / math.sqrt(2)",
    "diagonal": "math.sqrt({0} ** 2 + {1} ** 2)",
    "square_edge_by_perimeter": "{0} / 4",
    "square_edge_by_area": "math.sqrt({0})",
    "triangle_perimeter": "{0} + {1} + {2}",
    "triangle_area": "{0} * {1} / 2",
    # Heron's formula, written out so that the program stays straight-line.
    "triangle_area_three_edges": (
        "math.sqrt(({0} + {1} + {2}) / 2 * (({0} + {1} + {2}) / 2 - {0})"
        " * (({0} + {1} + {2}) / 2 - {1}) * (({0} + {1} + {2}) / 2 - {2}))"),
    # Solids.
    "volume_cone": "math.pi * {0} ** 2 * {1} / 3",
    "volume_rectangular_prism": "{0} * {1} * {2}",
    "volume_cube": "{0} ** 3",
    "volume_sphere": "4 / 3 * math.pi * {0} ** 3",
    "volume_cylinder": "math.pi * {0} ** 2 * {1}",
    "surface_cone": "math.pi * {0} * ({0} + math.sqrt({0} ** 2 + {1} ** 2))",
    "surface_cylinder": "2 * math.pi * {0} * ({0} + {1})",
    "surface_cube": "6 * {0} ** 2",
    "surface_rectangular_prism": "2 * ({0} * {1} + {0} * {2} + {1} * {2})",
    "surface_sphere": "4 * math.pi * {0} ** 2",
    "cube_edge_by_volume": "{0} ** (1 / 3)",
    # Probability.
    "union_prob": "{0} + {1} - {2}",
    "negate_prob": "1 - {0}",
    # Percentages and prices (rate first, price second).
    "percent": "{0} / 100 * {1}",
    "from_percent": "{0} / 100",
    "to_percent": "{0} * 100",
    "gain_percent": "100 + {0}",
    "loss_percent": "100 - {0}",
    "negate_percent": "100 - {0}",
    "p_after_gain": "(1 + {0} / 100) * {1}",
    "p_after_loss": "(1 - {0} / 100) * {1}",
    "price_after_gain": "(1 + {0} / 100) * {1}",
    "price_after_loss": "(1 - {0} / 100) * {1}",
    "original_price_before_gain": "{1} * 100 / (100 + {0})",
    "original_price_before_loss": "{1} * 100 / (100 - {0})",
    # Motion and work (speed = distance / time; work rates from times).
    "speed": "{0} / {1}",
    "combined_work": "1 / (1 / {0} + 1 / {1})",
    "find_work": "1 / abs(1 / {0} - 1 / {1})",
    "speed_ratio_steel_to_stream": "({0} + {1}) / ({0} - {1})",  # sic: still.
    "speed_in_still_water": "({0} + {1}) / 2",
    "stream_speed": "({0} - {1}) / 2",
}

# Named constants; numeric ones are spelled const_<int>[_<fraction digits>].
NAMED_CONSTANTS = {"const_pi": "math.pi", "const_deg_to_rad": "math.pi / 180"}
_NUMERIC_CONSTANT = re.compile(r"const_(\d+)(?:[_.](\d+))?")
_OPERATION = re.compile(r"^\s*([a-z_]+)\((.*)\)\s*$")
_OPTION = re.compile(r"([a-e])\s*\)\s*")

def constant_source(name: str) -> str:
  """Python source for a MathQA constant: const_pi -> math.pi, const_1_6 -> 1.6."""
  if name in NAMED_CONSTANTS:
    return NAMED_CONSTANTS[name]
  match = _NUMERIC_CONSTANT.fullmatch(name)
  if not match:
    raise ConversionError("unknown constant", name)
  whole, fraction = match.groups()
  return repr(float(f"{whole}.{fraction}" if fraction else whole))


def _operand_source(argument: str, num_numbers: int, num_results: int) -> str:
  argument = argument.strip()
  if argument.startswith("const_"):
    return constant_source(argument)
  if re.fullmatch(r"n\d+", argument):
    if int(argument[1:]) >= num_numbers:
      raise ConversionError("number missing from text",
                            f"{argument} but the text has {num_numbers} numbers")
    return argument
  if re.fullmatch(r"#\d+", argument):
    if int(argument[1:]) >= num_results:
      raise ConversionError("malformed formula", f"{argument} used before it is computed")
    return f"t{argument[1:]}"
  raise ConversionError("malformed formula", f"unknown operand {argument!r}")


def formula_to_program(linear_formula: str, numbers: list[float]) -> str:
  """Translates a linear formula into a straight-line Python program assigning `answer`."""
  operations = [op for op in linear_formula.strip().split("|") if op.strip()]
  if not operations:
    raise ConversionError("malformed formula", "empty formula")
  lines = []
  for index, operation in enumerate(operations):
    match = _OPERATION.match(operation)
    if not match:
      raise ConversionError("malformed formula", f"cannot parse {operation!r}")
    name, arguments = match.group(1), match.group(2).split(",")
    template = OPERATION_TEMPLATES.get(name)
    if template is None:
      raise ConversionError("unknown operation", name)
    arity = 1 + max(int(i) for i in re.findall(r"\{(\d)\}", template))
    if len(arguments) != arity:
      raise ConversionError("malformed formula",
                            f"{name} takes {arity} operands, got {operation!r}")
    operands = [_operand_source(a, len(numbers), index) for a in arguments]
    target = "answer" if index == len(operations) - 1 else f"t{index}"
    lines.append(f"{target} = {template.format(*operands)}")
  header = ["import math"] if any("math." in line for line in lines) else []
  header += [f"n{i} = {number!r}" for i, number in enumerate(numbers)]
  return "\n".join(header + lines) + "\n"


def parse_options(options: str) -> dict[str, str]:
  """Splits `a ) 24 , b ) 120 , ...` (or its `['a ) 24', ...]` variant) into texts.

  Some records double their labels (`a ) a ) 3800 , b ) b ) 4200`) or mislabel the
  second (`e ) d ) 36`); a label directly followed by another label takes that one's text.
  """
  text = options.strip()
  if text.startswith("[") and text.endswith("]"):
    text = text[1:-1]
  starts = list(_OPTION.finditer(text))
  values = []
  for match, following in zip(starts, starts[1:] + [None]):
    end = following.start() if following else len(text)
    values.append(text[match.end():end].strip().strip(",").strip().strip("'\"").strip())
  for i in range(len(values) - 2, -1, -1):
    if not values[i]:
      values[i] = values[i + 1]
  parsed = {}
  for match, value in zip(starts, values):
    parsed.setdefault(match.group(1), value)
  return parsed


def option_value(option_text: str) -> float | None:
  """The number an option states: its first number, divided by the next if `a / b`."""
  match = NUMBER_PATTERN.search(option_text)
  if not match:
    return None
  value = float(match.group().replace(",", ""))
  fraction = re.match(r"\s*/\s*(" + NUMBER_PATTERN.pattern + ")",
                      option_text[match.end():])
  if fraction:
    denominator = float(fraction.group(1).replace(",", ""))
    if denominator != 0:
      value /= denominator
  return value


def annotated_answer(options: str, correct: str) -> float:
  """The numeric value of the correct option; ConversionError if it has none."""
  parsed = parse_options(options)
  if correct not in parsed:
    raise ConversionError("no numeric answer", f"option {correct!r} not in {options!r}")
  value = option_value(parsed[correct])
  if value is None:
    raise ConversionError("no numeric answer", f"option {correct} is {parsed[correct]!r}")
  return value


def convert_problem(raw: dict[str, Any], *,
                    relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE
                    ) -> dict[str, Any]:
  """Converts one raw MathQA record; raises ConversionError when it must be dropped."""
  problem = raw["Problem"].strip()
  numbers = extract_numbers(problem)
  expected = annotated_answer(raw["options"], raw["correct"])
  program = formula_to_program(raw["linear_formula"], numbers)
  actual = run_program(program)
  if not answers_agree(expected, actual, relative_tolerance):
    raise ConversionError("answer mismatch", f"program gives {actual}, option {expected}")
  return converted_record(raw, problem, numbers, program, expected, actual)


@dataclasses.dataclass
class ConversionResult:
  """The kept problems of one raw file (each with its `source_index`) and drop counts."""
  problems: list[dict[str, Any]]
  dropped: collections.Counter

  @property
  def num_raw(self) -> int:
    return len(self.problems) + sum(self.dropped.values())


REQUIRED_RAW_FIELDS = ("Problem", "Rationale", "options", "correct", "annotated_formula",
                       "linear_formula", "category")


# "faithful": operations mean what their names say (this module); "trax": the programs and
# drops of trax's generator, which made the paper's MathQA-Python (data/mathqa_trax.py).
COMPAT_MODES = ("faithful", "trax")


def check_compat(compat: str) -> None:
  if compat not in COMPAT_MODES:
    raise ValueError(f"unknown MathQA compat {compat!r}; expected one of {COMPAT_MODES}")


def convert_split(raw_problems: Iterable[dict[str, Any]], *,
                  relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE,
                  where: str = "MathQA", compat: str = "faithful") -> ConversionResult:
  """Converts a raw split, dropping failures and repeated problem texts, counting why.

  compat="faithful" skips a repeated text; compat="trax" stops at the first one, as the
  paper's notebook did (it read trax's endlessly cycling generator until a text came back),
  counting the rest of the split as "after first repeat".
  """
  check_compat(compat)
  convert = mathqa_trax.convert_problem if compat == "trax" else convert_problem
  raw_problems = list(raw_problems)
  kept, dropped, seen = [], collections.Counter(), set()
  for index, raw in enumerate(raw_problems):
    missing = [f for f in REQUIRED_RAW_FIELDS if not isinstance(raw, dict) or f not in raw]
    if missing:
      raise ValueError(f"{where}[{index}]: missing field(s) {missing}; this is not an "
                       "official MathQA file. Replace it with the official one.")
    try:
      converted = convert(raw, relative_tolerance=relative_tolerance)
    except ConversionError as e:
      dropped[e.reason] += 1
      continue
    if converted["text"] in seen:
      if compat == "trax":
        dropped["after first repeat"] += len(raw_problems) - index
        break
      dropped["duplicate"] += 1
      continue
    seen.add(converted["text"])
    kept.append({"source_index": index, **converted})
  return ConversionResult(kept, dropped)
