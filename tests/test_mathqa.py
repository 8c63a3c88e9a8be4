"""MathQA-Python TFDS builder on the shared raw files (which lack train.json)."""
import pytest

from configs import eval_mathqa
from configs import mathqa as finetune_mathqa
from data import mathqa
from data import source_files
from evaluation import runner
from training import inputs


@pytest.mark.parametrize("split,size", [
    ("validation", 2839), ("test", 1893), ("challenge_test", 409)])
def test_eval_split_sizes(mathqa_dirs, split, size):
  records = mathqa.load(split, **mathqa_dirs)
  assert len(records) == size
  assert len({r["text"] for r in records}) == size


@pytest.mark.parametrize("split,size", [
    ("validation", mathqa.PAPER_SPLIT_SIZES["validation"]),  # 2,822
    ("test", mathqa.PAPER_SPLIT_SIZES["test"]),              # 1,883
    ("challenge_test", 403)])
def test_trax_config_has_the_papers_split_sizes(mathqa_dirs, split, size):
  records = mathqa.load(split, compat="trax", **mathqa_dirs)
  assert len(records) == size
  assert len({r["text"] for r in records}) == size
  if split == "validation":
    # trax caps the exponent at 5 and leaves an empty line in one-operation programs.
    assert records[0]["source_index"] == 0 and records[0]["answer"] == 625.0
    assert records[0]["program"] == "n0 = 4.0\nn1 = 5.0\n\nanswer = n1**min(n0, 5)\n"
  if split == "challenge_test":
    assert records == mathqa.load(split, config="trax_eval_splits", **mathqa_dirs)


def test_configs_default_to_the_papers_split(mathqa_dirs):
  """eval_mathqa.py and mathqa.py read the paper's (trax) split unless told otherwise."""
  config = eval_mathqa.get_config()
  config.data.update(**mathqa_dirs)
  examples = runner.load_examples(config)
  assert len(examples) == mathqa.PAPER_SPLIT_SIZES["test"] == 1883
  assert examples[0]["id"] == "mathqa/test/0"
  assert examples[0]["target"] == mathqa.load("test", compat="trax", **mathqa_dirs)[0][
      "program"] + "[DONE]"
  train_config = finetune_mathqa.get_config()
  train_config.data.update(**mathqa_dirs)
  assert len(inputs.load_records(train_config.data, "validation")) == 2822


def test_config_key_mathqa_compat_faithful_stays_an_option(mathqa_dirs):
  """config.data.mathqa_compat reaches the data in eval.py and train.py alike."""
  config = eval_mathqa.get_config()
  config.data.update(mathqa_compat="faithful", **mathqa_dirs)
  assert len(runner.load_examples(config)) == 1893
  train_config = finetune_mathqa.get_config()
  train_config.data.update(mathqa_compat="faithful", **mathqa_dirs)
  assert len(inputs.load_records(train_config.data, "validation")) == 2839


def test_unknown_compat_is_refused(mathqa_dirs):
  with pytest.raises(ValueError, match=r"unknown MathQA compat 'paper'"):
    mathqa.load("test", compat="paper", **mathqa_dirs)


def test_record_fields(mathqa_dirs):
  first = mathqa.load("validation", **mathqa_dirs)[0]
  assert first["source_index"] == 0
  assert first["text"] == (
      "a multiple choice test consists of 4 questions , and each question has 5 answer "
      "choices . in how many r ways can the test be completed if every question is "
      "unanswered ? n0 = 4.0 n1 = 5.0")
  assert first["program"] == "n0 = 4.0\nn1 = 5.0\nanswer = n1 ** n0\n"
  assert first["answer"] == 625.0 and first["numbers"] == [4.0, 5.0]
  assert first["linear_formula"] == "power(n1,n0)|" and first["correct"] == "c"


def test_missing_train_file_offline_says_what_is_missing(mathqa_dirs, tmp_path,
                                                         monkeypatch):
  def no_network(url, directory, timeout_s=None):
    raise ConnectionError(f"cannot reach {url}")
  monkeypatch.setattr(source_files, "fetch_once", no_network)
  with pytest.raises(source_files.DatasetFileError,
                     match=r"train\.json \(looked in manual_dir=.*raw\).*MathQA\.zip failed"
                           r".*76a236ea303f50cfb24042806c3269268990d0ff"
                           r".*python_eval_splits"):
    mathqa.load("train", data_dir=str(tmp_path), manual_dir=mathqa_dirs["manual_dir"])


def test_corrupt_raw_file_is_rejected(shared_data_dir, tmp_path):
  manual = tmp_path / "raw"
  manual.mkdir()
  for name in ("dev.json", "test.json", "challenge_test.json"):
    data = (shared_data_dir / "mathqa" / "raw" / name).read_bytes()
    (manual / name).write_bytes(data[:-10] if name == "test.json" else data)
  with pytest.raises(source_files.DatasetFileError,
                     match=r"test\.json: sha256 is .* expected dfe7bc46"):
    mathqa.load("test", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))


def test_train_file_is_pinned_by_git_blob(tmp_path):
  path = tmp_path / "train.json"
  path.write_bytes(b"hello\n")
  # `printf 'hello\n' | git hash-object --stdin`
  assert source_files.git_blob_sha1_of(path) == "ce013625030ba8dba906f756967f9e9ca394464a"
  with pytest.raises(source_files.DatasetFileError, match="git blob sha1"):
    source_files.verify(path, mathqa.RAW_FILES["train"])


def test_malformed_raw_files_name_the_file(tmp_path):
  path = tmp_path / "dev.json"
  path.write_text("[{")
  with pytest.raises(source_files.DatasetFileError, match=r"dev\.json: malformed JSON"):
    mathqa.convert_raw_file(path)
  path.write_text('[{"Problem": "add 1 and 2"}]')
  with pytest.raises(source_files.DatasetFileError,
                     match=r"dev\.json\[0\]: missing field.*official MathQA file"):
    mathqa.convert_raw_file(path)
