"""scripts/reproduce.py's pipeline: a cut-down run of every stage (tiny numbers, one table),
and its HumanEval evals planned at every scale and tabulated beside MBPP (the transfer)."""
import csv
import json
import os

import pytest

from data import tasks
from evaluation import write_results
from sweeps import reproduce

OBJECTIVES = ("few-shot", "finetuned-synthesis", "finetuned-execution")


@pytest.mark.slow
def test_micro_reproduce_runs_every_stage_and_compares(tmp_path, mbpp_dirs, shared_data_dir,
                                                       monkeypatch):
  micro = reproduce.Scale(model="tiny", pretrain_steps=4, pretrain_batch=8, seq_len=128,
                          finetune_steps=2, finetune_batch=8, eval_problems=2, eval_samples=2,
                          max_new_tokens=8, eval_batch=8)
  monkeypatch.setitem(reproduce.SCALES, "micro", micro)
  root = str(tmp_path / "repro")
  dirs = (mbpp_dirs["manual_dir"], mbpp_dirs["data_dir"], str(shared_data_dir / "humaneval"))
  rows = reproduce.run("micro", root, *dirs)
  assert sorted((r["objective"], r["task"]) for r in rows) == sorted(
      (o, t) for o in OBJECTIVES for t in ("mbpp_synthesis", "mbpp_execution", "humaneval"))
  for name in ("compare.md", "transfer.md"):
    assert os.path.exists(os.path.join(root, name))
  # Rerunning skips finished stages (train resumes at its last step; eval keeps results).
  mtime = os.path.getmtime(os.path.join(root, "eval-few-shot-synthesis", "samples.jsonl"))
  reproduce.run("micro", root, *dirs)
  assert os.path.getmtime(os.path.join(root, "eval-few-shot-synthesis",
                                       "samples.jsonl")) == mtime


@pytest.mark.parametrize("scale", sorted(reproduce.SCALES))
def test_every_scale_evaluates_each_model_on_humaneval_as_on_mbpp(scale):
  stages = reproduce.stage_configs(reproduce.SCALES[scale], "root", "mbpp", "tfds", "he")
  evals = {os.path.basename(workdir): config for kind, workdir, config in stages
           if kind == "eval"}
  assert sorted(evals) == sorted(f"eval-{o}-{t}" for o in OBJECTIVES
                                 for t in ("synthesis", "execution", "humaneval"))
  order = [workdir for _, workdir, _ in stages]
  for objective in OBJECTIVES:
    humaneval, mbpp = evals[f"eval-{objective}-humaneval"], evals[f"eval-{objective}-synthesis"]
    assert humaneval.task == "humaneval" and humaneval.prompt.num_shots == 0
    assert (humaneval.data.manual_dir, humaneval.data.data_dir) == ("he", "tfds")
    # The same model, scale and sampling as its MBPP synthesis eval: pass@k beside MBPP's.
    for key in ("checkpoint", "meta.model", "meta.objective", "max_problems", "num_samples",
                "pass_at_k", "slots_per_call", "sampling.temperature",
                "sampling.max_new_tokens", "mesh"):
      assert humaneval[key] == mbpp[key], key
    # Evaluated after its checkpoint is trained.
    assert order.index(humaneval.checkpoint) < order.index(
        os.path.join("root", f"eval-{objective}-humaneval"))


# HumanEval samples per objective, 2 per problem of the first 3: canonical (True) or broken.
# pass@1: (0 + 0 + 1/2) / 3 = 1/6, (1 + 1/2 + 0) / 3 = 1/2, and (1/2 + 0 + 0) / 3 = 1/6.
_HUMANEVAL_SOLVED = {"few-shot": ((False, False), (False, False), (True, False)),
                     "finetuned-synthesis": ((True, True), (True, False), (False, False)),
                     "finetuned-execution": ((True, False), (False, False), (False, False))}
_MBPP_PASS_AT_1 = {"few-shot": 0.125, "finetuned-synthesis": 0.375,
                   "finetuned-execution": 0.25}


