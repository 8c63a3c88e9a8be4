"""A cut-down reproduce run: every stage of scripts/reproduce.py, tiny numbers, one table."""
import os

import pytest

from sweeps import reproduce


@pytest.mark.slow
def test_micro_reproduce_runs_every_stage_and_compares(tmp_path, mbpp_dirs, monkeypatch):
  micro = reproduce.Scale(model="tiny", pretrain_steps=4, pretrain_batch=8, seq_len=128,
                          finetune_steps=2, finetune_batch=8, eval_problems=2, eval_samples=2,
                          max_new_tokens=8, eval_batch=8)
  monkeypatch.setitem(reproduce.SCALES, "micro", micro)
  root = str(tmp_path / "repro")
  rows = reproduce.run("micro", root, mbpp_dirs["manual_dir"], mbpp_dirs["data_dir"])
  assert sorted((r["objective"], r["task"]) for r in rows) == sorted(
      (o, t) for o in ("few-shot", "finetuned-synthesis", "finetuned-execution")
      for t in ("mbpp_synthesis", "mbpp_execution"))
  assert os.path.exists(os.path.join(root, "compare.md"))
  # Rerunning skips finished stages (train resumes at its last step; eval keeps results).
  mtime = os.path.getmtime(os.path.join(root, "eval-few-shot-synthesis", "samples.jsonl"))
  reproduce.run("micro", root, mbpp_dirs["manual_dir"], mbpp_dirs["data_dir"])
  assert os.path.getmtime(os.path.join(root, "eval-few-shot-synthesis",
                                       "samples.jsonl")) == mtime
