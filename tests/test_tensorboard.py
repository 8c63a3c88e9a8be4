"""TensorBoard event files, read back with TensorBoard's own reader (EventAccumulator):
train.py's curves and hparams, resume hiding the dead run's steps, W&B when enabled, and
eval.py's / compare.py's headline numbers."""
import json
import pathlib
import subprocess
import sys
import types

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from configs import eval_synthesis, pretrain
from evaluation import compare
from evaluation.runner import run_eval
from evaluation.summaries import headline_scalars
from tests.test_train_loop import _config, corpus  # noqa: F401  (module fixture)
from training.loop import train
from training.metrics import MetricsWriter, read_metrics


def _reader(logdir) -> event_accumulator.EventAccumulator:
  reader = event_accumulator.EventAccumulator(str(logdir))
  reader.Reload()
  return reader


def _scalars(reader, tag) -> list[tuple[int, float]]:
  return [(e.step, pytest.approx(e.value, rel=1e-6)) for e in reader.Scalars(tag)]


def _session_hparams(reader) -> dict:
  content = reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]
  hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
  return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
          for k, v in hparams.items()}


@pytest.mark.slow
def test_training_writes_the_logged_metrics_and_hparams(corpus, tmp_path):  # noqa: F811
  config = _config(corpus, num_train_steps=4, log_every=2, eval_every=4, checkpoint_every=4,
                   peak_flops_per_device=1e12)
  train(config, str(tmp_path))
  logged = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "loss" in r]
  reader = _reader(tmp_path)
  for key in ("loss", "learning_rate", "grad_norm", "tokens_per_sec", "mfu"):
    assert _scalars(reader, f"train/{key}") == [(r["step"], r[key]) for r in logged], key
  assert _scalars(reader, "eval/loss") == [(4, logged[-1]["eval_loss"])]
  hparams = _session_hparams(reader)
  assert hparams["batch_size"] == 8 and hparams["model"] == "tiny"
  assert hparams["optimizer.learning_rate"] == pytest.approx(config.optimizer.learning_rate)


def test_a_resumed_run_replaces_the_steps_the_dead_run_logged(tmp_path):
  config = pretrain.get_config()
  path = str(tmp_path / "metrics.jsonl")
  first = MetricsWriter(path, 0, config=config)
  for step in (1, 2, 3, 4):  # Died after step 4; its last checkpoint was step 2.
    first.write({"step": step, "loss": float(step)})
  first.close()
  resumed = MetricsWriter(path, 2, config=config)
  for step in (3, 4):
    resumed.write({"step": step, "loss": 10.0 * step})
  resumed.close()
  assert _scalars(_reader(tmp_path), "train/loss") == [(1, 1.0), (2, 2.0), (3, 30.0),
                                                       (4, 40.0)]
  assert [r["loss"] for r in read_metrics(path)] == [1.0, 2.0, 30.0, 40.0]


def test_wandb_logs_the_same_records_when_enabled(tmp_path, monkeypatch):
  calls = []

  class Run:
    def log(self, values, step):
      calls.append((step, values))

    def finish(self):
      calls.append("finish")

  def init(**kwargs):
    calls.append(kwargs)
    return Run()
  monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
  config = pretrain.get_config()
  config.wandb.enabled = True
  config.wandb.project = "synthesis"
  writer = MetricsWriter(str(tmp_path / "run7" / "metrics.jsonl"), 0, config=config)
  writer.write({"step": 10, "loss": 2.5, "eval_loss": 3.0, "eta_sec": 9.0})
  writer.close()
  assert calls[0]["project"] == "synthesis" and calls[0]["name"] == "run7"
  assert calls[0]["config"]["optimizer.learning_rate"] == config.optimizer.learning_rate
  assert calls[1:] == [(10, {"train/loss": 2.5, "eval/loss": 3.0}), "finish"]
  monkeypatch.setitem(sys.modules, "wandb", None)  # Not installed: said before training.
  with pytest.raises(ValueError, match="config.wandb.enabled needs the wandb package"):
    MetricsWriter(str(tmp_path / "metrics.jsonl"), 0, config=config)


