"""MathQA -> Python conversion, on hand-made problems and the real dev/test files."""
import functools
import hashlib
import json
import math
import pathlib

import pytest
import scipy

from data import mathqa
from data import mathqa_convert as mc
from data import mathqa_trax
from data import tasks
from tests.conftest import SHARED_DATA_DIR


def test_numbers_in_order_with_thousands_commas_removed():
  assert mc.extract_numbers("a sum of rs . 4,000 at 12.5 % for 2 years , 3 - 4 .5") == [
      4000.0, 12.5, 2.0, 3.0, 4.0, 0.5]


@pytest.mark.parametrize("name,value", [
    ("const_pi", math.pi), ("const_deg_to_rad", math.pi / 180), ("const_100", 100.0),
    ("const_1_6", 1.6), ("const_0_2778", 0.2778), ("const_2.0", 2.0)])
def test_constants(name, value):
  assert eval(mc.constant_source(name), {"math": math}) == pytest.approx(value)  # noqa: S307


def test_every_listed_constant_and_operation_is_known(shared_data_dir):
  raw = shared_data_dir / "mathqa" / "raw"
  for line in (raw / "constant_list.txt").read_text().split():
    mc.constant_source(line.lower())
  operations = set((raw / "operation_list.txt").read_text().split())
  assert len(operations) == 77
  assert operations <= set(mc.OPERATION_TEMPLATES)


def test_program_is_straight_line_and_assigns_answer():
  program = mc.formula_to_program(
      "divide(n0,n1)|multiply(#0,const_100)|circle_area(#1)|", [5.0, 31.1])
  assert program == ("import math\n"
                     "n0 = 5.0\n"
                     "n1 = 31.1\n"
                     "t0 = n0 / n1\n"
                     "t1 = t0 * 100.0\n"
                     "answer = math.pi * t1 ** 2\n")
  assert mc.run_program(program) == pytest.approx(math.pi * (500 / 31.1) ** 2)


@pytest.mark.parametrize("formula,numbers,reason", [
    ("add(n0,n3)", [1.0, 2.0], "number missing from text"),
    ("add(n0,#1)", [1.0, 2.0], "malformed formula"),
    ("add(n0)", [1.0], "malformed formula"),
    ("teleport(n0)", [1.0], "unknown operation"),
    ("add(n0,const_tau)", [1.0], "unknown constant"),
])
def test_bad_formulas_are_named(formula, numbers, reason):
  with pytest.raises(mc.ConversionError) as error:
    mc.formula_to_program(formula, numbers)
  assert error.value.reason == reason


def test_failing_or_runaway_programs_are_errors_not_hangs():
  for program in ("answer = 1.0 / 0.0\n", "answer = math.factorial(int(1e7))\n",
                  "answer = (-1.0) ** 0.5\n", "answer = 10.0 ** 400.0\n"):
    with pytest.raises(mc.ConversionError, match="program error"):
      mc.run_program(program)


@pytest.mark.parametrize("options,correct,value", [
    ("a ) 24 , b ) 120 , c ) 625 , d ) 720 , e ) 1024", "c", 625.0),
    ("a ) 1 / 2 , b ) 31 / 36 , c ) 49 / 54", "b", 31 / 36),
    ("a ) rs . 4,500 , b ) rs . 5,000", "a", 4500.0),
    ("['a ) 4', 'b ) 4 π', 'c ) 16', 'd ) 8 π', 'e ) 16']", "d", 8.0),
    # Doubled and mislabelled option labels occur in the raw files.
    ("a ) a ) 3800 , b ) b ) 4200 , e ) e ) 4600", "e", 4600.0),
    ("a ) a ) 11 , d ) d ) 29 , e ) d ) 36", "e", 36.0),
])
def test_annotated_answer_is_the_correct_options_number(options, correct, value):
  assert mc.annotated_answer(options, correct) == pytest.approx(value)


def test_option_without_number_is_dropped():
  with pytest.raises(mc.ConversionError, match="no numeric answer"):
    mc.annotated_answer("a ) 2 , b ) none of these", "b")


def _raw(problem, formula, options="a ) 3 , b ) 4", correct="a"):
  return {"Problem": problem, "Rationale": "", "options": options, "correct": correct,
          "annotated_formula": "", "linear_formula": formula, "category": "general"}


