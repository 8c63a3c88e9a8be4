"""A relaunched sweep never reuses a workdir made under another config: the difference is an
error (or, with --new-run-dirs, a new NAME.v2 workdir), never a silent skip or resume."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from sweeps import SweepError, build_plan, configs
from tests.conftest import REPO_ROOT

SWEEP = """
from sweeps import Sweep
def get_sweep():
  return Sweep("train.py", "configs/pretrain.py",
               base={{"num_train_steps": {steps}, "optimizer.warmup_steps": 2}}).product(
                   **{{"optimizer.learning_rate": [0.001, 0.01]}})
"""


def _sweep_file(tmp_path, steps=300):
  path = tmp_path / "ident.py"  # same stem for every version: same workdirs
  path.write_text(textwrap.dedent(SWEEP.format(steps=steps)))
  return str(path)


def _record(workdir, lr, steps=300, finished=True, **more):
  """What train.py leaves in a workdir: config.json as it writes it, and progress."""
  config = configs.load_config_module("configs/pretrain.py", str(REPO_ROOT)).get_config()
  assert configs.apply_overrides(config, {"num_train_steps": steps, "optimizer.warmup_steps": 2,
                                          "optimizer.learning_rate": lr, **more}) is None
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": steps if finished else 10, "loss": 1.0}) + "\n")


def test_matching_runs_are_reused(tmp_path):
  runs = tmp_path / "runs"
  _record(runs / "ident/lr=0.001", 0.001)
  _record(runs / "ident/lr=0.01", 0.01, finished=False, stop_at_step=10)  # how far, not what
  plan = build_plan(_sweep_file(tmp_path), str(runs), REPO_ROOT)
  assert [(r.workdir, r.status.state) for r in plan.runs] == [
      (f"{runs}/ident/lr=0.001", "finished"), (f"{runs}/ident/lr=0.01", "resume")]


def test_a_changed_config_is_refused_with_the_difference(tmp_path):
  runs = tmp_path / "runs"
  _record(runs / "ident/lr=0.001", 0.001, steps=300)
  _record(runs / "ident/lr=0.01", 0.01, steps=300, finished=False)
  with pytest.raises(SweepError) as error:  # num_train_steps raised since the first launch
    build_plan(_sweep_file(tmp_path, steps=600), str(runs), REPO_ROOT)
  message = str(error.value)
  for name in ("lr=0.001", "lr=0.01"):  # the finished run is not skipped, the other not resumed
    assert (f"run {name!r}: {runs}/ident/{name} holds a run made with another config "
            "(num_train_steps: recorded 300, requested 600); relaunch with --new-run-dirs")\
        in message


def test_new_run_dirs_moves_changed_runs_and_reuses_matching_versions(tmp_path):
  runs = tmp_path / "runs"
  _record(runs / "ident/lr=0.001", 0.001, steps=300)
  _record(runs / "ident/lr=0.01", 0.01, steps=300)
  _record(runs / "ident/lr=0.01.v2", 0.01, steps=600, finished=False)  # an earlier relaunch
  plan = build_plan(_sweep_file(tmp_path, steps=600), str(runs), REPO_ROOT, new_run_dirs=True)
  assert [(r.name, r.workdir, r.status.state) for r in plan.runs] == [
      ("lr=0.001.v2", f"{runs}/ident/lr=0.001.v2", "new"),
      ("lr=0.01.v2", f"{runs}/ident/lr=0.01.v2", "resume")]
  assert f"--workdir={runs}/ident/lr=0.001.v2" in plan.runs[0].command()


def test_a_workdir_without_work_is_reused_whatever_it_recorded(tmp_path):
  runs = tmp_path / "runs"
  _record(runs / "ident/lr=0.001", 0.001, steps=300)
  os.remove(runs / "ident/lr=0.001/metrics.jsonl")  # crashed before its first step
  plan = build_plan(_sweep_file(tmp_path, steps=600), str(runs), REPO_ROOT)
  assert plan.runs[0].workdir == f"{runs}/ident/lr=0.001"


def test_launch_cli_refuses_and_launches_nothing(tmp_path):
  runs = tmp_path / "runs"
  _record(runs / "ident/lr=0.001", 0.001, steps=300)
  result = subprocess.run([sys.executable, "scripts/launch.py", _sweep_file(tmp_path, 600),
                           "--local", "1", "--runs-dir", str(runs)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
  assert result.returncode == 2
  assert "num_train_steps: recorded 300, requested 600" in result.stderr
  assert sorted(os.listdir(runs / "ident")) == ["lr=0.001"]


EVAL_SWEEP = """
from sweeps import Sweep
def get_sweep():
  return Sweep("eval.py", "configs/eval_synthesis.py", base={{
      "samples_path": "{samples}", "max_problems": 2, "num_samples": {n},
      "data.manual_dir": "{manual_dir}", "data.data_dir": "{data_dir}"}})
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="sandbox tests run as root (CI)")
def test_eval_py_records_the_config_the_plan_asks_for(mbpp_dirs, tmp_path):
  """Through the real command line: eval.py's config.json equals the plan's config exactly,
  so a relaunch skips the finished eval, and a changed key is refused."""
  from sweeps import local  # pylint: disable=g-import-not-at-top
  samples = tmp_path / "samples.jsonl"
  samples.write_text("".join(json.dumps({"task_id": t, "completion": "return"}) + "\n"
                             for t in (11, 12)))
  runs = str(tmp_path / "runs")
  path = tmp_path / "ev.py"
  path.write_text(EVAL_SWEEP.format(samples=samples, n=1, **mbpp_dirs))
  outcome = local.run_local(build_plan(str(path), runs, REPO_ROOT), 1, sys.executable,
                            lambda _: None)
  workdir = tmp_path / "runs/ev/default"
  assert outcome[0].result == "ok", (workdir / "launch.log").read_text()[-3000:]
  assert (workdir / "config.json").exists()
  assert build_plan(str(path), runs, REPO_ROOT).runs[0].status.state == "finished"
  path.write_text(EVAL_SWEEP.format(samples=samples, n=3, **mbpp_dirs))
  with pytest.raises(SweepError, match="num_samples: recorded 1, requested 3"):
    build_plan(str(path), runs, REPO_ROOT)


