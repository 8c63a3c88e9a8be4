"""Imports flow one way (../shared/DESIGN.md): every project import, module level or inside a
function, is checked against the allowed package edges, and no files import each other.

    rundir/                    imports no other project package (the run directory's names,
                               the workdir lock, the progress line, multi-host helpers)
    data/, execution/          import nothing else of the project but rundir/ (execution/
                               writes its progress line with it)
    model/                     may import data/, rundir/
    decode/                    may import data/, model/, rundir/ (the decode engine)
    interop/                   may import data/, model/, rundir/ (Hugging Face import/export)
    training/, evaluation/     may import data/, model/, decode/, rundir/ (evaluation/
                               also execution/); never configs/ or each other
    launch/                    may import data/, model/, rundir/ (what train.py and eval.py
                               check and assume before the library call)
    configs/                   may import data/, model/, decode/, rundir/ (experiment
                               definitions), and
                               sweeps/ (the sweep files in configs/sweeps/ are written in its API)
    sweeps/, scripts/, entry points, benchmarks/, tests/: anything

No exceptions: a module that two layers need lives in the lower one.
"""
import ast
import collections
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("rundir", "data", "model", "decode", "interop", "launch", "training", "evaluation",
            "execution", "configs", "sweeps", "scripts", "benchmarks", "tests")
ANYTHING = frozenset(PACKAGES)
ALLOWED = {
    "rundir": frozenset(),
    "data": frozenset({"rundir"}),
    "execution": frozenset({"rundir"}),
    "model": frozenset({"data", "rundir"}),
    "decode": frozenset({"data", "model", "rundir"}),
    "interop": frozenset({"data", "model", "rundir"}),
    "training": frozenset({"data", "model", "decode", "rundir"}),
    "evaluation": frozenset({"data", "model", "decode", "execution", "rundir"}),
    "launch": frozenset({"data", "model", "rundir"}),
    "configs": frozenset({"data", "model", "decode", "rundir", "sweeps"}),
}


def _modules() -> dict[str, pathlib.Path]:
  """Dotted module name -> file, for every project Python file."""
  found = {path.stem: path for path in ROOT.glob("*.py")}
  for package in PACKAGES:
    for path in (ROOT / package).rglob("*.py"):
      parts = path.relative_to(ROOT).with_suffix("").parts
      found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return found


def _imported(path: pathlib.Path, module: str, modules: dict[str, pathlib.Path]) -> set[str]:
  """Project modules that `path` imports anywhere in its body (lazy imports included)."""
  names = set()
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                        + ([base] if base else []))
      names.add(base)
      names.update(f"{base}.{alias.name}" for alias in node.names)
  # `from data import tasks` names module data.tasks; `from data.tasks import x` data.tasks.
  return {n for n in names if n in modules and n != module}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
  modules = _modules()
  return {m: _imported(p, m, modules) for m, p in modules.items()}


def _package(module: str) -> str:
  return module.split(".")[0]


def test_packages_import_only_what_the_design_allows(graph):
  forbidden = []
  for module, imports in sorted(graph.items()):
    package = _package(module)
    allowed = ALLOWED.get(package, ANYTHING) | {package}
    forbidden += [f"{module} -> {target}" for target in sorted(imports)
                  if _package(target) not in allowed]
  assert forbidden == []


def test_no_import_cycles(graph):
  # Package __init__ files re-export their modules; an edge into one's own package __init__
  # is not a dependency between files.
  edges = {m: {t for t in targets if not (t == m.rpartition(".")[0] and t in PACKAGES)}
           for m, targets in graph.items()}
  cycles, state = [], collections.defaultdict(int)  # 0 new, 1 on the stack, 2 done

  def visit(module, stack):
    state[module] = 1
    stack.append(module)
    for target in sorted(edges.get(module, ())):
      if state[target] == 1:
        cycles.append(stack[stack.index(target):] + [target])
      elif state[target] == 0:
        visit(target, stack)
    stack.pop()
    state[module] = 2

  for module in sorted(edges):
    if state[module] == 0:
      visit(module, [])
  assert [" -> ".join(c) for c in cycles] == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
  """The walk must catch an import inside a function, or the tests above prove nothing."""
  modules = {"data.a": tmp_path / "a.py", "training.loop": tmp_path / "loop.py"}
  modules["data.a"].write_text("def f():\n  from training import loop\n  return loop\n")
  assert _imported(modules["data.a"], "data.a", modules) == {"training.loop"}
