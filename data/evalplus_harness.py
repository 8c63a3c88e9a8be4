"""EvalPlus's differential check (evalplus 0.3.1), as the text of sandboxed programs.

EvalPlus runs the reference on every `base_input` and `plus_input` in a trusted process,
recording each output and its time, then the sample in a separate process per input group,
each input under `max(1 s, 4 x the reference's time)`, comparing outputs with its rules. Here
the same in two kinds of sandboxed program:
* `reference_program(...)`, one per task and evaluation: runs the reference on every input of
  every group and prints, per group, its times and expected outputs (read with
  `reference_records`); a group whose reference fails (Mbpp/255's plus: out of memory) gets
  its error instead, and every sample fails that group.
* `program(...)`, one per sample: execs the sample afresh for each group, as EvalPlus's fresh
  process per group does, and compares its outputs with the expected ones. It carries the
  reference's outputs and times as data, never the reference's code, so no sample can find
  the solution in its interpreter, its file or its modules. Its tests are `check_call(group)`,
  one per group, each raising AssertionError on the group's first failing input (EvalPlus's
  verdict for the group is "pass" only when every input passes).
An expected output larger than DIGEST_ABOVE_BYTES pickled, that only `==` can decide (no
float tolerance in force, no set or not-None oracle), travels as a digest: its pickle's
sha256, and that of a canonical form under which builtin values that are `==` pickle alike
(numbers across int/float/bool/complex, sets and dicts in any order). The other outputs travel
as values (pickled, so tuples, sets and complex numbers stay what they are).

This module is itself the programs' harness: a sandbox whose workers preimported it
(SandboxConfig.preimport) hands it to each program ready to run; any other runs it from the
source text every program carries. So it imports only the standard library (numpy only for a
float comparison the pure-Python one (_ep_allclose) does not cover: importing it costs more
than most samples' checks), and its names start with `_ep` or are module constants.
The comparison rules, special oracles and MBPP+ input retyping are ported from evalplus 0.3.1
(evalplus/eval/__init__.py, _special_oracle.py, data/mbpp.py; Apache-2.0).
"""
import _signal as _ep_signal
import base64 as _ep_base64
import copy as _ep_copy
import io as _ep_io
import json as _ep_json
import math as _ep_math
import pickle as _ep_pickle
import sys as _ep_sys
import time as _ep_time
import zlib as _ep_zlib

MIN_TIME_LIMIT_S = 1.0          # evalplus/config.py DEFAULT_MIN_TIME_LIMIT
TIME_LIMIT_FACTOR = 4.0         # DEFAULT_GT_TIME_LIMIT_FACTOR
TASK_TIME_CAP_S = 60.0          # EVALPLUS_TIMEOUT_PER_TASK
# untrusted_check: the whole group gets min(cap, sum of limits) + 1 (+1 without fast_check),
# and the parent joins for 1 s more before it kills the process.
GROUP_EXTRA_S = 3.0

# An input that passed EvalPlus's check without being recorded as passed (see find_zero).
UNRECORDED = "unrecorded"
MBPP_OUTPUT_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")
MBPP_OUTPUT_SET_EQ = ("similar_elements", "find_char_long", "common_in_nested_lists",
                      "extract_singly", "larg_nnum", "intersection_array", "find_dissimilar",
                      "Diff")


def _ep_surface_area(base_edge, height):  # Mbpp/581's alternative oracle
  slant_height = _ep_math.sqrt((base_edge / 2) ** 2 + height**2)
  base_area = base_edge**2
  lateral_area = 4 * (base_edge * slant_height) / 2
  return round(base_area + lateral_area)


def _ep_digit_distance(num1, num2):  # Mbpp/558's alternative oracle
  str_num1, str_num2 = str(num1), str(num2)
  max_length = max(len(str_num1), len(str_num2))
  str_num1, str_num2 = str_num1.zfill(max_length), str_num2.zfill(max_length)
  return sum(abs(int(a) - int(b)) for a, b in zip(str_num1, str_num2))


