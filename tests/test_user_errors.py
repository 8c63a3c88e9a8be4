"""Errors a user can act on are one line that names the problem and the fix, not a trace:
unknown config keys, invalid UTF-8 in a samples file, a truncated or corrupt .safetensors."""
import io
import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import sentencepiece as spm
from safetensors.numpy import save_file

from configs import eval_execution, eval_mathqa, eval_synthesis, mathqa, pretrain, synthesis
from configs import execution as execution_config
from launch import commands, validate
from launch.overrides import closest_keys, unknown_override
from data import code_corpus
from data.source_files import DatasetFileError
from evaluation import sample_formats
from execution import cli as execution_cli
from evaluation.samples import SamplesFileError, read_samples_file
from interop import import_checkpoint
from interop.safetensors_reader import SafetensorsCheckpoint, SafetensorsError
from tests.conftest import REPO_ROOT
from training import inputs


@pytest.mark.parametrize("script, config, key, closest", [
    ("train.py", "configs/pretrain.py", "nonexistent_key", None),
    ("train.py", "configs/pretrain.py", "optimizer.learnin_rate", "optimizer.learning_rate"),
    ("eval.py", "configs/eval_synthesis.py", "sampling.temprature", "sampling.temperature"),
    ("scripts/study.py --study=temperature", "configs/eval_synthesis.py", "num_sample",
     "num_samples"),
])
def test_unknown_config_key_is_one_line(tmp_path, script, config, key, closest):
  done = subprocess.run([sys.executable, *script.split(), f"--config={config}",
                         f"--workdir={tmp_path / 'run'}", f"--config.{key}=1"],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1, done.stderr
  assert lines[0].startswith(f"error: unknown config key {key!r} (")
  assert lines[0].endswith(f"; from --config.{key}")
  if closest:
    assert f"closest valid keys: {closest}" in lines[0]
  assert not (tmp_path / "run").exists()


def test_closest_keys_compare_whole_keys_and_last_parts():
  config = pretrain.get_config()
  assert closest_keys(config, "learnin_rate")[0] == "optimizer.learning_rate"
  assert closest_keys(config, "optimizer.learnin_rate")[0] == "optimizer.learning_rate"
  assert closest_keys(config, "batch_sise")[0] == "batch_size"
  assert closest_keys(config, "zzzzzz") == []
  argv = ["train.py", "--config=configs/pretrain.py", "--config.batch_size=3",
          "--config.mesh.fsdp=2"]
  assert unknown_override(argv) is None  # valid keys pass through to config_flags


def test_invalid_utf8_in_a_samples_file_names_file_and_line(tmp_path):
  examples = [{"task": "mbpp_synthesis", "task_id": 11, "id": "mbpp/11"}]
  path = tmp_path / "s.jsonl"
  path.write_bytes(b'{"task_id": 11, "completion": "ok"}\n'
                   b'{"task_id": 11, "completion": "caf\xe9"}\n')
  with pytest.raises(SamplesFileError) as error:
    read_samples_file(str(path), examples)
  assert str(error.value) == (f"{path}:2: not valid UTF-8 (byte 0xe9 at position 35 of the "
                              "line); write the file as UTF-8")


def _safetensors(directory, name="model.safetensors"):
  path = directory / name
  save_file({"a": np.arange(64, dtype=np.float32).reshape(8, 8),
             "b": np.ones((4,), np.float32)}, str(path))
  return path


@pytest.mark.parametrize("damage, why", [
    (lambda data: data[:len(data) - 10], "ends at byte"),             # data cut short
    (lambda data: data[:40], "header of"),                             # header cut short
    (lambda data: data[:5], "shorter than the 8-byte header length"),
    (lambda data: data[:8] + b"\0" * (len(data) - 8), "header is not valid JSON"),
])
def test_truncated_or_corrupt_safetensors_names_the_file(tmp_path, damage, why):
  path = _safetensors(tmp_path)
  assert SafetensorsCheckpoint(str(tmp_path)).get("a")[2, 3] == 19  # intact: reads
  path.write_bytes(damage(path.read_bytes()))
  with pytest.raises(SafetensorsError) as error:
    SafetensorsCheckpoint(str(tmp_path))
  assert str(error.value).startswith(f"{path}: ")
  assert why in str(error.value) and "truncated or corrupt" in str(error.value)


def test_importer_reports_a_truncated_shard_in_one_line(tmp_path, capsys):
  source = tmp_path / "hf"
  source.mkdir()
  (source / "config.json").write_text(json.dumps({
      "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
      "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
      "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
      "hidden_act": "silu", "max_position_embeddings": 128}))
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(["def f(x):\n", "  return x + 1\n"] * 50), model_writer=model,
      vocab_size=280, model_type="bpe", byte_fallback=True, minloglevel=2, num_threads=1)
  (source / "tokenizer.model").write_bytes(model.getvalue())
  shard = _safetensors(source, "model-00002-of-00002.safetensors")
  shard.write_bytes(shard.read_bytes()[:-10])
  _safetensors(source, "model-00001-of-00002.safetensors")
  (source / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
  with pytest.raises(SystemExit) as exit_info:
    import_checkpoint.main(["--source", str(source), "--output", str(tmp_path / "out")])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"error: {shard}: tensor ") and len(err.splitlines()) == 1
  assert not os.path.exists(tmp_path / "out")


