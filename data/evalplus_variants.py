"""Samples for checking and timing an EvalPlus scorer: a task's own reference solution, and
variants of it whose verdicts exercise EvalPlus's rules.

  reference      the canonical solution (`prompt + canonical_solution`): passes
  wrong          returns None: fails on the first input
  slow           loops forever: fails on the first input's time limit
  nudged         float outputs off by 1e-9: within EvalPlus's tolerance where it applies
  type_changing  ints as floats, lists as tuples and back: == accepts some, not others

`variant(entry_point, reference, kind)` gives a whole program, as EvalPlus's `solution` field
holds one (tests/test_evalplus.py checks our verdicts on them against evalplus's own;
benchmarks/evalplus_throughput.py times both on them).
"""
KINDS = ("reference", "wrong", "slow", "nudged", "type_changing")


def variant(entry_point: str, reference: str, kind: str) -> str:
  """A whole program: the reference, or a variant of it."""
  if kind == "reference":
    return reference
  if kind == "wrong":
    return f"def {entry_point}(*args):\n    return None\n"
  if kind == "slow":
    return f"def {entry_point}(*args):\n    while True:\n        pass\n"
  if kind == "nudged":
    return (f"{reference}\n_original = {entry_point}\n"
            f"def {entry_point}(*args):\n"
            f"    out = _original(*args)\n"
            f"    return out + 1e-9 if isinstance(out, float) else out\n")
  if kind == "type_changing":
    return (f"{reference}\n_original = {entry_point}\n"
            f"def {entry_point}(*args):\n"
            f"    out = _original(*args)\n"
            f"    if isinstance(out, bool) or out is None: return out\n"
            f"    if isinstance(out, int): return float(out)\n"
            f"    if isinstance(out, list): return tuple(out)\n"
            f"    if isinstance(out, tuple): return list(out)\n"
            f"    return out\n")
  raise ValueError(f"unknown variant {kind!r}; expected one of {KINDS}")
