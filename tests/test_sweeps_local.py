"""The local runner: N runs at once as subprocesses, launch.log, skips, resumes, dependencies.

The runs are a stand-in script (same flags as eval.py) so the test takes about a second.
"""
import json
import os
import sys
import textwrap

import pytest

from sweeps import SweepError, build_plan, local

# Each run marks itself started and waits (up to 20 s) until every run of its stage has: with
# N=2 both finish, run one at a time they would time out. FAIL=1 in the overrides fails it.
FAKE_EVAL = """
import argparse, glob, json, os, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--config"); parser.add_argument("--workdir")
args, overrides = parser.parse_known_args()
os.makedirs(args.workdir, exist_ok=True)
open(os.path.join(args.workdir, "started"), "w").close()
# config.json as eval.py records it (a sweep takes work without it for another run's).
config = {{"x": 0, "fail": 0, "checkpoint": "", "num_train_steps": 5}}
for override in overrides:
  key, value = override[len("--config."):].split("=", 1)
  config[key] = int(value) if isinstance(config[key], int) else value
with open(os.path.join(args.workdir, "config.json"), "w") as f:
  json.dump(config, f)
print("running", args.workdir, overrides, flush=True)
if "--config.fail=1" in overrides:
  sys.exit(3)
deadline = time.time() + 20
while len(glob.glob(os.path.join(os.path.dirname(args.workdir), "*", "started"))) < {wait}:
  if time.time() > deadline:
    sys.exit(4)
  time.sleep(0.05)
with open(os.path.join(args.workdir, "results.json"), "w") as f:
  json.dump({{"overrides": overrides}}, f)
"""
CONFIG = """
import ml_collections
def get_config():
  return ml_collections.ConfigDict({"x": 0, "fail": 0, "checkpoint": "", "num_train_steps": 5})
"""


@pytest.fixture
def root(tmp_path):
  (tmp_path / "fake_eval.py").write_text(FAKE_EVAL.format(wait=2))
  (tmp_path / "fake_single.py").write_text(FAKE_EVAL.format(wait=1))
  (tmp_path / "cfg.py").write_text(CONFIG)
  return tmp_path


def _sweep(root, body):
  path = root / "sw.py"
  path.write_text("from sweeps import Sweep, WorkdirOf\n\n\ndef get_sweep():\n"
                  + textwrap.indent(textwrap.dedent(body), "  "))
  return str(path)


def test_two_runs_in_parallel_then_skipped_when_relaunched(root):
  sweep_file = _sweep(root, """
      return Sweep("fake_eval.py", "cfg.py", kind="eval").product(x=[1, 2])
  """)
  echoed = []
  outcomes = local.run_local(build_plan(sweep_file, "runs", root), 2, sys.executable,
                             echoed.append)
  assert [(o.run.name, o.result) for o in outcomes] == [("x=1", "ok"), ("x=2", "ok")]
  for x in (1, 2):
    workdir = root / f"runs/sw/x={x}"
    assert json.loads((workdir / "results.json").read_text()) == {"overrides": [
        f"--config.x={x}"]}
    log = (workdir / "launch.log").read_text().splitlines()
    assert log[0].endswith(f"launch.py: {sys.executable} fake_eval.py --config=cfg.py "
                           f"--workdir=runs/sw/x={x} --config.x={x}")
    assert log[1] == f"running runs/sw/x={x} ['--config.x={x}']"
  assert sorted(line.split()[0] for line in echoed) == ["ok", "ok", "started", "started"]

  again = local.run_local(build_plan(sweep_file, "runs", root), 2, sys.executable, echoed.append)
  assert [(o.result, o.detail) for o in again] == [("skipped", "results.json exists")] * 2
  assert local.summary(again).splitlines()[-1] == "2 skipped"


def test_half_finished_run_is_relaunched_as_resuming_and_nothing_is_deleted(root):
  sweep_file = _sweep(root, """
      return Sweep("fake_single.py", "cfg.py", kind="eval").product(x=[1])
  """)
  workdir = root / "runs/sw/x=1"
  workdir.mkdir(parents=True)
  (workdir / "samples.jsonl").write_text('{"task_id": 11}\n')
  (workdir / "config.json").write_text(json.dumps(
      {"x": 1, "fail": 0, "checkpoint": "", "num_train_steps": 5}))
  (workdir / "launch.log").write_text("earlier attempt\n")
  echoed = []
  outcomes = local.run_local(build_plan(sweep_file, "runs", root), 1, sys.executable,
                             echoed.append)
  assert outcomes[0].result == "ok"
  assert echoed[0] == ("resuming x=1 -> runs/sw/x=1/launch.log "
                       "(resuming: 1 samples in samples.jsonl)")
  assert (workdir / "samples.jsonl").read_text() == '{"task_id": 11}\n'
  assert (workdir / "launch.log").read_text().startswith("earlier attempt\n== ")


def test_dependents_wait_for_and_are_blocked_by_failures(root):
  sweep_file = _sweep(root, """
      first = Sweep("fake_single.py", "cfg.py", kind="eval", name="first").product(fail=[0, 1])
      then = Sweep("fake_single.py", "cfg.py", kind="eval", name="then",
                   base={"checkpoint": WorkdirOf(first, match=("fail",))}).product(fail=[0])
      later = Sweep("fake_single.py", "cfg.py", kind="eval", name="later",
                   base={"checkpoint": WorkdirOf(first, where={"fail": 1})})
      return [first, then, later]
  """)
  outcomes = local.run_local(build_plan(sweep_file, "runs", root), 3, sys.executable,
                             lambda _: None)
  assert [(o.run.label, o.result, o.detail) for o in outcomes] == [
      ("first/fail=0", "ok", ""), ("first/fail=1", "failed", "exit code 3"),
      ("then/fail=0", "ok", ""), ("later/default", "blocked", "a run it starts from failed")]
  assert not os.path.exists(root / "runs/sw/later")
  assert local.summary(outcomes).splitlines()[-1] == "2 ok, 1 failed, 1 blocked"


def test_multi_node_runs_are_refused_locally(root):
  sweep_file = _sweep(root, """
      return Sweep("train.py", "cfg.py", nodes=2).product(x=[1])
  """)
  with pytest.raises(ValueError, match="need a cluster"):
    local.run_local(build_plan(sweep_file, "runs", root), 1, sys.executable)


def test_train_kind_needs_num_train_steps(root):
  (root / "cfg2.py").write_text(CONFIG.replace(', "num_train_steps": 5', ""))
  sweep_file = _sweep(root, """
      return Sweep("fake_single.py", "cfg2.py").product(x=[1])
  """)
  with pytest.raises(SweepError, match="cfg2.py has no num_train_steps"):
    build_plan(sweep_file, "runs", root)