def _ep_poly(xs, x):  # HumanEval/32's oracle
  return sum([coeff * _ep_math.pow(x, i) for i, coeff in enumerate(xs)])


def _ep_all_tuples(value):
  if isinstance(value, list):
    return tuple([_ep_all_tuples(item) for item in value])
  return value


def mbpp_deserialize_inputs(task_number, inputs):
  """evalplus/data/mbpp.py mbpp_deserialize_inputs: JSON lists back into tuples, sets, complex."""
  n = task_number
  if n in (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616,
           630, 726, 740, 744, 809):
    return [[tuple(lst) for lst in inp] for inp in inputs]
  if n in (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780):
    return [[[tuple(lst) for lst in lst_lst] for lst_lst in inp] for inp in inputs]
  if n in (75, 413, 444, 753):
    return [[[tuple(lst) for lst in inp[0]]] + [inp[1]] for inp in inputs]
  if n in (106, 750):
    return [[inp[0]] + [tuple(inp[1])] for inp in inputs]
  if n == 115:
    return [[[set(item) if isinstance(item, list) and len(item) else {} for item in inp[0]]]
            for inp in inputs]
  if n == 124:
    return [(float(inp[0]), complex(inp[1])) for inp in inputs]
  if n in (250, 405, 446, 617, 720, 763, 808):
    return [[tuple(inp[0])] + [inp[1]] for inp in inputs]
  if n in (259, 401, 445):
    modified = [[[tuple(lst) for lst in lst_lst] for lst_lst in inp] for inp in inputs]
    return [[tuple(lst) for lst in inp] for inp in modified]
  if n == 278:
    modified = [[[tuple(item) if isinstance(item, list) else item for item in inp[0]]]
                for inp in inputs]
    return [[tuple(lst) for lst in inp] for inp in modified]
  if n == 307:
    return [[tuple(inp[0])] + [inp[1], inp[2]] for inp in inputs]
  if n == 722:
    return [[{key: tuple(value) for key, value in inp[0].items()}] + inp[1:]
            for inp in inputs]
  if n == 252:
    return [[complex(inp[0])] for inp in inputs]
  if n in (580, 615, 791):
    return [_ep_all_tuples(inp) for inp in inputs]
  return inputs


def _ep_is_floats(x):
  if isinstance(x, float):
    return True
  if isinstance(x, (list, tuple)) and x:
    return all(isinstance(i, float) for i in x)
  numpy = _ep_sys.modules.get("numpy")  # an ndarray output means numpy is loaded
  if numpy is not None and isinstance(x, numpy.ndarray):
    return x.dtype == numpy.float64 or x.dtype == numpy.float32
  return False


class _EpTimeout(Exception):
  pass


def _ep_alarm(signum, frame):
  raise _EpTimeout("time limit")


def _ep_call_limited(fn, inp, seconds):
  # The handler again for every input, as EvalPlus's time_limit() sets it (a sample may set
  # its own); _signal's functions, not signal's wrappers, which convert to and from enums at
  # a cost above most inputs' own.
  _ep_signal.signal(_ep_signal.SIGALRM, _ep_alarm)
  _ep_signal.setitimer(_ep_signal.ITIMER_REAL, seconds)
  try:
    return fn(*inp)
  finally:
    _ep_signal.setitimer(_ep_signal.ITIMER_REAL, 0)


# An expected output that pickles larger than this travels as a digest (_ep_digest), not as
# its value: HumanEval+ holds outputs of up to 9 MB (HumanEval/130, /15), 250 MB in all,
# which every sample's program would otherwise carry.
DIGEST_ABOVE_BYTES = 64 * 1024
# Starts each of the reference program's records in its output (what the reference itself
# prints goes there too).
REFERENCE_RECORD_MARKER = "\n@evalplus-reference-outputs@ "
_EP_TAG = "\x00evalplus"