@pytest.mark.parametrize("config_json", [None, "{not json", "[1, 2]"])
def test_work_without_a_readable_config_is_never_taken_for_this_run(tmp_path, config_json):
  """A finished-looking run whose config.json is missing or garbage may have been made with
  anything: the plan refuses it (it was reported as this sweep's finished run)."""
  runs = tmp_path / "runs"
  _record(runs / "ident/lr=0.001", 0.001)  # finished, and made with this very config ...
  config_path = runs / "ident/lr=0.001/config.json"
  if config_json is None:  # ... but its record is lost or damaged
    os.remove(config_path)
  else:
    config_path.write_text(config_json)
  with pytest.raises(SweepError, match="lr=0.001 holds a run made with another config "
                                       r"\(config.json: missing or unreadable"):
    build_plan(_sweep_file(tmp_path), str(runs), REPO_ROOT)
  plan = build_plan(_sweep_file(tmp_path), str(runs), REPO_ROOT, new_run_dirs=True)
  assert [(r.name, r.status.state) for r in plan.runs] == [("lr=0.001.v2", "new"),
                                                           ("lr=0.01", "new")]


def test_an_eval_without_a_readable_config_is_not_finished(tmp_path):
  workdir = tmp_path / "runs/ev/default"
  os.makedirs(workdir)
  (workdir / "results.json").write_text(json.dumps({"meta": {"task": "mbpp_synthesis"}}))
  (workdir / "config.json").write_text("garbage")
  path = tmp_path / "ev.py"
  path.write_text(EVAL_SWEEP.format(samples="s.jsonl", n=1, manual_dir="m", data_dir="d"))
  with pytest.raises(SweepError, match="config.json: missing or unreadable"):
    build_plan(str(path), str(tmp_path / "runs"), REPO_ROOT)