_EXAMPLES = [{"task": "mbpp_synthesis", "task_id": 11, "id": "mbpp/11"}]
_DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("content, where, why", [
    # ours: the nesting is inside the first record's value
    ('{"task_id": 11, "completion": "x"}\n{"task_id": 11, "completion": %s}\n' % _DEEP,
     ":2: ", "nested too deeply"),
    (_DEEP + "\n", ": ", "nested too deeply"),                      # bigcode (a JSON list)
    ('{"task_id": "Mbpp/11", "solution": %s}\n' % _DEEP, ":1: ", "nested too deeply"),
])
def test_deeply_nested_samples_are_one_error_naming_the_file(tmp_path, content, where, why):
  path = tmp_path / "s.jsonl"
  path.write_text(content)
  with pytest.raises(SamplesFileError) as error:
    sample_formats.read_samples(str(path), _EXAMPLES)
  assert str(error.value).startswith(f"{path}{where}") and why in str(error.value)


@pytest.mark.parametrize("content, where", [
    (b'{"task_id": 11, "completion": "caf\xe9"}\n', ":1: "),          # ours, detected
    (b'[["def f():\\n  return 1"],\n ["caf\xe9"]]\n', ":2: "),          # bigcode
    (b'{"task_id": "Mbpp/11", "solution": "ok"}\n{"task_id": "Mbpp/11", "solution": "\xff"}\n',
     ":2: "),                                                            # evalplus
])
def test_invalid_utf8_early_in_any_samples_format_names_file_and_line(tmp_path, content, where):
  path = tmp_path / "s.jsonl"
  path.write_bytes(content)
  with pytest.raises(SamplesFileError) as error:
    sample_formats.read_samples(str(path), _EXAMPLES)
  assert str(error.value).startswith(f"{path}{where}not valid UTF-8 (byte 0x")


@pytest.mark.parametrize("flag, value, says", [
    ("--timeout", "-1", "--timeout -1.0: must be a positive number of seconds"),
    ("--timeout", "nan", "--timeout nan: must be a positive"),
    ("--memory-mb", "10", "--memory-mb 10: must be at least 64"),
    ("--screen-batch", "-1", "--screen-batch -1: must be >= 0"),
    ("--workers", "-3", "--workers -3: must be >= 0"),
    ("--k", "0,10", "--k 0,10: expected comma-separated positive integers"),
])
def test_execution_cli_rejects_unusable_limits_in_one_line(tmp_path, capsys, flag, value, says):
  source = tmp_path / "in.jsonl"
  source.write_text('{"id": "a", "program": "", "tests": []}\n')
  status = execution_cli.main(["--input", str(source), "--output", str(tmp_path / "out.jsonl"),
                               flag, value])
  assert status == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: {says}"), lines
  assert not (tmp_path / "out.jsonl").exists()


def test_execution_cli_reports_a_deeply_nested_job_line(tmp_path, capsys):
  source = tmp_path / "in.jsonl"
  source.write_text('{"id": "a", "program": "", "tests": []}\n' + _DEEP + "\n")
  assert execution_cli.main(["--input", str(source), "--output", str(tmp_path / "o.jsonl")]) == 2
  assert capsys.readouterr().err == f"error: {source}:2: JSON nested too deeply to parse (a job " \
                                    "is an object of strings)\n"