def _ep_fast_pickle(value):
  buffer = _ep_io.BytesIO()
  pickler = _ep_pickle.Pickler(buffer, protocol=4)
  # No memo: equal values pickle alike whichever of their parts are one shared object.
  pickler.fast = True
  pickler.dump(value)
  return buffer.getvalue()


def _ep_sha(data):
  # Imported here: only digests need it, and hashlib (OpenSSL) in a worker that preimports
  # this module makes every fork slower.
  import hashlib  # pylint: disable=import-outside-toplevel
  return hashlib.sha256(data).hexdigest()


def _ep_canonical(x):
  """A value that pickles alike for any two builtin values that are `==` (numbers across
  int/float/bool/complex, sets and dicts in any order); TypeError for other types, ValueError
  for NaN (which equals nothing)."""
  t = type(x)
  if t is int or t is str or t is bytes or x is None:
    return x
  if t is bool:
    return int(x)
  if t is float:
    if x != x:
      raise ValueError("nan")
    return int(x) if x.is_integer() else x
  if t is list or t is tuple:
    flat = _ep_canonical_flat(x)
    if flat is not None:
      return flat if t is list else tuple(flat)
    items = [_ep_canonical(i) for i in x]
    return items if t is list else tuple(items)
  if t is complex:
    if x.imag == 0:
      return _ep_canonical(x.real)
    return (_EP_TAG, "complex", _ep_canonical(x.real), _ep_canonical(x.imag))
  if isinstance(x, (set, frozenset)):
    return (_EP_TAG, "set", sorted([_ep_fast_pickle(_ep_canonical(i)) for i in x]))
  if isinstance(x, dict):
    items = [(_ep_fast_pickle(_ep_canonical(k)), _ep_canonical(v)) for k, v in x.items()]
    return (_EP_TAG, "dict", sorted(items, key=lambda kv: kv[0]))
  for base in (bool, int, float, str, bytes, list, tuple):  # subclasses (IntEnum, namedtuple)
    if isinstance(x, base):
      return _ep_canonical(base(x) if base is not str else str.__str__(x))
  if type(x).__module__ == "numpy" and getattr(x, "ndim", None) == 0:
    return _ep_canonical(x.item())  # numpy scalars equal their Python values
  raise TypeError(f"no canonical form for {t.__name__}")


_EP_FLAT_TYPES = (frozenset((int,)), frozenset((str,)))
_EP_NUMBER_TYPES = frozenset((int, float, bool))


def _ep_canonical_flat(items):
  """_ep_canonical of a list of only strings or only whole numbers, at C speed (HumanEval+
  has outputs of a million numbers), or None."""
  types = frozenset(map(type, items))
  if types in _EP_FLAT_TYPES:
    return list(items)
  if types <= _EP_NUMBER_TYPES:
    try:
      whole = list(map(int, items))
    except (ValueError, OverflowError):  # NaN, infinities
      return None
    if whole == list(items):  # every float is whole (ints compare exactly with floats)
      return whole
  return None


def _ep_digest(value):
  """(sha256 of the value's pickle, sha256 of its canonical form's pickle)."""
  return _ep_sha(_ep_fast_pickle(value)), _ep_sha(_ep_fast_pickle(_ep_canonical(value)))


class _EpDigest:
  """A large expected output, as its digest: `matches(out)` is `out == expected` for the
  builtin values EvalPlus's outputs are (the identical pickle first: cheap on 9 MB)."""

  def __init__(self, pickled_sha, canonical_sha):
    self.pickled_sha, self.canonical_sha = pickled_sha, canonical_sha

  def matches(self, out):
    try:
      if _ep_sha(_ep_fast_pickle(out)) == self.pickled_sha:
        return True
      return _ep_sha(_ep_fast_pickle(_ep_canonical(out))) == self.canonical_sha
    except Exception:  # pylint: disable=broad-except  (unpicklable, NaN, no canonical form)
      return False


