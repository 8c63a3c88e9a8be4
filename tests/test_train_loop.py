"""train(): resume == uninterrupted, init_from, metrics.jsonl, and clear errors for bad input.

Runs the real loop on a small corpus of standard-library files with a 512-piece tokenizer and
the tiny preset (vocab overridden), on the 8 fake CPU devices with an fsdp x tensor mesh.
"""
import os
import shutil

import jax
import numpy as np
import pytest

from configs import pretrain
from data.code_corpus import stdlib_dir
from model import run_dir
from training.loop import resolve_model_config, train, validate_config
from training.metrics import read_metrics
from training.state import make_layout
from training.optimizer import make_optimizer
from model.sharding import make_mesh, resolve_mesh_sizes

_FILES = ("textwrap.py", "shlex.py", "bisect.py", "heapq.py", "fnmatch.py", "glob.py",
          "colorsys.py", "keyword.py", "this.py", "struct.py", "copy.py", "abc.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  src = tmp_path_factory.mktemp("corpus_src")
  for name in _FILES:
    shutil.copy(stdlib_dir() / name, src / name)
  return {"source_dir": str(src), "data_dir": str(tmp_path_factory.mktemp("tfds"))}


def _config(corpus, **overrides):
  config = pretrain.get_config()
  config.data.source_dir = corpus["source_dir"]
  config.data.data_dir = corpus["data_dir"]
  config.model_overrides.vocab_size = 512
  config.batch_size = 8
  config.seq_len = 64
  config.num_train_steps = 8
  config.log_every = 2
  config.eval_every = 4
  config.eval_batches = 2
  config.checkpoint_every = 4
  config.optimizer.warmup_steps = 2
  config.mesh.data = 2
  config.mesh.fsdp = 2
  config.mesh.tensor = 2
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _final_params(workdir, config):
  layout = make_layout(resolve_model_config(config),
                       make_optimizer(config.optimizer, config.num_train_steps)[0],
                       make_mesh(2, 2, 2))
  return run_dir.load_params(workdir, layout.abstract_state["params"])


def test_resume_after_stop_equals_uninterrupted_run(corpus, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  config = _config(corpus)
  train(config, straight)
  # First attempt stops after step 6 (checkpoint at 4, steps 5-6 lost as in a crash; their
  # metrics lines are logged and must be replaced, not duplicated, by the restart).
  train(_config(corpus, stop_at_step=6), resumed)
  assert [r["step"] for r in read_metrics(os.path.join(resumed, "metrics.jsonl"))
          if "loss" in r] == [2, 4, 6]
  train(config, resumed)

  a, b = (read_metrics(os.path.join(d, "metrics.jsonl")) for d in (straight, resumed))
  keys = ("step", "loss", "grad_norm", "learning_rate", "eval_loss")
  assert [[r.get(k) for k in keys] for r in a] == [[r.get(k) for k in keys] for r in b]
  assert [r["step"] for r in a] == [2, 4, 6, 8]
  assert a[-1]["loss"] < a[0]["loss"]

  params_a, params_b = _final_params(straight, config), _final_params(resumed, config)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
               params_a, params_b)


def test_metrics_records_and_workdir_contents(corpus, tmp_path):
  workdir = str(tmp_path / "run")
  train(_config(corpus, num_train_steps=4), workdir)
  records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  for key in ("step", "loss", "learning_rate", "grad_norm", "tokens_per_sec"):
    assert all(key in r for r in records), key
  assert "eval_loss" in records[-1]
  assert {"config.json", "model_config.json", "tokenizer.model", "checkpoints"} <= set(
      os.listdir(workdir))
  assert run_dir.load_model_config(workdir) == resolve_model_config(_config(corpus))


def test_init_from_starts_from_another_runs_parameters(corpus, tmp_path):
  base_dir, ft_dir = str(tmp_path / "base"), str(tmp_path / "ft")
  config = _config(corpus, num_train_steps=4)
  train(config, base_dir)
  # Learning rate 0: the finetuning run's parameters stay exactly the base run's.
  ft = _config(corpus, num_train_steps=2, init_from=base_dir, checkpoint_every=2)
  ft.optimizer.learning_rate = 0.0
  ft.optimizer.weight_decay = 0.0
  train(ft, ft_dir)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
               _final_params(base_dir, config), _final_params(ft_dir, config))
  with open(os.path.join(ft_dir, "tokenizer.model"), "rb") as f, open(
      os.path.join(base_dir, "tokenizer.model"), "rb") as g:
    assert f.read() == g.read()  # the finetuning run reuses the base run's tokenizer