@pytest.mark.parametrize("key, value, says", [
    ("num_train_steps", -5, "--config.num_train_steps=-5: must be a positive integer"),
    ("seq_len", 0, "--config.seq_len=0: must be a positive integer"),
    ("model", "huge", "--config.model='huge': must be a preset (tiny, 244m"),
    ("model_overrides.dtype", "float16",
     "--config.model_overrides.dtype='float16': must be one of float32, bfloat16"),
    ("optimizer.learning_rate", float("nan"),
     "--config.optimizer.learning_rate=nan: must be a finite number > 0"),
    ("optimizer.decay", "step", "--config.optimizer.decay='step': must be one of cosine"),
    ("data.task", "c_code", "--config.data.task='c_code': must be one of python_code, "),
    ("grad_accum_steps", 3, "--config.batch_size=16 must be a multiple of "
                            "--config.grad_accum_steps=3"),
])
def test_train_config_values_are_checked_up_front(key, value, says):
  config = pretrain.get_config()
  assert validate.train_problem(config) is None
  with config.unlocked():
    parent, _, leaf = key.rpartition(".")
    (config[parent] if parent else config)[leaf] = value
  assert validate.train_problem(config).startswith(says)


@pytest.mark.parametrize("key, value, says", [
    ("split", "dev", "--config.split='dev': must be one of prompt, test, validation, train"),
    ("task", "apps", "--config.task='apps': must be one of mbpp_synthesis"),
    ("pass_at_k", (0,), "--config.pass_at_k=(0,): must be positive integers"),
    ("num_samples", 0, "--config.num_samples=0: must be a positive integer"),
    ("sandbox.timeout_s", -1.0, "--config.sandbox.timeout_s=-1.0: must be a positive number"),
    ("sandbox.memory_mb", 10, "--config.sandbox.memory_mb=10: must be an integer >= 64"),
    ("sandbox.workers", -3, "--config.sandbox.workers=-3: must be an integer >= 0"),
    ("sandbox.screen_batch", -1, "--config.sandbox.screen_batch=-1: must be an integer >= 0"),
    ("sampling.top_p", 0.0, "--config.sampling.top_p=0.0: must be a number in (0, 1]"),
    ("prompt.variant", "x", "--config.prompt.variant='x': task mbpp_synthesis has no such"),
])
def test_eval_config_values_are_checked_up_front(key, value, says):
  config = eval_synthesis.get_config()
  assert validate.eval_problem(config) is None
  parent, _, leaf = key.rpartition(".")
  (config[parent] if parent else config)[leaf] = value
  assert validate.eval_problem(config).startswith(says)


def test_shipped_configs_pass_and_the_task_lists_agree():
  for module in (pretrain, synthesis, execution_config, mathqa):
    assert validate.train_problem(module.get_config()) is None, module.__name__
  for module in (eval_synthesis, eval_execution, eval_mathqa):
    assert validate.eval_problem(module.get_config()) is None, module.__name__
  assert validate.TRAIN_TASKS == inputs.TASKS