def _ep_input_passes(dataset, entry_point, inp, out, exp, atol):
  """(passed, atol for the following inputs): evalplus/eval/__init__.py unsafe_execute."""
  exact_match = exp.matches(out) if isinstance(exp, _EpDigest) else out == exp
  if dataset == "mbpp":
    if entry_point == "are_equivalent":
      exact_match = True
    elif entry_point == "sum_div":
      exact_match = exact_match or out == 0
    elif entry_point == "surface_Area":
      exact_match = exact_match or abs(out - _ep_surface_area(*inp)) <= atol
    elif entry_point == "digit_distance_nums":
      exact_match = exact_match or out == _ep_digit_distance(*inp)
    elif entry_point in MBPP_OUTPUT_SET_EQ:
      exact_match = set(out) == set(exp)
    elif entry_point in MBPP_OUTPUT_NOT_NONE:
      exact_match = out == exp if isinstance(out, bool) else exp == (out is not None)
  if dataset == "humaneval" and entry_point == "find_zero":
    # evalplus 0.3.1 `continue`s past this oracle before it records the input as passed, so
    # the group never counts every input passed: HumanEval/32 fails whatever the sample.
    if not abs(_ep_poly(*inp, out)) <= atol:
      return False, atol
    return UNRECORDED, atol
  if atol == 0 and _ep_is_floats(exp):
    atol = 1e-6  # EvalPlus keeps this for the rest of the group's inputs
  if not exact_match and atol != 0:
    if type(out) != type(exp):  # pylint: disable=unidiomatic-typecheck
      return False, atol
    if isinstance(exp, (list, tuple)) and len(out) != len(exp):
      return False, atol
    return _ep_allclose(out, exp, atol), atol
  return bool(exact_match), atol


_EP_RTOL = 1e-07  # EvalPlus's, numpy.testing.assert_allclose's default


def _ep_close(x, y, atol):
  """numpy.isclose(x, y, rtol=_EP_RTOL, atol=atol) for two Python floats: the same float64
  arithmetic, and infinities close only to themselves, NaN to nothing."""
  if x == y:
    return True
  if x - x != 0.0 or y - y != 0.0:  # inf or NaN: close only if equal
    return False
  return abs(x - y) <= atol + _EP_RTOL * abs(y)


def _ep_allclose(out, exp, atol):
  """numpy.allclose(out, exp, rtol=_EP_RTOL, atol=atol), as EvalPlus decides a float output
  (out and exp of one type, sequences of one length): in pure Python where both are floats
  or flat lists / tuples of floats, which is what float outputs mostly are, since importing
  numpy costs a program more than most checks; numpy itself for the rest."""
  if type(out) is float:
    return _ep_close(out, exp, atol)
  if (type(out) in (list, tuple) and all(type(x) is float for x in out)
      and all(type(y) is float for y in exp)):
    return all(_ep_close(x, y, atol) for x, y in zip(out, exp))
  import numpy  # pylint: disable=import-outside-toplevel
  return bool(numpy.allclose(out, exp, rtol=_EP_RTOL, atol=atol))


def _ep_groups(spec):
  groups = _ep_json.loads(spec["inputs_json"])
  if spec["dataset"] == "mbpp":
    groups = {g: mbpp_deserialize_inputs(spec["task_number"], inputs)
              for g, inputs in groups.items()}
  return groups


