"""Where the `evalplus` package's own evaluator runs: the peer of tests/test_evalplus.py (verdict
parity) and benchmarks/evalplus_throughput.py (speed).

evalplus 0.3.1 pins protobuf 5, which the project's environment cannot take, so it lives apart:
in .evalplus/ (`pip install --no-deps --target .evalplus -r requirements-evalplus.txt`, as
.ci/run does), run by the project's own Python with that folder first on its path, or in any
interpreter that has it ($EVALPLUS_PYTHON).
"""
from __future__ import annotations

import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
TARGET = REPO / ".evalplus"


def evalplus_runner(python: str = "") -> tuple[str, dict[str, str]] | None:
  """(interpreter, environment variables to set) that import evalplus: `python` or
  $EVALPLUS_PYTHON where given; else this interpreter with .evalplus/ on its path; else this
  interpreter where it has evalplus itself; None where nothing has it."""
  python = python or os.environ.get("EVALPLUS_PYTHON", "")
  if python:
    return python, {}
  if (TARGET / "evalplus").is_dir():
    path = os.pathsep.join(filter(None, [str(TARGET), os.environ.get("PYTHONPATH")]))
    return sys.executable, {"PYTHONPATH": path}
  try:
    import evalplus.evaluate  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return None
  return sys.executable, {}