def test_eval_and_compare_write_the_headline_numbers(mbpp_dirs, tmp_path):
  samples = tmp_path / "s.jsonl"
  problems = [json.loads(line) for line in open(f"{mbpp_dirs['manual_dir']}/mbpp.jsonl")]
  with open(samples, "w") as f:
    for p in problems[10:13]:  # Task ids 11..13: a right and a wrong sample each.
      for completion in (p["code"], "return"):
        f.write(json.dumps({"task_id": p["task_id"], "completion": completion}) + "\n")
  config = eval_synthesis.get_config()
  config.update({"samples_path": str(samples), "max_problems": 3, "pass_at_k": (1, 2)})
  config.data.manual_dir, config.data.data_dir = mbpp_dirs["manual_dir"], mbpp_dirs["data_dir"]
  config.meta.model = "external"
  workdir = tmp_path / "eval"
  results = run_eval(config, str(workdir))
  results = run_eval(config, str(workdir))  # A rerun replaces the numbers, not adds to them.
  reader = _reader(workdir)
  assert _scalars(reader, "mbpp_synthesis/pass_at_1") == [(0, 0.5)]
  assert _scalars(reader, "mbpp_synthesis/pass_at_2") == [(0, 1.0)]
  assert _scalars(reader, "mbpp_synthesis/pass_rate") == [(0, 0.5)]
  assert _scalars(reader, "mbpp_synthesis/status/passed") == [(0, 3.0)]
  assert _scalars(reader, "mbpp_synthesis/status/syntax_error") == [
      (0, float(results["status_counts"]["syntax_error"]))]
  assert _session_hparams(reader)["model"] == "external"

  written = compare.write_comparison(compare.gather([str(workdir)]), str(tmp_path / "cmp"))
  run, = [w for w in written if "/tensorboard/" in w]
  reader = _reader(run)
  assert _scalars(reader, "mbpp_synthesis/pass_at_2") == [(0, 1.0)]
  assert _scalars(reader, "mbpp_synthesis/pass_rate") == [(0, 0.5)]
  assert _session_hparams(reader)["objective"] == "few-shot"


def test_execution_accuracy_is_the_share_of_right_predictions():
  results = {"meta": {"task": "mbpp_execution"}, "pass_at_k": {"1": 0.25}, "pass_rate": 0.25,
             "problems_solved": 0.25, "status_counts": {"passed": 1, "failed": 3},
             "challenge": None}
  assert headline_scalars(results) == {
      "mbpp_execution/pass_at_1": 0.25, "mbpp_execution/pass_rate": 0.25,
      "mbpp_execution/problems_solved": 0.25, "mbpp_execution/execution_accuracy": 0.25,
      "mbpp_execution/status/passed": 1.0, "mbpp_execution/status/failed": 3.0}


def test_eval_logs_its_headline_numbers_to_wandb_when_enabled(tmp_path, monkeypatch):
  from evaluation import summaries  # pylint: disable=g-import-not-at-top
  calls = []
  run = types.SimpleNamespace(log=lambda values: calls.append(values),
                              finish=lambda: calls.append("finish"))

  def init(**kwargs):
    calls.append(kwargs)
    return run
  monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
  results = {"meta": {"task": "mbpp_synthesis", "model": "m", "config": {}},
             "pass_at_k": {"1": 0.5}, "status_counts": {}}
  assert not summaries.log_to_wandb(str(tmp_path / "ev"), results)  # Not enabled: nothing.
  results["meta"]["config"] = {"wandb": {"enabled": True, "project": "p"}}
  assert summaries.log_to_wandb(str(tmp_path / "ev"), results)
  assert calls[0]["name"] == "ev" and calls[0]["config"] == {"model": "m",
                                                             "task": "mbpp_synthesis"}
  assert calls[1:] == [{"mbpp_synthesis/pass_at_1": 0.5}, "finish"]


def test_tensorboardx_is_imported_without_torch_and_torch_stays_importable():
  # torch is in the test requirements (the transformers parity tests): without it this would
  # prove nothing.
  pytest.importorskip("torch")
  code = ("import sys; from rundir.tensorboard import import_tensorboardx; "
          "tensorboardX = import_tensorboardx(); assert tensorboardX.summary.hparams; "
          "assert 'torch' not in sys.modules, 'tensorboardX imported torch'; "
          "import torch; print(torch.zeros(2).sum().item())")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        cwd=pathlib.Path(__file__).resolve().parents[1], check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "0.0"