def test_checkpoint_that_does_not_match_the_model_is_a_clear_error(corpus, tmp_path):
  workdir = str(tmp_path / "run")
  train(_config(corpus, num_train_steps=4), workdir)
  with pytest.raises(run_dir.CheckpointError, match=r"d_model|do not match"):
    bigger = _config(corpus, num_train_steps=8)
    bigger.model_overrides.d_model = 64
    train(bigger, workdir)


@pytest.mark.parametrize("mesh,expected", [
    ((-1, 2, 2), (2, 2, 2)), ((2, -1, 2), (2, 2, 2)), ((1, 1, -1), (1, 1, 8)),
    ((8, 1, 1), (8, 1, 1)),
])
def test_mesh_sizes_resolve_in_one_place(mesh, expected):
  assert resolve_mesh_sizes(*mesh, num_devices=8) == expected
  assert make_mesh(*mesh).devices.shape == expected


@pytest.mark.parametrize("mesh,batch_size,error", [
    # data=-1 resolves to 2, so the batch is split 2 x 2 = 4 ways: 6 rows do not divide.
    ((-1, 2, 2), 6, "divisible by mesh.data x mesh.fsdp = 4"),
    ((-1, 2, 2), 8, None),
    ((2, 2, -1), 6, "divisible by mesh.data x mesh.fsdp = 4"),
    ((1, 1, -1), 6, None),
    ((3, -1, 1), 6, "cannot be split"),
    ((2, 2, 4), 8, "needs 16 devices"),
])
def test_validate_config_resolves_the_mesh_like_make_mesh(corpus, mesh, batch_size, error):
  config = _config(corpus, batch_size=batch_size, **dict(zip(
      ("mesh.data", "mesh.fsdp", "mesh.tensor"), mesh)))
  if error is None:
    validate_config(config, num_devices=8)
  else:
    with pytest.raises(ValueError, match=error):
      validate_config(config, num_devices=8)


def test_bad_configs_fail_before_work(corpus, tmp_path):
  with pytest.raises(ValueError, match="divisible by mesh.data x mesh.fsdp"):
    train(_config(corpus, batch_size=6), str(tmp_path / "a"))
  with pytest.raises(ValueError, match="not divisible by config.grad_accum_steps"):
    train(_config(corpus, grad_accum_steps=3), str(tmp_path / "b"))
  with pytest.raises(ValueError, match="unknown model preset"):
    train(_config(corpus, model="7b"), str(tmp_path / "c"))
  with pytest.raises(ValueError, match="data.task"):
    train(_config(corpus, **{"data.task": "humaneval"}), str(tmp_path / "d"))
  with pytest.raises(Exception, match="init_from|does not exist"):
    train(_config(corpus, init_from=str(tmp_path / "nowhere")), str(tmp_path / "e"))


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["synthesis", "execution"])
def test_finetune_configs_run_from_a_pretrained_base(corpus, tmp_path, shared_data_dir,
                                                     config_name):
  """configs/{synthesis,execution}.py train on real MBPP from a base run's checkpoint."""
  import importlib  # pylint: disable=g-import-not-at-top
  base_dir = str(tmp_path / "base")
  train(_config(corpus, num_train_steps=2, checkpoint_every=2), base_dir)
  ft = importlib.import_module(f"configs.{config_name}").get_config()
  ft.init_from = base_dir
  ft.model_overrides.vocab_size = 512
  ft.data.manual_dir = str(shared_data_dir / "mbpp")
  ft.data.data_dir = str(tmp_path / "tfds")
  ft.update(dict(batch_size=8, seq_len=128, num_train_steps=4, log_every=2, eval_every=4,
                 eval_batches=1, checkpoint_every=4))
  ft.mesh.data = 8
  record = train(ft, str(tmp_path / "ft"))
  assert record["step"] == 4 and np.isfinite(record["eval_loss"])
  # Loss only on targets: far fewer target tokens than positions in a packed batch.
  assert 0 < record["target_tokens"] < 8 * 128


def test_model_init_from_takes_the_checkpoints_model(corpus, tmp_path):
  base_dir = str(tmp_path / "base")
  base = _config(corpus, num_train_steps=2, checkpoint_every=2, eval_every=0)
  train(base, base_dir)
  ft = _config(corpus, num_train_steps=1, init_from=base_dir, model="init_from", eval_every=0)
  ft.model_overrides.vocab_size = None
  assert resolve_model_config(ft) == resolve_model_config(base)
  with pytest.raises(ValueError, match="needs config.init_from"):
    resolve_model_config(_config(corpus, model="init_from"))
