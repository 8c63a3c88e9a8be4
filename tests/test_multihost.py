"""Multi-host for real: 2 processes x 4 CPU devices through jax.distributed on 127.0.0.1.

Both processes run train.py (each loading half of every batch) from a checkpoint one process
wrote; the losses must equal those of 1 process with 8 devices, and one process must continue
from the checkpoint the two wrote. (Two processes starting from scratch: test_train_resilience.)
"""
import os

import numpy as np
import pytest

from tests import multiprocess
from tests.test_train_loop import _config, corpus  # noqa: F401  (module fixture)
from training.loop import train
from training.metrics import read_metrics


def _run_two_processes(config, workdir: str, timeout: int = 600) -> None:
  processes = multiprocess.start_processes(lambda _: [
      "train.py", "--config=configs/pretrain.py", f"--workdir={workdir}",
      *multiprocess.config_flags(config)])
  outputs = multiprocess.wait_for(processes, timeout)
  for p, out in zip(processes, outputs):
    assert p.returncode == 0, out[-4000:]


def _losses(workdir):
  return [(r["step"], r["loss"]) for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))
          if "loss" in r]


def _config_of(corpus_dir, steps):
  # 2 logical data shards in every run, so every global batch is the same.
  return _config(corpus_dir, num_train_steps=steps, eval_every=0, checkpoint_every=2,
                 **{"data.num_shards": 2, "mesh.data": 4, "mesh.fsdp": 2, "mesh.tensor": 1})


@pytest.mark.slow
def test_two_processes_match_one_process_and_checkpoints_cross_over(corpus, tmp_path):  # noqa: F811
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  train(_config_of(corpus, 4), one)
  # Written by 1 process, continued by 2 (restoring a checkpoint across process counts,
  # each process loading half of every batch): the single process's numbers.
  train(_config_of(corpus, 2), two)
  _run_two_processes(_config_of(corpus, 4), two)
  a, b = _losses(one), _losses(two)
  assert [s for s, _ in a] == [s for s, _ in b] == [2, 4]
  np.testing.assert_allclose([l for _, l in b], [l for _, l in a], rtol=1e-5)

  # Written by 2 processes, continued by 1: same numbers as the uninterrupted single-process
  # run continued the same way.
  train(_config_of(corpus, 6), one)
  train(_config_of(corpus, 6), two)
  a, b = _losses(one), _losses(two)
  assert [s for s, _ in b] == [2, 4, 6]
  np.testing.assert_allclose([l for _, l in b], [l for _, l in a], rtol=1e-5)
