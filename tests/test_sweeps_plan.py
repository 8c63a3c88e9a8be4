"""Planning: dry-run output of the example sweeps, validation errors, finished/resumed runs."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from sweeps import SweepError, build_plan
from sweeps import plan as plan_lib
from sweeps.describe import describe
from tests.conftest import REPO_ROOT

LR_SEEDS = "configs/sweeps/lr_seeds.py"
OBJECTIVES = "configs/sweeps/objectives.py"


def _lr_seeds_runs(runs):
  """(workdir, command) of every run lr_seeds.py must plan, in order."""
  expected = []
  for lr in ("0.0001", "0.0003", "0.001"):
    for seed in (0, 1):
      workdir = f"{runs}/lr_seeds/lr={lr},seed={seed},shuffle_seed={seed}"
      expected.append((workdir, (
          f"python train.py --config=configs/synthesis.py --workdir={workdir} "
          "--config.init_from=runs/pretrain --config.data.manual_dir=../shared/data/mbpp "
          f"--config.num_train_steps=300 --config.optimizer.learning_rate={lr} "
          f"--config.seed={seed} --config.data.shuffle_seed={seed}")))
  return expected


def test_dry_run_of_lr_seeds_lists_every_run_and_command(tmp_path):
  runs = str(tmp_path / "runs")
  out = subprocess.run(
      [sys.executable, "scripts/launch.py", LR_SEEDS, "--dry-run", "--python", "python",
       "--runs-dir", runs], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
  expected = [f"sweep lr_seeds ({LR_SEEDS}): 6 runs, 6 to launch, 0 resuming, 0 finished",
              "6 runs of train.py configs/synthesis.py"]
  for workdir, command in _lr_seeds_runs(runs):
    expected += [f"  launch {workdir}", f"         {command}"]
  assert out.splitlines() == expected
  assert not os.path.exists(runs)  # a dry run creates nothing


def test_objectives_stages_chain_workdirs(tmp_path):
  plan = build_plan(OBJECTIVES, "runs", REPO_ROOT)
  assert [(s.name, [r.name for r in s.runs]) for s in plan.stages] == [
      ("pretrain", ["model=244m", "model=1b"]),
      ("finetune", ["config=synthesis,model=244m", "config=synthesis,model=1b",
                    "config=execution,model=244m", "config=execution,model=1b"]),
      ("eval", ["model=244m", "model=1b"])]
  finetune, evaluate = plan.stages[1].runs, plan.stages[2].runs
  assert [r.config for r in finetune] == ["configs/synthesis.py"] * 2 + [
      "configs/execution.py"] * 2
  assert finetune[3].overrides["init_from"] == "runs/objectives/pretrain/model=1b"
  assert finetune[3].deps == ("runs/objectives/pretrain/model=1b",)
  assert evaluate[1].overrides["checkpoint"] == "runs/objectives/finetune/config=synthesis,model=1b"
  assert evaluate[1].command() == [
      "python", "eval.py", "--config=configs/eval_synthesis.py",
      "--workdir=runs/objectives/eval/model=1b",
      "--config.checkpoint=runs/objectives/finetune/config=synthesis,model=1b",
      "--config.prompt.num_shots=0", "--config.meta.objective=finetuned-synthesis",
      "--config.data.manual_dir=../shared/data/mbpp", "--config.meta.model=1b"]
  assert plan.stages[0].runs[0].command()[4] == "--distributed"  # nodes=2


def _sweep_file(tmp_path, body: str) -> str:
  path = tmp_path / "my_sweep.py"
  path.write_text("from sweeps import Sweep, WorkdirOf\n\n\ndef get_sweep():\n"
                  + textwrap.indent(textwrap.dedent(body), "  "))
  return str(path)


def test_unknown_key_names_the_key_and_the_sweep(tmp_path):
  sweep_file = _sweep_file(tmp_path, """
      return Sweep("train.py", "configs/synthesis.py").product(
          {"optimizer.lr": [1e-4]}, model=["tiny"])
  """)
  with pytest.raises(SweepError) as error:
    build_plan(sweep_file, str(tmp_path / "runs"), REPO_ROOT)
  message = str(error.value)
  assert "unknown config key 'optimizer.lr'" in message
  assert sweep_file in message and "configs/synthesis.py" in message
  assert "learning_rate" in message  # what does exist there


def test_unknown_group_and_wrong_type_are_errors(tmp_path):
  sweep_file = _sweep_file(tmp_path, """
      return Sweep("train.py", "configs/synthesis.py",
                   base={"optimiser.learning_rate": 1e-4}).product(
          {"optimizer.learning_rate": ["fast"]})
  """)
  with pytest.raises(SweepError) as error:
    build_plan(sweep_file, "runs", REPO_ROOT)
  assert "'optimiser.learning_rate'" in str(error.value)


def test_type_error_is_caught_before_launch(tmp_path):
  sweep_file = _sweep_file(tmp_path, """
      return Sweep("train.py", "configs/synthesis.py").product(
          {"optimizer.learning_rate": ["fast"]})
  """)
  with pytest.raises(SweepError, match="'optimizer.learning_rate' cannot take 'fast'"):
    build_plan(sweep_file, "runs", REPO_ROOT)


def test_cli_reports_errors_and_launches_nothing(tmp_path):
  sweep_file = _sweep_file(tmp_path, """
      return Sweep("train.py", "configs/synthesis.py").product(bogus=[1, 2])
  """)
  result = subprocess.run([sys.executable, "scripts/launch.py", sweep_file, "--local", "2",
                           "--runs-dir", str(tmp_path / "runs")],
                          cwd=REPO_ROOT, capture_output=True, text=True)
  assert result.returncode == 2
  assert "unknown config key 'bogus'" in result.stderr and sweep_file in result.stderr
  assert not (tmp_path / "runs").exists()


def test_duplicate_workdirs_are_listed(tmp_path):
  sweep_file = _sweep_file(tmp_path, """
      return Sweep("train.py", "configs/pretrain.py").product(
          {"data.source_dir": ["a/b", "a_b", "c"]})
  """)
  with pytest.raises(SweepError) as error:
    build_plan(sweep_file, "runs", REPO_ROOT)
  message = str(error.value)
  assert "2 runs map to one workdir runs/my_sweep/source_dir=a_b" in message
  assert "'a/b'" in message and "'a_b'" in message and "'c'" not in message


def test_stages_need_distinct_names(tmp_path):
  sweep_file = _sweep_file(tmp_path, """
      return [Sweep("train.py", "configs/pretrain.py"), Sweep("train.py", "configs/pretrain.py")]
  """)
  with pytest.raises(SweepError, match="each needs its own name"):
    build_plan(sweep_file, "runs", REPO_ROOT)


def test_ambiguous_reference_is_an_error(tmp_path):
  sweep_file = _sweep_file(tmp_path, """
      a = Sweep("train.py", "configs/pretrain.py", name="a").product(seed=[0, 1])
      b = Sweep("train.py", "configs/synthesis.py", name="b", base={"init_from": WorkdirOf(a)})
      return [a, b]
  """)
  with pytest.raises(SweepError, match="found 2 runs in stage 'a', needs exactly 1"):
    build_plan(sweep_file, "runs", REPO_ROOT)


def _write(path, text=""):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def _record_configs(sweep_file, runs, workdirs):
  """config.json in these runs' workdirs, as train.py / eval.py write it at their start."""
  for run in build_plan(sweep_file, runs, REPO_ROOT).runs:
    if run.workdir not in workdirs:
      continue
    _, config = plan_lib._validated(run.config, run.overrides, str(REPO_ROOT))
    _write(os.path.join(run.workdir, "config.json"),
           config.to_json_best_effort(indent=2, sort_keys=True))


