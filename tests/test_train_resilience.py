"""Training survives what clusters do to it: SIGTERM (preemption), a corrupt newest checkpoint,
a refused restart, a full disk. Each restart must reproduce the uninterrupted run exactly.

Uses test_train_loop's tiny run (8 steps, checkpoints at 4 and 8) on the 8 fake CPU devices;
one uninterrupted run is shared by the module, and most tests start from a copy of it.
"""
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from model import checkpoint_manifest, run_dir, run_identity
from rundir import workdir_lock
from tests.conftest import REPO_ROOT
from tests import multiprocess
from tests.multiprocess import config_flags as _flags
from tests.test_train_loop import _config, _final_params, corpus  # noqa: F401  (fixture)
from training import checkpointing, loop, preemption
from training.loop import train
from training.metrics import read_metrics

_KEYS = ("step", "loss", "grad_norm", "learning_rate", "eval_loss")


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory):  # noqa: F811
  """The uninterrupted run: its workdir (do not modify it; copy it)."""
  workdir = str(tmp_path_factory.mktemp("straight") / "run")
  train(_config(corpus), workdir)
  return workdir


def _numbers(workdir):
  return [[r.get(k) for k in _KEYS] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))]


def _assert_same_run(workdir, reference, config):
  assert _numbers(workdir) == _numbers(reference)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
               _final_params(workdir, config), _final_params(reference, config))


def _copy(straight, tmp_path, steps=(4, 8)):
  """A copy of the uninterrupted run keeping only the given checkpoint steps."""
  workdir = str(tmp_path / "run")
  shutil.copytree(straight, workdir)
  for step in run_dir.checkpoint_steps(workdir):
    if step not in steps:
      shutil.rmtree(os.path.join(run_dir.checkpoints_dir(workdir), str(step)))
  return workdir


def _biggest_file(directory):
  files = [os.path.join(d, f) for d, _, names in os.walk(directory) for f in names]
  return max(files, key=os.path.getsize)


def test_sigterm_saves_the_current_step_and_the_restart_equals_the_straight_run(
    corpus, straight, tmp_path, monkeypatch):  # noqa: F811
  workdir = str(tmp_path / "run")
  config = _config(corpus)
  real_batch, calls = loop._global_batch, [0]

  def batch_then_sigterm(*args):
    calls[0] += 1
    if calls[0] == 3:  # while step 3's batch is made (no eval batches before step 4)
      signal.raise_signal(signal.SIGTERM)
    return real_batch(*args)
  monkeypatch.setattr(loop, "_global_batch", batch_then_sigterm)
  with pytest.raises(preemption.Preempted) as stopped:
    train(config, workdir)
  assert (stopped.value.step, stopped.value.signal_name, stopped.value.saved) == (3, "SIGTERM",
                                                                                 True)
  assert "Run the same command again" in str(stopped.value)
  assert run_dir.checkpoint_steps(workdir) == [3]  # saved though not a checkpoint_every step
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
  monkeypatch.setattr(loop, "_global_batch", real_batch)
  train(config, workdir)
  _assert_same_run(workdir, straight, config)


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(corpus, straight, tmp_path,
                                                             caplog):  # noqa: F811
  workdir = _copy(straight, tmp_path)
  step_dir = os.path.join(run_dir.checkpoints_dir(workdir), "8")
  # A step without checksums (written before they existed, or its writer died before them):
  # the damage is found by decoding.
  os.remove(os.path.join(step_dir, run_dir.MANIFEST_FILE))
  bad_file = _biggest_file(os.path.join(step_dir, "params"))
  with open(bad_file, "r+b") as f:  # zeroed, as a disk or a copy can leave it
    f.write(b"\0" * os.path.getsize(bad_file))
  config = _config(corpus)
  with caplog.at_level(logging.WARNING):
    train(config, workdir)
  warnings = [r.getMessage() for r in caplog.records if "is unusable" in r.getMessage()]
  assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
  assert "checkpoints/8 is unusable" in warnings[0] and "resuming from step 4" in warnings[0]
  assert "params" in warnings[0] and "ZSTD" in warnings[0]  # which item/array, and why
  # The bad folder is kept, renamed; the run went on from step 4 exactly as it first did.
  kept = os.path.join(run_dir.checkpoints_dir(workdir), "8" + run_dir.CORRUPT_SUFFIX)
  with open(os.path.join(kept, os.path.relpath(bad_file, os.path.join(
      run_dir.checkpoints_dir(workdir), "8"))), "rb") as f:
    assert set(f.read()) == {0}
  _assert_same_run(workdir, straight, config)