def _ep_expectation(spec, outputs):
  """What a sample's program gets of the reference's outputs: each value, or, where it is
  large and only `==` can decide (no tolerance by then, no set or not-None oracle), its
  digest."""
  atol = spec["atol"]
  by_value = spec["dataset"] == "mbpp" and spec["entry_point"] in (MBPP_OUTPUT_SET_EQ +
                                                                   MBPP_OUTPUT_NOT_NONE)
  expected, digests = [], {}
  for i, out in enumerate(outputs):
    if atol == 0 and _ep_is_floats(out):
      atol = 1e-6  # as _ep_input_passes will have it at this input
    if not by_value and atol == 0 and len(_ep_fast_pickle(out)) > DIGEST_ABOVE_BYTES:
      try:
        digests[i] = _ep_digest(out)
        expected.append(None)
        continue
      except (TypeError, ValueError):
        pass  # no canonical form: the value itself
    expected.append(out)
  return {"expected": expected, "digests": digests}


def _ep_reference_outputs(spec):
  """Runs the reference on every input of every group, as evalplus's trusted_exec does, and
  writes one record per group to stdout: its times and expectation, or why it failed."""
  groups = _ep_groups(spec)
  reference = {}
  exec(spec["reference"], reference)  # pylint: disable=exec-used
  fn = reference[spec["entry_point"]]
  for group, inputs in groups.items():
    try:
      outputs, times = [], []
      for inp in inputs:
        inp = _ep_copy.deepcopy(inp)
        start = _ep_time.time()
        outputs.append(fn(*inp))
        times.append(_ep_time.time() - start)
      if spec["entry_point"] in MBPP_OUTPUT_NOT_NONE and spec["dataset"] == "mbpp":
        outputs = [o is not None for o in outputs]
      record = {"group": group,
                "expected": _ep_encode({**_ep_expectation(spec, outputs), "times": times}),
                "seconds": sum(times),  # what a right sample costs (the scorer's order)
                "inputs": _ep_encode(inputs)}  # retyped (MBPP+), untouched by the reference
    except BaseException as e:  # pylint: disable=broad-except  (MemoryError: Mbpp/255's plus)
      record = {"group": group, "error": f"{type(e).__name__}: {e}"[:500]}
    _ep_sys.stdout.flush()
    _ep_sys.stdout.write(REFERENCE_RECORD_MARKER + _ep_json.dumps(record) + "\n")
    _ep_sys.stdout.flush()


def _ep_encode(value):
  """Pickled, compressed, base64: a sample's program compiles its data as a string literal,
  and compiling costs per character (more than decompressing and unpickling)."""
  return _ep_base64.b64encode(_ep_zlib.compress(_ep_pickle.dumps(value, protocol=4), 6)
                              ).decode("ascii")


def _ep_decode(text):
  return _ep_pickle.loads(_ep_zlib.decompress(_ep_base64.b64decode(text)))


class _EpCheck:
  """A sample's checks against the reference's outputs (never its code), group by group."""

  def __init__(self, spec):
    self.spec = spec
    self.passed = set()

  def check(self, group):
    """Raises AssertionError unless the sample passes every input of `group`, and, for "plus",
    unless it passed "base" first (EvalPlus's headline verdict needs both; the scorer reads
    the base verdict off the first test)."""
    spec = self.spec
    if group == "plus" and "base" in spec["expected"] and "base" not in self.passed:
      raise AssertionError("base inputs failed: base + plus needs both")
    reference = spec["expected"][group]
    if "error" in reference:
      raise AssertionError(f"the reference solution fails on the {group} inputs: "
                           f"{reference['error']}")
    expectation = _ep_decode(reference["expected"])
    expected, digests = expectation["expected"], expectation["digests"]
    inputs = _ep_decode(reference["inputs"])  # fresh: base's calls may have mutated theirs
    limits = [max(MIN_TIME_LIMIT_S, TIME_LIMIT_FACTOR * t) for t in expectation["times"]]
    deadline = _ep_time.time() + min(TASK_TIME_CAP_S, sum(limits)) + GROUP_EXTRA_S
    namespace = {}
    # The sample's own top level counts against the group's time, as in EvalPlus's process.
    _ep_call_limited(exec, (spec["sample"], namespace),
                     max(deadline - _ep_time.time(), 1e-3))
    fn = namespace[spec["entry_point"]]
    atol = spec["atol"]
    unrecorded = 0
    for i, inp in enumerate(inputs):
      limit = min(limits[i], max(deadline - _ep_time.time(), 1e-3))
      out = _ep_call_limited(fn, inp, limit)
      exp = _EpDigest(*digests[i]) if i in digests else expected[i]
      passed, atol = _ep_input_passes(spec["dataset"], spec["entry_point"], inp, out, exp,
                                      atol)
      if not passed:
        raise AssertionError(f"{group} input {i}: wrong output")
      unrecorded += passed == UNRECORDED
    if unrecorded:
      raise AssertionError(f"{group}: {unrecorded} inputs passed HumanEval/32's oracle, "
                           "which evalplus 0.3.1 never records as passed")
    self.passed.add(group)