def test_tolerance_and_duplicates_are_counted():
  result = mc.convert_split([
      _raw("add 1 and 2 .", "add(n0,n1)|"),                   # 3: kept
      _raw("add 1 and 2 .", "add(n0,n1)|"),                   # repeat: dropped
      _raw("add 1 and 2.02 .", "add(n0,n1)|"),                # 3.02 within 1%: kept
      _raw("add 1 and 2.2 .", "add(n0,n1)|"),                 # 3.2: mismatch
      _raw("divide 1 by 0 .", "divide(n0,n1)|"),              # ZeroDivisionError
  ])
  assert [p["source_index"] for p in result.problems] == [0, 2]
  assert dict(result.dropped) == {"duplicate": 1, "answer mismatch": 1,
                                  "program error": 1}
  assert result.problems[0]["text"] == "add 1 and 2 . n0 = 1.0 n1 = 2.0"
  assert result.num_raw == 5


# Pinned counts of the real files, per compat mode. "trax" is the paper's MathQA-Python
# (data/mathqa.py's PAPER_SPLIT_SIZES: dev 2,822, test 1,883).
EXPECTED_COUNTS = {
    ("faithful", "dev.json"): (4475, 2839, {"answer mismatch": 1613, "no numeric answer": 21,
                                            "program error": 2}),
    ("faithful", "test.json"): (2985, 1893, {"answer mismatch": 1069, "no numeric answer": 15,
                                             "program error": 8}),
    ("trax", "dev.json"): (4475, 2822, {"answer mismatch": 1597, "zero answer": 23,
                                        "no numeric answer": 17, "zero result": 14,
                                        "unknown operation": 2}),
    ("trax", "test.json"): (2985, 1883, {"answer mismatch": 1053, "zero answer": 17,
                                         "no numeric answer": 13, "zero result": 15,
                                         "unknown operation": 4}),
}


@functools.cache
def _raw_split(name: str) -> tuple[dict, ...]:
  return tuple(json.loads((SHARED_DATA_DIR / "mathqa" / "raw" / name).read_text()))


@functools.cache
def _converted(compat: str, name: str) -> mc.ConversionResult:
  return mc.convert_split(_raw_split(name), compat=compat)


@pytest.mark.parametrize("compat,name", list(EXPECTED_COUNTS))
def test_real_split_counts(shared_data_dir, compat, name):
  result = _converted(compat, name)
  num_raw, num_kept, dropped = EXPECTED_COUNTS[(compat, name)]
  assert (result.num_raw, len(result.problems), dict(result.dropped)) == (
      num_raw, num_kept, dropped)
  if compat == "trax":
    split = {"dev.json": "validation", "test.json": "test"}[name]
    assert len(result.problems) == mathqa.PAPER_SPLIT_SIZES[split]
  # Every kept program reproduces its recorded answer and the annotated one.
  run = mc.run_program if compat == "faithful" else mathqa_trax.run_program
  for problem in result.problems:
    assert run(problem["program"]) == problem["program_answer"]
    assert math.isclose(problem["program_answer"], problem["answer"], rel_tol=0.01)
    assert problem["program"].splitlines()[-1].startswith("answer = ")


def test_unknown_compat_is_refused():
  with pytest.raises(ValueError, match=r"unknown MathQA compat 'paper'; expected one of "
                                       r"\('faithful', 'trax'\)"):
    mc.convert_split([], compat="paper")


# --- compat="trax": trax's generator, which made the paper's data ------------------------

# Golden values from trax's own MathQA code (google/trax trax/data/tf_inputs.py at commit
# 79680633, the generator of the paper's data), run the way the paper's notebook ran it on
# ../shared/data/mathqa/raw, with SciPy's old gcd/lcm aliases restored: per split, the count
# and the sha256 of its problems' [text, formula, repr(answer), program] as JSON, with each
# program's import lines removed and `scipy.gcd`/`scipy.lcm` written `math.gcd`/`math.lcm`
# (see data/mathqa_trax.py for why); `gcd_lcm` counts the programs that rewrite touches.
TRAX_SPLITS = {
    "dev.json": (2822, 12, "31dad553a4673ecba80e8e323eb25283f63b3223dc1a05e1e57a196c1b8948a0"),
    "test.json": (1883, 20, "126d6c8aa3d933602eb1e89f746e8d5c4d25a1d33195d7e3f73afc1ee5a6d05b"),
    "challenge_test.json": (403, 5,
                            "1c1619f5a6ad39421bd06dcdd7c0d37606a045c0c3a1103577a56f20dd1cd280"),
}
# Per MathQA operation: the program trax writes for operands x0, x1, x2 (None: trax has no
# implementation) and the value its formula evaluator gives on each of TRAX_OPERAND_SETS
# (repr of the float, an exception name, or None).
TRAX_OPERATIONS = json.loads((pathlib.Path(__file__).parent / "golden" /
                              "mathqa_trax_operations.json").read_text())
