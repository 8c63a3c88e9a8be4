"""MBPP builder: real data from ../shared/data/mbpp, split by task id, every field kept."""
import ast
import json
import pathlib
import shutil

import pytest

from data import mbpp
from data import source_files


def _load(mbpp_dirs, split, config="full"):
  return mbpp.load(split, config=config, **mbpp_dirs)


@pytest.mark.parametrize("config,sizes", [
    ("full", {"prompt": 10, "test": 500, "validation": 90, "train": 374}),
    ("sanitized", {"prompt": 7, "test": 257, "validation": 43, "train": 120}),
])
def test_split_sizes_and_id_ranges(mbpp_dirs, config, sizes):
  for split, size in sizes.items():
    records = _load(mbpp_dirs, split, config)
    assert len(records) == size, split
    first, last = mbpp.SPLIT_TASK_IDS[split]
    ids = [r["task_id"] for r in records]
    assert ids == sorted(set(ids)) and first <= ids[0] and ids[-1] <= last


def test_full_keeps_every_field_byte_for_byte(mbpp_dirs, shared_data_dir):
  raw = {}
  with open(shared_data_dir / "mbpp" / "mbpp.jsonl", encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      raw[record["task_id"]] = record
  built = [r for s in mbpp.SPLIT_TASK_IDS for r in _load(mbpp_dirs, s)]
  assert len(built) == 974
  for record in built:
    assert record == raw[record["task_id"]]
  # Spot checks of the dataset's quirks, which must survive the round trip.
  by_id = {r["task_id"]: r for r in built}
  assert "\r\n" in by_id[2]["code"]
  assert by_id[11]["challenge_test_list"][1] == 'assert remove_Occ("","l") == ""'
  assert "Node(" in by_id[367]["test_setup_code"]


def test_sanitized_keeps_every_field(mbpp_dirs, shared_data_dir):
  raw = {r["task_id"]: r for r in json.loads(
      (shared_data_dir / "mbpp" / "sanitized-mbpp.json").read_text())}
  built = [r for s in mbpp.SPLIT_TASK_IDS for r in _load(mbpp_dirs, s, "sanitized")]
  assert len(built) == 427
  for record in built:
    assert record == raw[record["task_id"]]
  assert sum(1 for r in built if r["test_imports"]) == 13


@pytest.mark.parametrize("config", ["full", "sanitized"])
def test_every_reference_solution_and_test_parses(mbpp_dirs, config):
  for split in mbpp.SPLIT_TASK_IDS:
    for record in _load(mbpp_dirs, split, config):
      ast.parse(record["code"])
      for test in record["test_list"] + record.get("challenge_test_list", []):
        ast.parse(test.strip())


def test_split_of_task_id():
  assert [mbpp.split_of_task_id(i) for i in (1, 10, 11, 510, 511, 600, 601, 974)] == [
      "prompt", "prompt", "test", "test", "validation", "validation", "train", "train"]
  with pytest.raises(ValueError, match="975"):
    mbpp.split_of_task_id(975)


def test_checksum_mismatch_names_file_and_remedy(shared_data_dir, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  data = (shared_data_dir / "mbpp" / "mbpp.jsonl").read_bytes()
  (manual / "mbpp.jsonl").write_bytes(data.replace(b"similar", b"SIMILAR", 1))
  with pytest.raises(source_files.DatasetFileError,
                     match=r"mbpp\.jsonl: sha256 is .* expected ccf64cea.*Replace it"):
    mbpp.load("test", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))


def test_malformed_line_names_file_and_line(tmp_path):
  path = tmp_path / "mbpp.jsonl"
  path.write_text('{"text": "x"}\nnot json\n')
  with pytest.raises(source_files.DatasetFileError, match=r"mbpp\.jsonl:1: missing field"):
    mbpp.read_full_file(path)
  path.write_text(json.dumps({f: 1 if f == "task_id" else [] if "list" in f else ""
                              for f in mbpp.FULL_FIELDS}) + "\nnot json\n")
  with pytest.raises(source_files.DatasetFileError, match=r"mbpp\.jsonl:2: malformed JSON"):
    mbpp.read_full_file(path)


def test_offline_without_local_file_says_what_to_do(tmp_path, monkeypatch):
  def no_network(url, directory, timeout_s=None):
    raise ConnectionError(f"cannot reach {url}")
  monkeypatch.setattr(source_files, "fetch_once", no_network)
  with pytest.raises(source_files.DatasetFileError,
                     match=r"sanitized-mbpp\.json is not in the local directory.*"
                           r"30adf0ec.*pass it as manual_dir"):
    mbpp.load("test", config="sanitized", data_dir=str(tmp_path / "tfds"),
              manual_dir=str(tmp_path / "empty"))


def test_downloaded_file_is_verified(shared_data_dir, tmp_path, monkeypatch):
  """The online path: what the download returns is checksummed, then used."""
  downloaded = tmp_path / "dl" / "mbpp.jsonl"
  downloaded.parent.mkdir()
  shutil.copy(shared_data_dir / "mbpp" / "mbpp.jsonl", downloaded)
  urls = []

  def fake_download(url, directory, timeout_s=None):
    urls.append(url)
    return pathlib.Path(downloaded)
  monkeypatch.setattr(mbpp.source_files, "fetch_once", fake_download)
  records = mbpp.load("prompt", data_dir=str(tmp_path / "tfds"), manual_dir=None)
  assert urls == [mbpp.FULL_FILE.url] and len(records) == 10