def test_finished_runs_are_skipped_and_half_finished_resume(tmp_path):
  runs = str(tmp_path / "runs")
  workdirs = [w for w, _ in _lr_seeds_runs(runs)]
  _record_configs(LR_SEEDS, runs, workdirs[:4])
  # 0: final step logged; 1: final checkpoint only; 2: stopped at step 100; 3: crashed early
  # (torn last line, no checkpoint); 4, 5: never started.
  _write(f"{workdirs[0]}/metrics.jsonl",
         "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (10, 300)))
  os.makedirs(f"{workdirs[1]}/checkpoints/300")
  os.makedirs(f"{workdirs[2]}/checkpoints/50")
  os.makedirs(f"{workdirs[2]}/checkpoints/100")
  os.makedirs(f"{workdirs[2]}/checkpoints/150.orbax-checkpoint-tmp-1")
  _write(f"{workdirs[2]}/metrics.jsonl", json.dumps({"step": 100}) + "\n")
  _write(f"{workdirs[3]}/metrics.jsonl", '{"step": 10}\n{"step": 3')
  plan = build_plan(LR_SEEDS, runs, REPO_ROOT)
  assert [(r.status.state, r.status.detail) for r in plan.runs] == [
      ("finished", "metrics.jsonl has step 300"),
      ("finished", "checkpoint 300 of 300 steps"),
      ("resume", "resuming from checkpoint 100 of 300 steps"),
      ("resume", "resuming: earlier attempt left no checkpoint, starts at step 0"),
      ("new", ""), ("new", "")]
  text = describe(plan).splitlines()
  assert text[0].endswith("6 runs, 2 to launch, 2 resuming, 2 finished")
  assert text[2] == f"  skip   {workdirs[0]}  (metrics.jsonl has step 300)"
  assert text[3] == f"  skip   {workdirs[1]}  (checkpoint 300 of 300 steps)"
  assert text[4] == f"  resume {workdirs[2]}  (resuming from checkpoint 100 of 300 steps)"
  assert len(text) == 2 + 2 + 4 * 2  # finished runs have no command line


def test_eval_runs_finish_with_results_json(tmp_path):
  runs = str(tmp_path / "runs")
  _record_configs(OBJECTIVES, runs,
                  [f"{runs}/objectives/eval/model={m}" for m in ("244m", "1b")])
  _write(f"{runs}/objectives/eval/model=244m/results.json", "{}")
  _write(f"{runs}/objectives/eval/model=1b/samples.jsonl", '{"a": 1}\n{"a": 2}\n')
  plan = build_plan(OBJECTIVES, runs, REPO_ROOT)
  assert [(r.status.state, r.status.detail) for r in plan.stages[2].runs] == [
      ("finished", "results.json exists"), ("resume", "resuming: 2 samples in samples.jsonl")]
  assert len(plan.stages[2].pending) == 1


def test_reference_to_a_later_stage_is_an_error(tmp_path):
  sweep_file = _sweep_file(tmp_path, """
      b = Sweep("train.py", "configs/pretrain.py", name="b").product(seed=[0])
      a = Sweep("train.py", "configs/synthesis.py", name="a", base={"init_from": WorkdirOf(b)})
      return [a, b]
  """)
  with pytest.raises(SweepError, match="must name an earlier stage"):
    build_plan(sweep_file, "runs", REPO_ROOT)