def test_pipeline_tabulates_humaneval_beside_mbpp_from_the_scored_runs(
    tmp_path, shared_data_dir, monkeypatch):
  """Training and MBPP evals faked; the HumanEval evals are the pipeline's own configs run by
  eval.py's runner on samples files instead of a model, so their results.json are real."""
  from evaluation import runner  # pylint: disable=g-import-not-at-top
  from training import loop  # pylint: disable=g-import-not-at-top
  micro = reproduce.Scale(model="tiny", pretrain_steps=4, pretrain_batch=8, seq_len=128,
                          finetune_steps=2, finetune_batch=8, eval_problems=3, eval_samples=2,
                          max_new_tokens=8, eval_batch=8)
  monkeypatch.setitem(reproduce.SCALES, "micro", micro)
  humaneval_dir = str(shared_data_dir / "humaneval")
  examples = tasks.load_task_examples("humaneval", "test", manual_dir=humaneval_dir)[:3]
  trained, evaluated = [], []
  monkeypatch.setattr(loop, "train", lambda config, workdir: trained.append(workdir))
  real_run_eval = runner.run_eval

  def run_eval(config, workdir):
    evaluated.append(os.path.basename(workdir))
    objective = config.meta.objective
    if config.task != "humaneval":
      pass_at_1 = _MBPP_PASS_AT_1[objective] / (2 if config.task == "mbpp_execution" else 1)
      write_results(workdir, {
          "meta": {"model": config.meta.model, "objective": objective, "task": config.task,
                   "split": "test"},
          "pass_at_k": {"1": pass_at_1}, "per_problem": [{"n": 2, "c": 0}] * 3})
      return
    samples = tmp_path / f"{objective}.jsonl"
    samples.write_text("".join(
        json.dumps({"task_id": e["task_id"],
                    "completion": e["target"] if solved else "    return None\n"}) + "\n"
        for e, draws in zip(examples, _HUMANEVAL_SOLVED[objective]) for solved in draws))
    config = config.copy_and_resolve_references()
    config.checkpoint, config.samples_path = "", str(samples)
    config.sandbox.workers = 2
    real_run_eval(config, workdir)

  monkeypatch.setattr(runner, "run_eval", run_eval)
  root = tmp_path / "repro"
  rows = reproduce.run("micro", str(root), "mbpp", "", humaneval_dir)
  assert trained == [str(root / name) for name in ("pretrain", "ft-synthesis", "ft-execution")]
  assert sorted(evaluated) == sorted(f"eval-{o}-{t}" for o in OBJECTIVES
                                     for t in ("synthesis", "execution", "humaneval"))
  assert {r["objective"]: r["pass@1"] for r in rows if r["task"] == "humaneval"} == (
      pytest.approx({"few-shot": 1 / 6, "finetuned-synthesis": 0.5, "finetuned-execution": 1 / 6}))

  # One row per objective, the pretrained model first; HumanEval beside MBPP, and the gains.
  assert (root / "transfer.md").read_text().splitlines()[2:] == [
      "| model | objective | MBPP pass@1 (%) | HumanEval pass@1 (%) | MBPP gain@1 (points) | "
      "HumanEval transfer@1 (points) |",
      "| --- | --- | --- | --- | --- | --- |",
      "| tiny | few-shot | 12.50 | 16.67 |  |  |",
      "| tiny | finetuned-execution | 25.00 | 16.67 | +12.50 | +0.00 |",
      "| tiny | finetuned-synthesis | 37.50 | 50.00 | +25.00 | +33.33 |"]
  with open(root / "transfer.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["objective"] for r in table] == ["few-shot", "finetuned-execution",
                                            "finetuned-synthesis"]
  assert float(table[2]["humaneval_gain@1"]) == pytest.approx(1 / 3)
  assert table[0]["humaneval_gain@1"] == ""
  assert (root / "transfer.png").read_bytes()[:4] == b"\x89PNG"
  assert "| humaneval |" in (root / "compare.md").read_text()

  # A rerun keeps every finished eval: the HumanEval samples are not scored again.
  scored = root / "eval-finetuned-synthesis-humaneval" / "samples.jsonl"
  mtime = scored.stat().st_mtime_ns
  reproduce.run("micro", str(root), "mbpp", "", humaneval_dir)
  assert scored.stat().st_mtime_ns == mtime
