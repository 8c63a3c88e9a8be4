"""Tests for data/tokenizer.py: special ids, exact round trip on code, determinism."""

import pathlib
import pickle

import pytest

from data import code_corpus
from data import tokenizer as tokenizer_lib

_TRICKY_STRINGS = [
    "",
    " ",
    "\n",
    "\n\n\n",
    "\t\tx = 1\n",
    "def f(x):\n    return x   \n",  # trailing spaces
    "if a:\r\n    b = 2\r\n",  # Windows newlines
    "  leading and trailing  ",
    "s = 'héllo ☃ 日本語 🐍'\n",
    "x = 12345678901234567890\n",
    "\x00\x7f\u200b",  # control characters and a zero-width space
    " " * 37 + "deep()\n",
    "# -*- coding: utf-8 -*-\n\n\n",
    "\ttab\t \tmix \t\n",
]


def _stdlib_files() -> list[tuple[str, str]]:
  return list(code_corpus.iter_source_files(code_corpus.stdlib_dir()))


@pytest.fixture(scope="module")
def stdlib_files() -> list[tuple[str, str]]:
  files = _stdlib_files()
  assert len(files) > 300, "expected the standard library to have hundreds of files"
  return files


@pytest.fixture(scope="module")
def code_tokenizer(tmp_path_factory, stdlib_files) -> tokenizer_lib.Tokenizer:
  """A 2k-vocab tokenizer trained on every 4th standard library file."""
  texts = [text for _, text in stdlib_files[::4]]
  prefix = tmp_path_factory.mktemp("tok") / "code2k"
  return tokenizer_lib.train_tokenizer(texts, prefix, vocab_size=2000, max_lines=100_000)


def test_special_ids_are_fixed(code_tokenizer):
  assert code_tokenizer.pad_id == 0
  assert code_tokenizer.eos_id == 1
  assert code_tokenizer.bos_id == 2
  assert code_tokenizer.unk_id == 3
  assert code_tokenizer.encode("\n") == [4]
  assert code_tokenizer.encode("\t") == [5]
  assert code_tokenizer.vocab_size == 2000


@pytest.mark.parametrize("text", _TRICKY_STRINGS)
def test_round_trip_tricky_strings(code_tokenizer, text):
  ids = code_tokenizer.encode(text)
  assert code_tokenizer.decode(ids) == text
  assert code_tokenizer.unk_id not in ids


def test_round_trip_on_unseen_stdlib_files(code_tokenizer, stdlib_files):
  # Files 1, 5, 9, ... were not in the training set (every 4th from 0 was).
  unseen = stdlib_files[1::12]
  mismatched = [
      path for path, text in unseen if code_tokenizer.decode(code_tokenizer.encode(text)) != text
  ]
  assert not mismatched
  total_chars = sum(len(text) for _, text in unseen)
  total_tokens = sum(len(code_tokenizer.encode(text)) for _, text in unseen)
  # A code vocabulary compresses well beyond one byte per token.
  assert total_chars / total_tokens > 2.5


def test_encode_adds_no_bos_or_eos(code_tokenizer):
  ids = code_tokenizer.encode("import os\n")
  assert code_tokenizer.bos_id not in ids and code_tokenizer.eos_id not in ids
  # Special ids decode to nothing, so generated EOS/pad never leak into code.
  assert code_tokenizer.decode(ids + [code_tokenizer.eos_id, 0, 0]) == "import os\n"


def test_indentation_and_digits(code_tokenizer):
  assert len(code_tokenizer.encode("    ")) == 1  # a learned whitespace-only piece
  assert len(code_tokenizer.encode("        ")) <= 2
  assert [code_tokenizer.id_to_piece(i) for i in code_tokenizer.encode("2024")] == [
      "2", "0", "2", "4"
  ]


def test_training_is_deterministic(tmp_path, stdlib_files):
  texts = [text for _, text in stdlib_files[::16]]
  first = tokenizer_lib.train_tokenizer(texts, tmp_path / "a", vocab_size=800)
  second = tokenizer_lib.train_tokenizer(texts, tmp_path / "b", vocab_size=800)
  assert first.model_proto == second.model_proto
  assert first.sha256 == second.sha256
  other = tokenizer_lib.train_tokenizer(texts[:-3], tmp_path / "c", vocab_size=800)
  assert other.sha256 != first.sha256


def test_save_load_and_pickle_keep_the_model(code_tokenizer, tmp_path):
  assert pathlib.Path(code_tokenizer.model_path).is_file()
  code_tokenizer.save(tmp_path / "copy.model")
  loaded = tokenizer_lib.Tokenizer.load(tmp_path / "copy.model")
  unpickled = pickle.loads(pickle.dumps(code_tokenizer))
  text = "class A:\n\tpass\n"
  for other in (loaded, unpickled):
    assert other.sha256 == code_tokenizer.sha256
    assert other.encode(text) == code_tokenizer.encode(text)
  assert loaded.model_path == str(tmp_path / "copy.model")
