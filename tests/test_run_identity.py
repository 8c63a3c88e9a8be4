"""model/run_identity.py on its own: records, comparisons, the history, damaged records."""
import json
import os

import pytest

from model import run_dir, run_identity


def _start(workdir, identity, config):
  run_identity.record(str(workdir), "train", identity, json.dumps(config), resuming=False,
                      step=0, identity_changes={})


def test_a_resume_is_compared_with_what_the_start_recorded(tmp_path):
  _start(tmp_path, {"seed": 0, "lr": 0.1}, {"seed": 0, "lr": 0.1, "log_every": 10})
  assert run_identity.check(str(tmp_path), "train", {"seed": 0, "lr": 0.1}, "refuse") == {}
  with pytest.raises(run_dir.IdentityMismatch, match=r"lr: recorded 0.1, now 0.2; "
                                                     r"new_key: recorded \(absent\), now 1"):
    run_identity.check(str(tmp_path), "train", {"seed": 0, "lr": 0.2, "new_key": 1}, "refuse")
  with pytest.raises(run_dir.IdentityMismatch, match="kind: recorded \"train\", now \"eval\""):
    run_identity.check(str(tmp_path), "eval", {"seed": 0, "lr": 0.1}, "refuse")
  changes = run_identity.check(str(tmp_path), "train", {"seed": 0, "lr": 0.2}, "allow")
  assert changes == {"lr": [0.1, 0.2]}
  run_identity.record(str(tmp_path), "train", {"seed": 0, "lr": 0.2},
                      json.dumps({"seed": 0, "lr": 0.2, "log_every": 5}), resuming=True, step=7,
                      identity_changes=changes)
  start, resume = run_identity.history(str(tmp_path))
  assert (start["event"], resume["event"], resume["step"]) == ("start", "resume", 7)
  assert resume["identity_changes"] == {"lr": [0.1, 0.2]}
  assert resume["other_changes"] == {"log_every": [10, 5]}
  assert run_identity.recorded(str(tmp_path))["identity"] == {"seed": 0, "lr": 0.2}


def test_a_damaged_record_is_one_line_and_allow_records_it_anew(tmp_path):
  _start(tmp_path, {"seed": 0}, {"seed": 0})
  with open(os.path.join(tmp_path, run_dir.IDENTITY_FILE), "w") as f:
    f.write("{garbage")
  with pytest.raises(run_dir.IdentityMismatch, match="cannot be read") as error:
    run_identity.check(str(tmp_path), "train", {"seed": 0}, "refuse")
  assert "\n" not in str(error.value)
  assert run_identity.check(str(tmp_path), "train", {"seed": 0}, "allow") == {
      run_dir.IDENTITY_FILE: ["(unreadable)", "(recorded anew)"]}
  with pytest.raises(run_dir.IdentityMismatch, match="resume_mismatch must be"):
    run_identity.mismatch_policy({"resume_mismatch": "yes"})


def test_what_changes_no_numbers_is_no_part_of_a_training_runs_identity():
  from tests.test_train_loop import _config  # pylint: disable=g-import-not-at-top
  from training.identity import train_identity  # pylint: disable=g-import-not-at-top
  corpus = {"source_dir": "/corpus", "data_dir": "/tfds"}
  base = train_identity(_config(corpus))
  # Extended, logged and checkpointed differently, on another mesh, data found elsewhere.
  assert train_identity(_config(
      corpus, num_train_steps=90, stop_at_step=50, log_every=1, eval_every=0, eval_batches=1,
      checkpoint_every=3, keep_checkpoints=9, async_checkpointing=False, resume_mismatch="allow",
      **{"mesh.data": 8, "mesh.fsdp": 1, "mesh.tensor": 1,
         "data.data_dir": "/elsewhere"})) == base
  for key, value in (("seed", 1), ("optimizer.learning_rate", 0.5), ("batch_size", 16),
                     ("data.shuffle_seed", 3), ("data.source_dir", "/other")):
    assert key in run_identity.changes(base, train_identity(_config(corpus, **{key: value})))