# Operands above and below 1 (combined_work, find_work) and 0 (trax's safe divisions).
TRAX_OPERAND_SETS = [[7.0, 3.0, 5.0], [4.0, 0.5, 2.0], [0.25, 0.0, 2.0], [0.0, 0.5, 3.0]]


def _import_free(program: str) -> str:
  return "".join(line for line in program.splitlines(keepends=True)
                 if line not in ("import math\n", "import scipy\n"))


@pytest.mark.parametrize("name", list(TRAX_SPLITS))
def test_trax_compat_matches_trax_program_for_program(shared_data_dir, name):
  num_problems, num_gcd_lcm, sha256 = TRAX_SPLITS[name]
  ours = _converted("trax", name).problems
  rows = [["# " + p["text"], p["linear_formula"], repr(p["program_answer"]),
           _import_free(p["program"])] for p in ours]
  assert len(rows) == num_problems
  assert sum("math.gcd(" in p["program"] or "math.lcm(" in p["program"]
             for p in ours) == num_gcd_lcm
  assert hashlib.sha256(json.dumps(rows).encode()).hexdigest() == sha256


def test_trax_operations_are_traxs_for_every_mathqa_operation(shared_data_dir):
  """Each template against trax's own two implementations, used or not by dev/test."""
  operations = set((shared_data_dir / "mathqa" / "raw" / "operation_list.txt").read_text()
                   .split()) | set(mathqa_trax.PROGRAM_TEMPLATES)
  assert operations == set(TRAX_OPERATIONS)
  names = ["x0", "x1", "x2"]
  for operation in sorted(operations):
    golden = TRAX_OPERATIONS[operation]
    if operation not in mathqa_trax.PROGRAM_TEMPLATES:
      assert golden["program"] is None, operation
      continue
    assert mathqa_trax.PROGRAM_TEMPLATES[operation].format(*names) == golden["program"], operation
    formula = mathqa_trax.FORMULA_TEMPLATES[operation].format(*names)
    for values, expected in zip(TRAX_OPERAND_SETS, golden["values"]):
      scope = {"math": math, "scipy": scipy, **dict(zip(names, values))}
      assert _value_or_error(lambda: eval(formula, scope)) == expected, (  # noqa: S307
          operation, values)
  assert len(operations - set(mathqa_trax.PROGRAM_TEMPLATES)) == 12


def _value_or_error(compute):
  try:
    value = compute()
  except (ArithmeticError, ValueError) as e:
    return type(e).__name__
  return None if value is None else repr(float(value))


@pytest.mark.parametrize("name", ["dev.json", "test.json"])
def test_trax_programs_run_standalone_and_pass_the_eval_assert(shared_data_dir, name):
  """What trax accepted: `answer` within 1% of the correct option, here in plain Python."""
  for problem in _converted("trax", name).problems:
    namespace = {}
    exec(problem["program"], namespace)  # noqa: S102  (our own straight-line programs)
    assert namespace["answer"] == problem["program_answer"]
    assert math.isclose(problem["answer"], namespace["answer"], rel_tol=0.01)
    exec(tasks.mathqa_answer_test(problem["answer"]), namespace)  # noqa: S102


def _outcome(raw, compat):
  """The converted problem, or the reason it is dropped."""
  result = mc.convert_split([raw], compat=compat)
  return result.problems[0] if result.problems else next(iter(result.dropped))


def test_trax_caps_exponents_at_5():
  two_to_the_8 = _raw("2 to the 8 ?", "power(n0,n1)|", "a ) 32 , b ) 256", "a")
  kept = _outcome(two_to_the_8, "trax")
  assert kept["program"] == "n0 = 2.0\nn1 = 8.0\n\nanswer = n0**min(n1, 5)\n"
  assert kept["program_answer"] == 32.0
  assert _outcome(two_to_the_8, "faithful") == "answer mismatch"
  assert _outcome({**two_to_the_8, "correct": "b"}, "faithful")["program_answer"] == 256.0
  assert _outcome({**two_to_the_8, "correct": "b"}, "trax") == "answer mismatch"


@pytest.mark.parametrize("operation,value,trax_text,faithful_text", [
    ("speed_in_still_water", 6.0, "n0 + n1 / 2", "(n0 + n1) / 2"),
    ("stream_speed", 4.0, "n0 - n1 / 2", "(n0 - n1) / 2")])
