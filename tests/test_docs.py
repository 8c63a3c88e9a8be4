"""The front door stays a front door: README short, every doc page reachable, no dead references.

The commands themselves run elsewhere (tests/test_commands.py, the end-to-end tests); this
checks what a reader follows: links, the scripts, modules and config files commands name.
"""
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "benchmarks" / "RESULTS.md"]
MAX_README_LINES = 250

_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_SCRIPT = re.compile(r"\bpython3? ((?:[\w./-]+/)?[\w-]+\.py)\b")
_MODULE = re.compile(r"\bpython3? -m ([\w.]+)")
_CONFIG = re.compile(r"--config=(configs/[\w/]+\.py)")


def _pages():
  return [README] + DOC_PAGES


def test_readme_is_short():
  lines = README.read_text().count("\n")
  assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_every_doc_page_is_linked_from_the_readme():
  linked = {(README.parent / target).resolve() for target in _LINK.findall(README.read_text())}
  missing = [str(p.relative_to(ROOT)) for p in DOC_PAGES if p.resolve() not in linked]
  assert not missing, f"not linked from README.md: {missing}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_scripts_modules_and_configs_exist(page):
  text = page.read_text()
  problems = []
  for target in _LINK.findall(text):
    if "://" not in target and not (page.parent / target).exists():
      problems.append(f"link {target}")
  for script in _SCRIPT.findall(text):
    if not (ROOT / script).exists() and not script.startswith(("prog", "their")):
      problems.append(f"script {script}")
  for module in _MODULE.findall(text):
    if module.split(".")[0] in {"pip", "pytest", "venv"}:
      continue
    if importlib.util.find_spec(module.split(".")[0]) is None or not _module_file(module):
      problems.append(f"module {module}")
  for config in _CONFIG.findall(text):
    if not (ROOT / config).exists():
      problems.append(f"config {config}")
  assert not problems, f"{page.name}: {problems}"


def _module_file(module: str) -> bool:
  path = ROOT.joinpath(*module.split("."))
  return path.with_suffix(".py").exists() or (path / "__main__.py").exists() or (
      path / "__init__.py").exists()


def test_no_issue_numbers_in_docs():
  for page in _pages():
    found = re.findall(r"(?<![\w&])#\d+\b", page.read_text())
    assert not found, f"{page.name} refers to issue numbers {found}: say what, not which ticket"