@pytest.mark.parametrize("damage, where", [
    ("truncate_json", "train/_METADATA"),     # a bare JSONDecodeError before
    ("remove_shard", "data_iter/shard_0-of-1.json"),  # blamed data.num_shards before
])
def test_no_usable_checkpoint_is_one_clear_error(corpus, straight, tmp_path, damage,
                                                 where):  # noqa: F811
  workdir = _copy(straight, tmp_path)
  for step in (4, 8):
    path = os.path.join(run_dir.checkpoints_dir(workdir), str(step), where)
    if damage == "remove_shard":
      os.remove(path)
    else:
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(run_dir.CheckpointError) as error:
    train(_config(corpus), workdir)
  message = str(error.value)
  assert message.startswith("No usable checkpoint in ")
  assert f"step 8: {os.path.join(run_dir.checkpoints_dir(workdir), '8', where)}" in message
  assert f"step 4: {os.path.join(run_dir.checkpoints_dir(workdir), '4', where)}" in message
  assert "num_shards" not in message
  # The newest was set aside for the older one; the older stays (nothing left to fall back to).
  assert sorted(os.listdir(run_dir.checkpoints_dir(workdir))) == ["4", "8.corrupt"]


def test_other_shard_count_is_the_users_setting_not_corruption(corpus, straight,
                                                               tmp_path):  # noqa: F811
  workdir = _copy(straight, tmp_path, steps=(8,))
  # resume_mismatch=allow: past the identity check (num_shards changes the batches), the
  # checkpoint's own shard count still decides.
  with pytest.raises(run_dir.CheckpointError, match="restart with --config.data.num_shards=1"):
    train(_config(corpus, **{"data.num_shards": 2, "resume_mismatch": "allow"}), workdir)
  assert run_dir.checkpoint_steps(workdir) == [8]  # nothing set aside


def test_refused_restart_leaves_the_metadata_as_it_was(corpus, straight, tmp_path):  # noqa: F811
  workdir = _copy(straight, tmp_path)
  names = (run_dir.CONFIG_FILE, run_dir.MODEL_CONFIG_FILE)
  before = {n: open(os.path.join(workdir, n)).read() for n in names}
  bigger = _config(corpus, resume_mismatch="allow")  # past the identity check, to the shapes
  bigger.model_overrides.d_model = 64
  with pytest.raises(run_dir.CheckpointError, match="do not match"):
    train(bigger, workdir)
  assert {n: open(os.path.join(workdir, n)).read() for n in names} == before
  assert len(run_identity.history(workdir)) == 1  # its start only: nothing recorded
  assert run_dir.checkpoint_steps(workdir) == [4, 8]


def _resume_past_one_unusable_step(corpus, workdir, caplog):  # noqa: F811
  """Resumes `workdir`; (the config, the one warning that set its newest step aside)."""
  config = _config(corpus)
  with caplog.at_level(logging.WARNING):
    train(config, workdir)
  warnings = [r.getMessage() for r in caplog.records if "is unusable" in r.getMessage()]
  assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
  return config, warnings[0]


def test_every_saved_step_has_checksums_and_a_flipped_bit_is_set_aside(
    corpus, straight, tmp_path, caplog):  # noqa: F811
  """One flipped bit in a parameter file decodes (no error) to other numbers: the checksums
  written after the save catch it, and the run falls back to step 4."""
  for step in run_dir.checkpoint_steps(straight):
    assert checkpoint_manifest.verify(os.path.join(run_dir.checkpoints_dir(straight), str(step)))
  workdir = _copy(straight, tmp_path)
  bad_file = _biggest_file(os.path.join(run_dir.checkpoints_dir(workdir), "8", "params"))
  with open(bad_file, "r+b") as f:
    f.seek(os.path.getsize(bad_file) - 1)  # the last byte: inside the data, not a header
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0x01]))
  config, warning = _resume_past_one_unusable_step(corpus, workdir, caplog)
  assert "resuming from step 4" in warning and "sha256 differs" in warning
  assert os.path.relpath(bad_file, os.path.join(run_dir.checkpoints_dir(workdir), "8")) \
      in warning
  assert sorted(os.listdir(run_dir.checkpoints_dir(workdir))) == ["4", "8", "8.corrupt"]
  _assert_same_run(workdir, straight, config)


@pytest.mark.parametrize("state", [
    {"parent": {"parent": {"next_index": "12"}, "next_index_in_buffer": 64},
     "next_row": 0, "counter": 64},                                    # a string for a count
    {"parent": {"parent": {"next_index": 0}, "next_index_in_buffer": -3},
     "next_row": 0, "counter": 64},                                    # a negative position
])
def test_a_data_position_with_wrong_values_is_set_aside(corpus, straight, tmp_path, caplog,
                                                        state):  # noqa: F811
  """Valid JSON, wrong values, with checksums that match it (as a buggy writer would leave
  it): checked before use, the step is set aside instead of failing every restart."""
  workdir = _copy(straight, tmp_path)
  step_dir = os.path.join(run_dir.checkpoints_dir(workdir), "8")
  with open(os.path.join(step_dir, "data_iter", "shard_0-of-1.json"), "w") as f:
    json.dump(state, f)
  checkpoint_manifest.write(step_dir)
  config, warning = _resume_past_one_unusable_step(corpus, workdir, caplog)
  assert "resuming from step 4" in warning and "shard_0-of-1.json" in warning
  _assert_same_run(workdir, straight, config)


