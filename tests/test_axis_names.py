"""Array names use model/axes.py's letters only (`logits_SxV`): one glossary, one meaning each."""
import ast
import pathlib
import re

from model.axes import AXES

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("model", "decode", "training", "evaluation", "interop", "data", "benchmarks",
            "tests")
# A lower-case name, then "_" and axis groups joined by "x" (e.g. q_SxKxGxH, x_BxGLxH).
_SUFFIX = re.compile(r"^[a-z][a-z0-9_]*?_((?:[A-Z][0-9]*|1)+(?:x(?:[A-Z][0-9]*|1)+)*)$")
_SYMBOL = re.compile(r"[A-Z][0-9]*|1")


def _names(path: pathlib.Path):
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Name):
      yield node.id, node.lineno
    elif isinstance(node, ast.arg):
      yield node.arg, node.lineno
    elif isinstance(node, ast.Attribute):
      yield node.attr, node.lineno
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield node.name, node.lineno


def test_every_axis_suffix_uses_the_glossary():
  unknown = []
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      for name, line in _names(path):
        match = _SUFFIX.match(name)
        if match:
          symbols = _SYMBOL.findall(match.group(1).replace("x", " "))
          unknown += [f"{path.relative_to(ROOT)}:{line} {name} ({s})" for s in symbols
                      if s not in AXES]
  assert not unknown, "axis letters not in model/axes.py:\n" + "\n".join(sorted(set(unknown)))


def test_the_check_sees_bad_names(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("scores_BxXxL = 0\n")
  names = [name for name, _ in _names(bad) if _SUFFIX.match(name)]
  assert names == ["scores_BxXxL"] and "X" not in AXES
