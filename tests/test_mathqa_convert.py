"""MathQA -> Python conversion, on hand-made problems and the real dev/test files."""
import json
import math

import pytest

from data import mathqa_convert as mc


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


# Pinned counts of the real files (the paper's MathQA-Python: dev 2,822, test 1,883).
EXPECTED_COUNTS = {
    "dev.json": (4475, 2839, {"answer mismatch": 1613, "no numeric answer": 21,
                              "program error": 2}),
    "test.json": (2985, 1893, {"answer mismatch": 1069, "no numeric answer": 15,
                               "program error": 8}),
}


@pytest.mark.parametrize("name", ["dev.json", "test.json"])
def test_real_split_counts(shared_data_dir, name):
  raw = json.loads((shared_data_dir / "mathqa" / "raw" / name).read_text())
  result = mc.convert_split(raw)
  num_raw, num_kept, dropped = EXPECTED_COUNTS[name]
  assert (result.num_raw, len(result.problems), dict(result.dropped)) == (
      num_raw, num_kept, dropped)
  # Every kept program reproduces its recorded answer and the annotated one.
  for problem in result.problems:
    assert mc.run_program(problem["program"]) == problem["program_answer"]
    assert math.isclose(problem["program_answer"], problem["answer"], rel_tol=0.01)
    assert problem["program"].splitlines()[-1].startswith("answer = ")