@pytest.mark.parametrize("args, says", [
    (["train.py", "--config=configs/pretrain.py", "--config.optimizer.learning_rate=nan"],
     "error: --config.optimizer.learning_rate=nan: must be a finite number > 0"),
    (["eval.py", "--config.samples_path=x.jsonl", "--config.pass_at_k=(0,)"],
     "error: --config.pass_at_k=(0,): must be positive integers"),
])
def test_entry_points_refuse_a_bad_value_in_one_line(tmp_path, args, says):
  done = subprocess.run([sys.executable, *args, f"--workdir={tmp_path / 'run'}"],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2
  assert len(done.stderr.strip().splitlines()) == 1, done.stderr
  assert done.stderr.startswith(says), done.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("files, says", [
    ({}, "has 0 usable .py files"),
    ({"only.py": "x = 1\n", "empty.py": "", "notes.txt": "x"}, "has 1 usable .py files"),
    (None, "does not exist (or is not a directory)"),
])
def test_an_empty_or_missing_corpus_directory_is_one_error(tmp_path, files, says):
  source = tmp_path / "src"
  if files is not None:
    source.mkdir()
    for name, text in files.items():
      (source / name).write_text(text)
  with pytest.raises(DatasetFileError) as error:
    code_corpus.load_code_corpus("train", data_dir=tmp_path / "tfds", source_dir=source)
  assert str(error.value).startswith(f"code corpus source directory {source} {says}")
  assert "--config.data.source_dir" in str(error.value)


def test_entry_points_report_a_dataset_problem_in_one_line(monkeypatch):
  """run_or_fail gives a DatasetFileError (an empty corpus, MBPP offline) to fail(): one
  line and exit status 2, where it used to propagate as a 100-line trace."""
  failed = []
  monkeypatch.setattr(commands, "fail", failed.append)

  def run():
    raise DatasetFileError("mbpp.jsonl is not in the local directory and downloading failed")
  commands.run_or_fail(run)
  assert failed == ["mbpp.jsonl is not in the local directory and downloading failed"]


def _raw_safetensors(path, header, data=b""):
  text = json.dumps(header).encode()
  path.write_bytes(len(text).to_bytes(8, "little") + text + data)


@pytest.mark.parametrize("entry, data, says", [
    ({"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}, b"\0" * 16,
     "tensor w: shape [-2, -2] is not a list of non-negative integers"),
    ({"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}, b"\0" * 8,
     "tensor w: shape [2, -1] is not a list"),
    # 2**32 x 2**32 x 4 bytes wraps to 0 in numpy's int64: it must not pass for 0 bytes.
    ({"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}, b"",
     "tensor w: 0 bytes for shape [4294967296, 4294967296] of F32"),
    ({"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}, b"\0" * 16, "is not a list"),
    ({"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}, b"\0" * 16,
     "tensor w has dtype 'C64', which this reader does not support (F64, "),
])
def test_malformed_safetensors_headers_are_one_error(tmp_path, entry, data, says):
  path = tmp_path / "model.safetensors"
  _raw_safetensors(path, {"w": entry}, data)
  with pytest.raises(SafetensorsError) as error:
    SafetensorsCheckpoint(str(tmp_path))
  assert str(error.value).startswith(f"{path}: ") and says in str(error.value), error.value


def test_fp8_safetensors_tensors_are_read(tmp_path):
  values = np.array([1.0, -2.0, 0.5, 448.0], np.float32)
  e4m3, e5m2 = (values.astype(t).tobytes() for t in (ml_dtypes.float8_e4m3fn,
                                                     ml_dtypes.float8_e5m2))
  _raw_safetensors(tmp_path / "model.safetensors", {
      "a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]},
      "b": {"dtype": "F8_E5M2", "shape": [2, 2], "data_offsets": [4, 8]}}, e4m3 + e5m2)
  checkpoint = SafetensorsCheckpoint(str(tmp_path))
  np.testing.assert_array_equal(checkpoint.get("a").astype(np.float32), values)
  np.testing.assert_array_equal(checkpoint.get("b").astype(np.float32), values.reshape(2, 2))


@pytest.mark.parametrize("layout, says", [
    ("dir_as_file", "model.safetensors: not a regular file (a directory?)"),
    ("dir_as_index", "model.safetensors.index.json: not an index"),
    ("file_as_source", "is not a directory: pass the checkpoint's directory"),
])
def test_a_directory_where_a_file_belongs_and_vice_versa(tmp_path, layout, says):
  source = tmp_path / "hf"
  source.mkdir()
  if layout == "dir_as_file":
    (source / "model.safetensors").mkdir()
  elif layout == "dir_as_index":
    (source / "model.safetensors.index.json").mkdir()
  else:
    source = _safetensors(source)
  with pytest.raises((SafetensorsError, FileNotFoundError)) as error:
    SafetensorsCheckpoint(str(source))
  assert says in str(error.value)


@pytest.mark.parametrize("damage", ["metadata", "data", "model_config"])
def test_a_damaged_checkpoint_is_one_line_naming_the_steps_to_use(tmp_path, damage):
  import jax  # pylint: disable=import-outside-toplevel
  from model import run_dir  # pylint: disable=import-outside-toplevel
  from model.presets import PRESETS  # pylint: disable=import-outside-toplevel
  params = {"w": np.random.default_rng(0).normal(size=(64, 256)).astype(np.float32)}
  for step in (1, 2):
    run_dir.save_params_checkpoint(str(tmp_path), params, PRESETS["tiny"], step=step)
  newest = tmp_path / "checkpoints" / "2"
  if damage == "metadata":
    (newest / "params" / "_METADATA").write_text("{}")
  elif damage == "data":
    biggest = max((p for p in (newest / "params").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:100])
  else:
    (newest / "model_config" / "metadata").write_text('{"vocab_size": ')
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  with pytest.raises(run_dir.CheckpointError) as error:
    if damage == "model_config":
      run_dir.load_model_config(str(tmp_path))
    else:
      run_dir.load_params(str(tmp_path), abstract)
  message = str(error.value)
  assert message.startswith(f"checkpoint step 2 in {newest.parent} is damaged (")
  assert "\n" not in message, message
  assert f"point at the previous step instead ({newest.parent / '1'})" in message
  np.testing.assert_array_equal(  # the step named instead reads
      run_dir.load_params(str(tmp_path / "checkpoints" / "1"), abstract)["w"], params["w"])
