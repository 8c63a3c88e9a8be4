"""The one-command studies: variants, the prompt ensemble as a union of samples, bad input."""
import hashlib
import json
import os

import pytest

from configs import eval_execution, eval_synthesis
from data.tasks import load_task_examples
from evaluation import repair, studies
from tests.scripted_sampler import ScriptedSampler


def _config(module, mbpp_dirs, **overrides):
  config = module.get_config()
  config.data.manual_dir = mbpp_dirs["manual_dir"]
  config.data.data_dir = mbpp_dirs["data_dir"]
  config.checkpoint = "scripted"
  config.update(overrides)
  return config


def _reference_code(mbpp_dirs):
  with open(os.path.join(mbpp_dirs["manual_dir"], "mbpp.jsonl")) as f:
    return {p["task_id"]: p["code"] for p in map(json.loads, f)}


def _lucky(prompt: str) -> bool:
  """Whether the scripted model solves this exact prompt: a fixed coin flip per prompt."""
  return hashlib.sha256(prompt.encode()).digest()[0] % 5 == 0


def _query_task(prompt: str, examples) -> int:
  return next(e["task_id"] for e in examples if e["prompt"] == prompt)


@pytest.fixture
def scripted(monkeypatch):
  """Routes the studies' model load to a ScriptedSampler made by the test."""
  holder = {}
  monkeypatch.setattr(studies, "make_sampler", lambda config, examples=None: holder["sampler"])
  return holder


def test_prompt_sensitivity_ensemble_is_the_union_of_samples(mbpp_dirs, tmp_path, scripted):
  config = _config(eval_synthesis, mbpp_dirs, max_problems=6, num_samples=2)
  seeds = (0, 1, 2)
  by_seed = {s: load_task_examples("mbpp_synthesis", "test", shot_seed=s, **{
      k: mbpp_dirs[k] for k in ("data_dir", "manual_dir")})[:6] for s in seeds}
  prompts = {p["prompt"]: p["task_id"] for s in seeds for p in by_seed[s]}
  code = _reference_code(mbpp_dirs)
  drawn_with = {}  # prompt -> the draw variants its samples were drawn with

  def answer(prompt, sampler):
    drawn_with.setdefault(prompt, set()).add(sampler.variant)
    return code[prompts[prompt]] if _lucky(prompt) else "return 1\n"

  scripted["sampler"] = ScriptedSampler(answer)
  summary = studies.run_study(config, str(tmp_path), "prompt_sensitivity", values="0,1,2")

  # Computed here from the prompts alone: which seed solves which problem.
  solved = {s: {e["task_id"] for e in by_seed[s] if _lucky(e["prompt"])} for s in seeds}
  assert [r["variant"] for r in summary["rows"]] == ["shot_seed=0", "shot_seed=1", "shot_seed=2"]
  assert [r["problems_solved"] for r in summary["rows"]] == [len(solved[s]) / 6 for s in seeds]
  union = set().union(*solved.values())
  assert 0 < len(union) < 6  # the script must leave both outcomes, or the test proves little
  ensemble = summary["ensemble"]
  assert ensemble["problems_solved"] == len(union) / 6
  assert ensemble["samples_per_problem"] == 6
  with open(tmp_path / "ensemble" / "results.json") as f:
    results = json.load(f)
  assert [(p["task_id"], p["n"], p["c"]) for p in results["per_problem"]] == [
      (t, 6, 2 * sum(t in solved[s] for s in seeds)) for t in range(11, 17)]
  assert len(results["meta"]["prompt_template_sha256"]) == 3
  # Each prompt's samples drawn under its own variant's key, recorded in its results.json
  # (tests/test_draws.py measures that they share no draws); the ensemble lists them.
  variants = []
  for s in seeds:
    with open(tmp_path / f"shot_seed={s}" / "results.json") as f:
      variants.append(json.load(f)["meta"]["draw_variant"])
    assert {v for e in by_seed[s] for v in drawn_with[e["prompt"]]} == {variants[-1]}
  assert len(set(variants)) == 3 and 0 not in variants
  assert results["meta"]["draw_variant"] == variants
  for name in ("study.json", "study.md", "study.png", "shot_seed=1/report.md"):
    assert (tmp_path / name).exists()
  assert "ensemble (union of 3)" in (tmp_path / "study.md").read_text()