def test_trax_writes_speed_formulas_without_parentheses(operation, value, trax_text,
                                                        faithful_text):
  # trax's evaluator computes (10 + 2) / 2 = 6 and (10 - 2) / 2 = 4, and so accepts the
  # formula, but the program it writes computes 11 (or 9) and fails its own second check.
  numbers = [10.0, 2.0]
  operations = mathqa_trax._operations(f"{operation}(n0,n1)|", len(numbers))
  assert mathqa_trax.formula_value(operations, numbers) == value
  assert mathqa_trax.trax_program(operations, numbers).endswith(f"answer = {trax_text}\n")
  raw = _raw("speeds 10 and 2 .", f"{operation}(n0,n1)|", f"a ) {value:g} , b ) 1", "a")
  assert _outcome(raw, "trax") == "program answer mismatch"
  assert _outcome(raw, "faithful")["program"].endswith(f"answer = {faithful_text}\n")


def test_trax_drops_zero_answers_and_zero_results():
  zero = _raw("3 minus 3 ?", "subtract(n0,n1)|", "a ) 0 , b ) 1", "a")
  assert _outcome(zero, "trax") == "zero answer"
  assert _outcome(zero, "faithful")["program_answer"] == 0.0
  # trax's evaluator divides by zero as 0; its program raises (trax would crash there).
  assert _outcome(_raw("1 by 0 ?", "divide(n0,n1)|", "a ) 1 , b ) 2"), "trax") == "zero result"
  by_zero_then_add = _raw("1 by 0 , plus 3 ?", "divide(n0,n1)|add(#0,n2)|", "a ) 3 , b ) 4")
  assert _outcome(by_zero_then_add, "trax") == "program error"


@pytest.mark.parametrize("problem,formula,options,value", [
    ("the smaller of 3 and 4 ?", "min(n0,n1)|", "a ) 3 , b ) 4", 3.0),
    ("radius 1 , height 1 ?", "surface_cylinder(n0,n1)|", "a ) 12.57 , b ) 4", 4 * math.pi),
    # trax's evaluator would crash on None + 1 here; we drop it the same way.
    ("the smaller of 3 and 4 , plus 1 ?", "min(n0,n1)|add(#0,const_1)|", "a ) 4 , b ) 5", 4.0),
])
def test_trax_drops_operations_it_does_not_implement(problem, formula, options, value):
  raw = _raw(problem, formula, options, "a")
  assert _outcome(raw, "faithful")["program_answer"] == pytest.approx(value)
  assert _outcome(raw, "trax") == "unknown operation"


@pytest.mark.parametrize("options,correct,value", [
    ("a ) 3 , b ) 4 , c ) 5 , d ) d , e ) 7", "d", 7.0),  # the next option's number
    ("a ) 1 / 2 , b ) 31 / 36", "b", 31 / 36),             # a fraction where trax looks
    ("a ) 1.5 / 2 , b ) 3", "a", 1.5),                     # ... but not elsewhere
    ("a ) 16 , b ) 5 / √ 2 , c ) 8", "b", 2.5)])           # 5 / (first number after /)
def test_trax_reads_the_correct_option_its_own_way(options, correct, value):
  assert mathqa_trax._trax_answer(options, correct) == pytest.approx(value)
  with pytest.raises(mc.ConversionError, match="no numeric answer"):
    mathqa_trax._trax_answer("a ) 1 , b ) none of these", "b")


def test_trax_constants_and_capped_functions():
  assert mathqa_trax._trax_constant("const_3_6") == 3 + float("0.6")
  assert mathqa_trax._trax_constant("const_pi") == math.pi
  operations = mathqa_trax._operations("factorial(n0)|log(n1)|sqrt(n1)|", 2)
  program = mathqa_trax.trax_program(operations, [20.0, -4.0])
  assert "t0 = math.factorial(min(15, int(n0)))" in program
  assert program.endswith("answer = math.sqrt(max(0, n1))\n")
  assert mathqa_trax.run_program(program) == 0.0
  assert mathqa_trax.formula_value(operations[:1], [20.0, -4.0]) == math.factorial(15)


def test_trax_compat_stops_at_the_first_repeated_text():
  result = mc.convert_split([
      _raw("add 1 and 2 .", "add(n0,n1)|"),
      _raw("add 2 and 1 .", "add(n0,n1)|"),
      _raw("add 1 and 2 .", "add(n0,n1)|"),    # the notebook stops here
      _raw("add 1.5 and 1.5 .", "add(n0,n1)|"),
      _raw("add 1 and 1 .", "add(n0,n1)|", "a ) 2"),
  ], compat="trax")
  assert [p["source_index"] for p in result.problems] == [0, 1]
  assert dict(result.dropped) == {"after first repeat": 3}
