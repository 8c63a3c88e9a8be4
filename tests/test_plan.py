"""The ahead-of-time plan (training/plan.py, training/aot.py): its memory figures account for
the arrays the step holds, remat policies change what it keeps, the command prints one JSON
line, and train() refuses a run whose step cannot fit before its first step."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import pretrain
from data.code_corpus import stdlib_dir
from model.sharding import batch_sharding, make_mesh
from training import aot, plan
from training.loop import resolve_model_config, train
from training.optimizer import make_optimizer
from training.state import make_layout

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(**model_overrides):
  config = pretrain.get_config()  # the tiny preset
  config.seq_len = 64
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  for key, value in model_overrides.items():
    config.model_overrides[key] = value
  return config


def _bytes_on_one_device(abstract_tree) -> int:
  """What one device holds of sharded abstract arrays: its shard of each."""
  return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize
             for x in jax.tree.leaves(abstract_tree))


def test_plan_memory_accounts_for_the_arrays_the_step_holds():
  config = _config()
  model_cfg = plan.for_platform(resolve_model_config(config), "gpu")
  assert model_cfg.kernels == "xla"  # "auto" planned for a GPU
  result = plan.plan(config, model_cfg, device_memory_gib=1.0)

  mesh = make_mesh(2, 2, 2)
  layout = make_layout(model_cfg, make_optimizer(config.optimizer, 10)[0], mesh)
  state_bytes = _bytes_on_one_device(layout.abstract_state)
  batch_bytes = _bytes_on_one_device(aot.abstract_batch(16, 64, batch_sharding(mesh)))
  used = result["bytes_per_device"]
  # The step's arguments are exactly this device's shards of the state and of the batch; the
  # donated state's buffers are all reused for the new state.
  assert used["arguments"] == state_bytes + batch_bytes
  assert used["aliased"] == state_bytes
  assert used["outputs"] >= state_bytes and used["temporaries"] > 0
  assert used["total"] == (used["arguments"] + used["temporaries"] + used["outputs"] -
                           used["aliased"])
  # Sharding really divides the state: params + 2 Adam moments over fsdp x tensor, not 8x.
  assert state_bytes < 3 * 4 * result["params"] / 2
  assert result["fits"] is True and result["device_memory_gib"] == 1.0
  assert result["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}

  # MaxText's model FLOPs: 6 per token and weight-matmul parameter (every parameter but the
  # norm scales; the tied embedding counts once, as the LM head) + causal attention.
  norm_params = (2 * model_cfg.num_layers + 1) * model_cfg.d_model
  tokens = 16 * 64
  attention = 6 * model_cfg.num_layers * 64 * model_cfg.num_heads * model_cfg.head_dim
  assert result["flops_per_step"] == pytest.approx(
      tokens * (6 * (result["params"] - norm_params) + attention), rel=1e-12)


def test_remat_policies_trade_temporaries_for_recomputation():
  temporaries = {}
  for remat in ("none", "save_dots", "full"):
    config = _config(remat=remat, num_layers=2, vocab_size=512)  # small: three compilations
    model_cfg = plan.for_platform(resolve_model_config(config), "gpu")
    temporaries[remat] = plan.plan(config, model_cfg)["bytes_per_device"]["temporaries"]
  assert temporaries["none"] > temporaries["save_dots"] > temporaries["full"], temporaries


def test_plan_command_prints_one_json_line_and_fails_when_it_does_not_fit():
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  command = [sys.executable, "-m", "training.plan", "--config=configs/pretrain.py",
             "--devices=8", "--config.mesh.data=2", "--config.mesh.fsdp=4",
             "--config.seq_len=64", "--device_memory_gib=0.001"]
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)
  lines = done.stdout.strip().splitlines()
  assert len(lines) == 1, done.stdout + done.stderr
  result = json.loads(lines[0])
  assert result["devices"] == 8 and result["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
  assert (result["model"], result["batch_size"], result["seq_len"]) == ("tiny", 16, 64)
  assert result["fits"] is False and done.returncode == 1
  assert result["bytes_per_device"]["total"] > 0.001 * 2**30


@pytest.mark.slow  # end to end: tokenizer, data, two train() calls
def test_train_refuses_a_step_that_cannot_fit_and_runs_one_that_does(tmp_path):
  source = tmp_path / "corpus"
  source.mkdir()
  for name in ("textwrap.py", "shlex.py", "bisect.py", "heapq.py"):
    shutil.copy(stdlib_dir() / name, source / name)
  config = _config(vocab_size=512)
  config.data.source_dir = str(source)
  config.data.data_dir = str(tmp_path / "tfds")
  config.batch_size, config.num_train_steps, config.log_every = 8, 2, 1
  config.eval_batches = 0
  config.device_memory_gib = 0.001
  with pytest.raises(aot.DoesNotFit, match=r"needs [0-9.]+ GiB per device, more than the "
                                            r"0\.00 GiB available \(arguments"):
    train(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any checkpoint
  config.device_memory_gib = 64.0
  assert train(config, str(tmp_path / "run"))["step"] == 2