def test_a_resume_with_other_settings_is_refused_unless_allowed(corpus, straight,
                                                                tmp_path):  # noqa: F811
  workdir = _copy(straight, tmp_path, steps=(8,))  # nothing left to train: the check is all
  before = open(os.path.join(workdir, run_dir.CONFIG_FILE)).read()
  changed = {"optimizer.learning_rate": 0.03, "seed": 1}
  with pytest.raises(run_dir.IdentityMismatch) as error:
    train(_config(corpus, **changed), workdir)
  message = str(error.value)
  assert "\n" not in message
  assert "optimizer.learning_rate: recorded 0.003, now 0.03" in message
  assert "seed: recorded 0, now 1" in message and "resume_mismatch=allow" in message
  assert open(os.path.join(workdir, run_dir.CONFIG_FILE)).read() == before
  assert run_dir.checkpoint_steps(workdir) == [8]
  # On purpose: it goes on, and the history says from which step with what.
  train(_config(corpus, resume_mismatch="allow", log_every=4, **changed), workdir)
  start, resume = run_identity.history(workdir)
  assert start["event"] == "start" and start["identity"]["optimizer.learning_rate"] == 0.003
  assert resume["event"] == "resume" and resume["step"] == 8 and resume["mismatch_allowed"]
  assert resume["identity_changes"] == {"optimizer.learning_rate": [0.003, 0.03],
                                        "seed": [0, 1]}
  assert resume["other_changes"]["log_every"] == [2, 4]
  with open(os.path.join(workdir, run_dir.IDENTITY_FILE)) as f:
    assert json.load(f)["identity"]["seed"] == 1


def test_a_save_that_cannot_fit_is_refused_before_writing(tmp_path, monkeypatch):
  state = {"a": np.zeros((1000,), np.float32), "b": np.zeros((10, 10), np.int32)}
  assert checkpointing.checkpoint_bytes(state) == 4400
  monkeypatch.setattr(checkpointing.shutil, "disk_usage",
                      lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
  checkpointing.check_free_space(str(tmp_path), 2**20)
  with pytest.raises(workdir_lock.WorkdirNotWritable) as error:
    checkpointing.check_free_space(str(tmp_path), 2**20 + 1)
  assert error.value.errno == errno.ENOSPC
  assert workdir_lock.storage_failure(error.value).startswith(
      f"not enough disk space for a checkpoint in {tmp_path}: it needs about 1 MiB, 1 MiB are "
      "free; free some space")


@pytest.mark.slow
def test_train_py_exits_75_on_sigterm_after_saving(corpus, tmp_path):  # noqa: F811
  """The real command under a real SIGTERM from outside: exit status, message, checkpoint."""
  workdir = tmp_path / "run"
  config = _config(corpus, num_train_steps=100_000, log_every=1, eval_every=0,
                   checkpoint_every=1000)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  process = subprocess.Popen([sys.executable, "train.py", "--config=configs/pretrain.py",
                              f"--workdir={workdir}", *_flags(config)], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().strip()):
      assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
      time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
  finally:
    process.kill()
  assert process.returncode == preemption.EXIT_PREEMPTED, output[-3000:]
  stopped = [line for line in output.splitlines() if "stopped on SIGTERM at step" in line]
  assert len(stopped) == 1, output[-3000:]
  step = int(stopped[0].split("at step ")[1].split(":")[0])
  assert run_dir.checkpoint_steps(str(workdir)) == [step]
  assert json.loads(metrics.read_text().splitlines()[-1])["step"] == step
  assert not (workdir / run_dir.LOCK_FILE).exists()


@pytest.mark.slow
def test_two_processes_stop_at_the_same_step_when_one_gets_sigterm(corpus,
                                                                   tmp_path):  # noqa: F811
  """jax.distributed's preemption sync: SIGTERM to process 1 only; both save one step."""
  workdir = tmp_path / "run"
  config = _config(corpus, num_train_steps=100_000, log_every=1, eval_every=0,
                   checkpoint_every=1000, **{"data.num_shards": 2, "mesh.data": 4,
                                             "mesh.fsdp": 2, "mesh.tensor": 1})
  processes = multiprocess.start_processes(lambda _: [
      "train.py", "--config=configs/pretrain.py", f"--workdir={workdir}",
      *multiprocess.config_flags(config)])
  try:
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().strip()):
      assert all(p.poll() is None for p in processes) and time.monotonic() < deadline
      time.sleep(0.2)
    processes[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=180)[0] for p in processes]
  finally:
    for p in processes:
      p.kill()
  steps = []
  for p, output in zip(processes, outputs):
    assert p.returncode == preemption.EXIT_PREEMPTED, output[-3000:]
    steps += [int(line.split("at step ")[1].split(":")[0]) for line in output.splitlines()
              if "stopped on SIGTERM at step" in line]
  assert len(steps) == 2 and steps[0] == steps[1]
  assert run_dir.checkpoint_steps(str(workdir)) == [steps[0]]
  # Both processes' data positions are in it (one file per logical shard).
  assert sorted(os.listdir(workdir / "checkpoints" / str(steps[0]) / "data_iter")) == [
      "commit_success.txt", "shard_0-of-2.json", "shard_1-of-2.json"]
