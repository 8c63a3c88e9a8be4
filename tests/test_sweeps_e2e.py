"""A real (tiny) train.py run through the launcher: stopped half-way, relaunched, resumed to the
end, then skipped; checks the launcher's idea of "finished" against what train.py writes."""
import shutil
import sys

import pytest

from data.code_corpus import stdlib_dir
from sweeps import build_plan, local
from tests.conftest import REPO_ROOT

SWEEP = """
from sweeps import Sweep
def get_sweep():
  return Sweep("train.py", "configs/pretrain.py", base={{
      "num_train_steps": 4, "log_every": 2, "eval_every": 0, "eval_batches": 0,
      "checkpoint_every": 2, "batch_size": 8, "seq_len": 64, "async_checkpointing": False,
      "model_overrides.vocab_size": 512, "data.source_dir": "{src}", "data.data_dir": "{tfds}",
      {extra}}}).product(seed=[0])
"""


@pytest.mark.slow
def test_stopped_run_resumes_to_the_end_then_is_skipped(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  for name in ("textwrap.py", "shlex.py", "bisect.py", "heapq.py", "fnmatch.py", "glob.py"):
    shutil.copy(stdlib_dir() / name, src / name)
  files = {}
  for part, extra in (("first", '"stop_at_step": 2'), ("second", "")):
    (tmp_path / part).mkdir()
    files[part] = tmp_path / part / "e2e.py"  # same stem: same workdirs
    files[part].write_text(SWEEP.format(src=src, tfds=tmp_path / "tfds", extra=extra))
  runs = str(tmp_path / "runs")
  workdir = tmp_path / "runs/e2e/seed=0"

  first = local.run_local(build_plan(str(files["first"]), runs, REPO_ROOT), 1, sys.executable,
                          lambda _: None)
  assert first[0].result == "ok", (workdir / "launch.log").read_text()[-3000:]
  plan = build_plan(str(files["second"]), runs, REPO_ROOT)
  assert (plan.runs[0].status.state, plan.runs[0].status.detail) == (
      "resume", "resuming from checkpoint 2 of 4 steps")

  echoed = []
  second = local.run_local(plan, 1, sys.executable, echoed.append)
  assert second[0].result == "ok", (workdir / "launch.log").read_text()[-3000:]
  assert echoed[0].startswith("resuming seed=0")
  log = (workdir / "launch.log").read_text()
  assert log.count("== ") >= 2 and "Resuming from" in log  # train.py restored step 2
  final = build_plan(str(files["second"]), runs, REPO_ROOT).runs[0].status
  assert (final.state, final.detail) == ("finished", "metrics.jsonl has step 4")
