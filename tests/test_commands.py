"""The commands as the README writes them: default workdirs, and a missing prerequisite said
in one line (no traceback, exit status 2) before anything is loaded."""
import os
import subprocess
import sys

import pytest

from configs import eval_synthesis, synthesis
from launch import commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, *args) -> subprocess.CompletedProcess:
  """An entry point run from an empty directory (no runs/ there), as a new user would."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=120, check=False)


def test_bare_finetune_command_names_the_pretrain_command(tmp_path):
  done = _run(tmp_path, os.path.join(ROOT, "train.py"),
              f"--config={os.path.join(ROOT, 'configs', 'synthesis.py')}")
  assert done.returncode == 2 and "Traceback" not in done.stderr
  line = done.stderr.strip().splitlines()[-1]
  assert line.startswith("error: the base model config.init_from=runs/pretrain "
                         "does not exist: make it first with `python train.py "
                         "--config=configs/pretrain.py`")
  assert "--config.init_from=" in line and "interop.import_checkpoint" in line


def test_bare_eval_command_says_what_it_needs(tmp_path):
  done = _run(tmp_path, os.path.join(ROOT, "eval.py"))
  assert done.returncode == 2 and "Traceback" not in done.stderr
  line = done.stderr.strip().splitlines()[-1]
  assert line.startswith("error: no model or samples to score: set "
                         "--config.checkpoint=RUN")
  assert "--config.samples_path=FILE" in line


def test_default_workdirs():
  assert commands.train_workdir("configs/synthesis.py") == "runs/synthesis"
  assert commands.train_workdir("/abs/configs/pretrain.py:arg") == "runs/pretrain"
  config = eval_synthesis.get_config()
  assert commands.eval_workdir(commands.DEFAULT_EVAL_CONFIG, config) == "runs/eval_synthesis"
  config.checkpoint = "runs/synthesis/"
  assert commands.eval_workdir("configs/eval_synthesis.py", config) == (
      "runs/eval_synthesis-synthesis")
  config.checkpoint = "runs/synthesis/checkpoints/150"
  assert commands.eval_workdir("configs/eval_synthesis.py", config) == (
      "runs/eval_synthesis-synthesis-150")
  config.samples_path = "out/generations_mbpp.json"
  assert commands.eval_workdir("configs/eval_synthesis.py", config) == (
      "runs/eval_synthesis-generations_mbpp")


def test_prerequisites_that_exist_pass(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = synthesis.get_config()
  assert "make it first" in commands.train_problem(config)
  os.makedirs("runs/pretrain")
  assert commands.train_problem(config) is None
  config.init_from = "elsewhere/run"
  message = commands.train_problem(config)
  assert "elsewhere/run does not exist: point --config.init_from=" in message
  assert "make it first" not in message  # No README command makes that run.
  config = eval_synthesis.get_config()
  config.checkpoint = "runs/synthesis"
  assert commands.eval_problem(config) == (
      "the checkpoint --config.checkpoint=runs/synthesis does not exist: make it first with "
      "`python train.py --config=configs/synthesis.py`")
  config.samples_path = "missing.jsonl"
  assert "samples_path=missing.jsonl does not exist" in commands.eval_problem(config)
  (tmp_path / "s.jsonl").write_text("")
  config.samples_path = "s.jsonl"
  assert commands.eval_problem(config) is None
  config.cpu_devices = -2
  assert commands.eval_problem(config) == (
      "--config.cpu_devices=-2: must be an integer >= 0 (0 = one per CPU core)")
  config.cpu_devices = 0
  config.prompt_overflow = "cut"
  assert commands.eval_problem(config).startswith(
      "--config.prompt_overflow='cut': must be one of drop_shots, fail")
  config.prompt_overflow = "fail"
  config.sampling.max_new_tokens = -1
  assert commands.eval_problem(config) == (
      "--config.sampling.max_new_tokens=-1: must be an integer >= 0 (0 = computed for the model "
      "and task)")
  config.sampling.max_new_tokens = 0
  config.cpu_sampling_memory_mb = -1
  assert commands.eval_problem(config) == (
      "--config.cpu_sampling_memory_mb=-1: must be an integer >= 0 (0 = a share of the "
      "host's available memory)")


@pytest.mark.parametrize("name", ["pretrain", "synthesis", "execution", "mathqa"])
def test_train_configs_name_their_default_workdir_in_the_finetune_chain(name):
  """The finetuning configs start from runs/pretrain: the pretrain command's default."""
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  init_from = module.get_config().init_from
  assert init_from in ("", commands.train_workdir("configs/pretrain.py"))


def test_a_relative_run_path_resolves_to_an_absolute_checkpoint(tmp_path, monkeypatch):
  """`--config.init_from=runs/pretrain` as written: orbax refuses relative paths."""
  from model import run_dir  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  os.makedirs(os.path.join("runs", "pretrain", "checkpoints", "4", "params"))
  directory, step = run_dir.resolve_checkpoint("runs/pretrain")
  assert str(directory) == str(tmp_path / "runs" / "pretrain" / "checkpoints") and step == 4


def test_wandb_enabled_without_the_package_is_said_up_front(monkeypatch):
  monkeypatch.setattr(commands.importlib.util, "find_spec",
                      lambda name: None if name == "wandb" else object())
  for config, problem in ((synthesis.get_config(), commands.train_problem),
                          (eval_synthesis.get_config(), commands.eval_problem)):
    config.wandb.enabled = True
    assert problem(config).startswith("--config.wandb.enabled=true needs the wandb package")