def test_temperature_variants_reach_the_sampler(mbpp_dirs, tmp_path, scripted):
  config = _config(eval_synthesis, mbpp_dirs, max_problems=2, num_samples=1)
  sampler = ScriptedSampler(lambda p, s: f"x = {s.sampling.temperature}\n")
  scripted["sampler"] = sampler
  summary = studies.run_study(config, str(tmp_path), "temperature", values="0.2,0.9")
  assert [r["value"] for r in summary["rows"]] == [0.2, 0.9]
  assert sorted({t for _, _, t, _ in sampler.calls}) == [0.2, 0.9]
  with open(tmp_path / "temperature=0.9" / "samples.jsonl") as f:
    assert {json.loads(line)["completion"] for line in f} == {"x = 0.9\n"}
  # Rerunning resumes: every variant is complete, so nothing is sampled again.
  calls = len(sampler.calls)
  studies.run_study(config, str(tmp_path), "temperature", values="0.2,0.9")
  assert len(sampler.calls) == calls


def test_bad_studies_fail_before_the_model_loads(mbpp_dirs, tmp_path, scripted):
  with pytest.raises(ValueError, match="no 'prompt.num_tests_shown'"):
    studies.run_study(_config(eval_execution, mbpp_dirs), str(tmp_path), "tests_shown")
  with pytest.raises(ValueError, match="num_tests_shown must be 0, 1 or 3"):
    studies.run_study(_config(eval_synthesis, mbpp_dirs), str(tmp_path), "tests_shown",
                      values="0,2")
  with pytest.raises(ValueError, match="must be floats separated by commas"):
    studies.run_study(_config(eval_synthesis, mbpp_dirs), str(tmp_path), "temperature",
                      values="hot")
  with pytest.raises(ValueError, match="unknown study"):
    studies.run_study(_config(eval_synthesis, mbpp_dirs), str(tmp_path), "vibes")
  with pytest.raises(ValueError, match="not --config.samples_path"):
    studies.run_study(_config(eval_synthesis, mbpp_dirs, samples_path="x.jsonl"),
                      str(tmp_path), "temperature")
  assert "sampler" not in scripted


def test_repair_study_runs_the_control_arm_unless_told_not_to(mbpp_dirs, tmp_path, scripted):
  config = _config(eval_synthesis, mbpp_dirs, max_problems=2, num_samples=1)
  prompts = []
  scripted["sampler"] = ScriptedSampler(lambda p, _: prompts.append(p) or "x = 1\n")
  summary = studies.run_study(config, str(tmp_path / "with"), "repair", rounds=1)
  assert [(r["feedback"]["attempted"], r["control"]["attempted"], r["gain"])
          for r in summary["rounds"]] == [(2, 2, 0), (2, 2, 0)]
  # Round 0, then round 1 with feedback, then round 1 of the control: the original prompts.
  assert prompts[:2] == prompts[4:] and len(prompts) == 6
  assert all("\nFeedback: " in p for p in prompts[2:4])
  # Each round's results.json names the seed its samples were drawn with.
  for directory, seed in (("round_0", 0), ("round_1", repair.round_seed(0, 1, "feedback")),
                          ("control/round_1", repair.round_seed(0, 1, "control"))):
    with open(tmp_path / "with" / directory / "results.json") as f:
      meta = json.load(f)["meta"]
    assert meta["seed"] == meta["config"]["seed"] == seed, directory
  prompts.clear()
  summary = studies.run_study(config, str(tmp_path / "without"), "repair", rounds=1,
                              control=False)
  assert [r["control"] for r in summary["rounds"]] == [None, None] and len(prompts) == 4
  assert not (tmp_path / "without" / "control").exists()
