"""Tests for data/code_corpus.py: file selection, stable split, TFDS build and records."""

import pathlib

import pytest

from data import code_corpus


def _write(root: pathlib.Path, relative: str, content: bytes | str) -> None:
  path = root / relative
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(content, str):
    content = content.encode("utf-8")
  path.write_bytes(content)


@pytest.fixture()
def source_tree(tmp_path) -> tuple[pathlib.Path, dict[str, str]]:
  """A small source tree and the files the corpus should keep from it."""
  root = tmp_path / "src"
  kept = {f"pkg/mod_{i:02d}.py": f"def f{i}():\n\treturn {i}  # é\n" for i in range(60)}
  kept["top.py"] = "import os\r\nprint(os.sep)\r\n"
  for relative, text in kept.items():
    _write(root, relative, text)
  _write(root, "test/test_x.py", "assert True\n")
  _write(root, "pkg/tests/test_y.py", "assert True\n")
  _write(root, "idlelib/idle_test/z.py", "pass\n")
  _write(root, "site-packages/dep/a.py", "pass\n")
  _write(root, "pkg/__pycache__/b.py", "pass\n")
  _write(root, "latin1.py", b"s = '\xe9'\n")  # not UTF-8
  _write(root, "empty.py", "")
  _write(root, "huge.py", "x = 1\n" * 40_000)  # 240 kB
  _write(root, "notes.txt", "not python\n")
  return root, kept


def test_iter_source_files_keeps_only_usable_files(source_tree):
  root, kept = source_tree
  assert dict(code_corpus.iter_source_files(root)) == kept


def test_split_hash_is_stable_golden():
  # Golden values: the split must never move between machines or versions.
  paths = ["os.py", "json/decoder.py", "asyncio/tasks.py", "collections/__init__.py"]
  selected = [code_corpus.is_validation_path(p, 50) for p in paths]
  assert selected == [False, False, False, True]
  assert not any(code_corpus.is_validation_path(p, 0) for p in paths)
  assert all(code_corpus.is_validation_path(p, 100) for p in paths)


def test_tiny_trees_still_get_a_validation_file():
  paths = ["a.py", "b.py", "c.py"]
  assert not any(code_corpus.is_validation_path(p, 2) for p in paths)
  assert code_corpus.validation_paths(paths, 2) == {"b.py"}
  assert code_corpus.validation_paths(paths, 0) == set()
  assert code_corpus.validation_paths(paths[:1], 2) == set()


def test_split_fraction_is_about_two_percent():
  paths = [f"pkg{i % 17}/module_{i}.py" for i in range(20_000)]
  fraction = len(code_corpus.validation_paths(paths, 2)) / len(paths)
  assert 0.015 < fraction < 0.025


def test_build_and_load_splits(source_tree, tmp_path):
  root, kept = source_tree
  data_dir = tmp_path / "tfds"
  train = code_corpus.load_code_corpus("train", data_dir, source_dir=root)
  validation = code_corpus.load_code_corpus("validation", data_dir, source_dir=root)

  expected_validation = code_corpus.validation_paths(kept, 2)
  assert expected_validation
  train_records = [train[i] for i in range(len(train))]
  validation_records = [validation[i] for i in range(len(validation))]
  assert len(train) + len(validation) == len(kept)
  for records, is_validation in ((train_records, False), (validation_records, True)):
    for record in records:
      assert record["prompt"] == ""
      assert record["target"] == kept[record["path"]]  # str, exact bytes of the file
      assert (record["path"] in expected_validation) == is_validation
  assert {r["path"] for r in train_records + validation_records} == set(kept)
  with pytest.raises(IndexError):
    train[len(train)]

  # A second load reuses the prepared data and reads the same records.
  again = code_corpus.load_code_corpus("train", data_dir, source_dir=root)
  assert [again[i] for i in range(len(again))] == train_records


def test_each_source_dir_gets_its_own_config(tmp_path):
  a = code_corpus.config_for_source_dir(tmp_path / "a")
  b = code_corpus.config_for_source_dir(tmp_path / "b")
  assert a.name != b.name
  assert a.name == code_corpus.config_for_source_dir(tmp_path / "a").name
  assert code_corpus.config_for_source_dir(None).name.startswith("stdlib_py3")


@pytest.mark.slow
def test_build_stdlib_corpus(tmp_path):
  train = code_corpus.load_code_corpus("train", tmp_path)
  validation = code_corpus.load_code_corpus("validation", tmp_path)
  assert len(train) > 500
  assert 0.005 < len(validation) / (len(train) + len(validation)) < 0.05
  paths = [train[i]["path"] for i in range(len(train))]
  assert "os.py" in paths or "os.py" in [validation[i]["path"] for i in range(len(validation))]
  assert not any(p.startswith("test/") or "/tests/" in p for p in paths)