def _ep_own_source():
  try:
    path = __file__
  except NameError:  # run from a program's text (_program_head), not imported
    return ""
  with open(path, encoding="utf-8") as f:
    return f.read()


# A program uses a worker's preimported copy only if it is this very text.
_EP_SOURCE = _ep_own_source()


def _program_head():
  """The start of every program: `_ep_harness`, this module as the sandbox's worker
  preimported it (SandboxConfig.preimport; evaluation/evalplus_references.py
  harness_preimported), else built from its text, which the program carries as a string: a
  string literal costs the compiler almost nothing, while this module's code compiled and
  its imports cost a program many times what checking a wrong sample does."""
  return (f"import sys as _ep_sys\n"
          f"_ep_source = {_EP_SOURCE!r}\n"
          f"_ep_harness = _ep_sys.modules.get({__name__!r})\n"
          f"if getattr(_ep_harness, '_EP_SOURCE', None) != _ep_source:\n"
          f"  _ep_harness = type(_ep_sys)('evalplus_harness')\n"
          f"  exec(compile(_ep_source, 'evalplus_harness.py', 'exec'), _ep_harness.__dict__)\n"
          f"del _ep_source\n")


def reference_program(*, dataset, task_number, entry_point, reference, atol, inputs):
  """The sandboxed program that runs `reference` on `inputs` ({group: [args, ...]}, JSON
  values as the release files hold them) and prints a record per group (read them with
  reference_records)."""
  spec = {"dataset": dataset, "task_number": task_number, "entry_point": entry_point,
          "reference": reference, "atol": atol, "inputs_json": _ep_json.dumps(inputs)}
  return f"{_program_head()}_ep_harness._ep_reference_outputs({spec!r})\n"


def reference_records(output):
  """{group: record} from a reference_program's output: {"expected": str, "inputs": str}
  (opaque: a sample's program reads them) and "seconds" (the reference's time on them), or
  {"error": why the reference failed}."""
  records = {}
  for chunk in output.split(REFERENCE_RECORD_MARKER)[1:]:
    try:
      record = _ep_json.loads(chunk.split("\n", 1)[0])
    except ValueError:
      continue  # cut short (the process was killed mid-write)
    if isinstance(record, dict) and isinstance(record.get("group"), str):
      records[record.pop("group")] = record
  return records


def program(*, dataset, task_number, entry_point, sample, atol, groups, expected):
  """The sandboxed program that checks `sample` (a whole program) on the inputs of `groups`
  ("base", "plus") against `expected` ({group: reference_records' record}): the inputs, the
  reference's outputs and its times, never its code, so that no sample can find it."""
  spec = {"dataset": dataset, "task_number": task_number, "entry_point": entry_point,
          "sample": sample, "atol": atol, "expected": {g: expected[g] for g in groups}}
  return f"{_program_head()}_EP_CHECK = _ep_harness._EpCheck({spec!r})\n"


def check_call(group):
  """The test that decides `group` ("base" or "plus") in a program() program."""
  return f"_EP_CHECK.check({group!r})"
