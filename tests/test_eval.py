"""eval.py's runner: samples files, a tiny model end to end, resume, and bad input."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import eval_execution, eval_synthesis
from data import prompt_fit
from data.prompts import cut_at_done
from evaluation.runner import load_examples, run_eval
from model import run_dir
from model.decoder import abstract_model, forward
from tests.test_train_loop import _config, corpus  # noqa: F401  (module fixture)
from training.loop import train


def _eval_config(module, mbpp_dirs, **overrides):
  config = module.get_config()
  config.data.manual_dir = mbpp_dirs["manual_dir"]
  config.data.data_dir = mbpp_dirs["data_dir"]
  config.update(overrides)
  return config


def test_samples_path_scores_reference_solutions(mbpp_dirs, shared_data_dir, tmp_path):
  samples = tmp_path / "samples.in.jsonl"
  with open(shared_data_dir / "mbpp" / "mbpp.jsonl") as f, open(samples, "w") as out:
    for line in f:
      problem = json.loads(line)
      if 11 <= problem["task_id"] <= 15:
        out.write(json.dumps({"task_id": problem["task_id"], "completion": problem["code"]}))
        out.write("\n")
        out.write(json.dumps({"task_id": problem["task_id"], "completion": "return"}) + "\n")
  results = run_eval(_eval_config(eval_synthesis, mbpp_dirs, samples_path=str(samples),
                                  max_problems=5), str(tmp_path / "ev"))
  assert results["pass_at_k"] == {"1": 0.5}
  assert [(p["task_id"], p["n"], p["c"]) for p in results["per_problem"]] == [
      (t, 2, 1) for t in range(11, 16)]


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory):  # noqa: F811
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  train(_config(corpus, num_train_steps=2, checkpoint_every=2, eval_every=0), workdir)
  return workdir


@pytest.mark.slow
def test_tiny_model_end_to_end_and_resume(tiny_run, mbpp_dirs, tmp_path):
  workdir = str(tmp_path / "ev")
  config = _eval_config(eval_synthesis, mbpp_dirs, checkpoint=tiny_run, max_problems=3,
                        num_samples=2, batch_size=8, max_prompt_len=512)
  config.sampling.max_new_tokens = 12
  config.mesh.data = 8
  results = run_eval(config, workdir)
  assert [(p["task_id"], p["n"]) for p in results["per_problem"]] == [(11, 2), (12, 2), (13, 2)]
  # This tokenizer's 3-shot prompts take 1,327-1,713 tokens, their queries alone 226, 380 and
  # 612: two lose all their shots to fit 512, and task 13 is not sampled (prompt_too_long).
  assert results["prompt_fit"] == {"shots_dropped": {"mbpp/11": 3, "mbpp/12": 3},
                                   "prompt_too_long": ["mbpp/13"]}
  assert results["status_counts"]["prompt_too_long"] == 2
  assert set(results["pass_at_k"]) == {"1"}
  with open(os.path.join(workdir, "samples.jsonl")) as f:
    first = f.read()
  assert len(first.splitlines()) == 6
  # The run's speed by phase: every generated token and distinct program counted.
  records = [json.loads(line) for line in first.splitlines()]
  throughput = results["meta"]["throughput"]
  assert 6 <= throughput["tokens_generated"] <= 6 * 12 and throughput["tokens_per_s"] > 0
  # Distinct programs, each against its tests and, where a problem has them, its challenge
  # tests (a second job).
  distinct = len({r["program"] for r in records})
  assert distinct <= throughput["programs_executed"] <= 2 * distinct
  # Resume: a second run with more problems keeps the finished ones and samples the rest;
  # the samples of the first three problems are exactly those of an uninterrupted run.
  config.max_problems = 5
  run_eval(config, workdir)
  fresh = str(tmp_path / "fresh")
  run_eval(config, fresh)
  load = lambda d: sorted((r["id"], r["sample_index"], r["completion"]) for r in map(
      json.loads, open(os.path.join(d, "samples.jsonl"))))
  assert load(workdir) == load(fresh)
  assert len(load(workdir)) == 10


@pytest.mark.slow
def test_execution_prediction_is_greedy_and_scored(tiny_run, mbpp_dirs, tmp_path):
  config = _eval_config(eval_execution, mbpp_dirs, checkpoint=tiny_run, max_problems=4,
                        batch_size=8, max_prompt_len=512)
  config.sampling.max_new_tokens = 8
  config.mesh.data = 8
  results = run_eval(config, str(tmp_path / "ev"))
  assert all(p["n"] == 1 for p in results["per_problem"]) and len(results["per_problem"]) == 4
  # Greedy: each completion is the argmax continuation of a plain full forward pass (no cache,
  # one device), computed here independently. Where two logits come within 1e-3 of each other
  # the two computations may break the tie differently, so that problem's check stops there.
  cfg = run_dir.load_model_config(tiny_run)
  graphdef, shapes, _ = abstract_model(cfg)
  params = run_dir.load_params(tiny_run, shapes)
  tokenizer = run_dir.load_tokenizer(run_dir.tokenizer_path(tiny_run))
  records = [json.loads(line) for line in open(tmp_path / "ev" / "samples.jsonl")]
  examples = {e["id"]: e for e in load_examples(config)}
  # One fixed, right-padded length: causal attention makes position i's logits independent of
  # what follows it, and one shape compiles once (a growing length compiled 32 times).
  length = config.max_prompt_len + config.sampling.max_new_tokens
  full_forward = jax.jit(lambda p, tokens_1xL: forward(graphdef, p, tokens_1xL))
  checked = 0
  for record in records:
    # The prompt the eval fitted into max_prompt_len (whole shots dropped, never cut).
    fitted = prompt_fit.fit_example(examples[record["id"]],
                                    lambda text: len(tokenizer.encode_prompt(text)),
                                    config.max_prompt_len, "drop_shots")
    tokens = tokenizer.encode_prompt(fitted["prompt"])
    generated, tied = [], False
    for _ in range(config.sampling.max_new_tokens):
      context = tokens + generated
      padded = np.zeros((1, length), np.int32)
      padded[0, :len(context)] = context
      logits = np.asarray(full_forward(params, jnp.asarray(padded)))[0, len(context) - 1]
      top_two = np.sort(logits)[-2:]
      if top_two[1] - top_two[0] < 1e-3:
        tied = True
        break
      generated.append(int(np.argmax(logits)))
      if generated[-1] == tokenizer.eos_id:
        break
    if tied:
      continue
    text = tokenizer.decode([t for t in generated if t != tokenizer.eos_id])
    assert record["completion"] == cut_at_done(text), record["id"]
    checked += 1
  assert checked >= 2


def test_bad_inputs_fail_before_any_work(tiny_run, mbpp_dirs, tmp_path):
  with pytest.raises(ValueError, match="checkpoint"):
    run_eval(_eval_config(eval_synthesis, mbpp_dirs), str(tmp_path / "a"))
  from data.tokenizer import train_tokenizer  # pylint: disable=g-import-not-at-top
  other = train_tokenizer((f"x{i} = {i}\n" * 20 for i in range(50)), str(tmp_path / "tok"),
                          vocab_size=276)
  with pytest.raises(ValueError, match="do not belong together"):
    run_eval(_eval_config(eval_synthesis, mbpp_dirs, checkpoint=tiny_run,
                          tokenizer_path=other.model_path), str(tmp_path / "b"))
  with pytest.raises(Exception, match="does not exist"):
    run_eval(_eval_config(eval_synthesis, mbpp_dirs, checkpoint=str(tmp_path / "none")),
             str(tmp_path / "c"))


@pytest.mark.slow
def test_studies_run_on_a_real_model(tiny_run, mbpp_dirs, tmp_path):
  """The studies' model path: one checkpoint load, a new sampler per temperature, repair
  rounds whose dialogs reach the model (a tiny model solves nothing, so every problem goes
  on to round 1)."""
  from evaluation import repair, studies  # pylint: disable=g-import-not-at-top
  config = _eval_config(eval_synthesis, mbpp_dirs, checkpoint=tiny_run, max_problems=2,
                        num_samples=2, batch_size=8, max_prompt_len=512)
  config.sampling.max_new_tokens = 8
  config.mesh.data = 8
  summary = studies.run_study(config, str(tmp_path / "temp"), "temperature", values="0.0,1.0")
  greedy = [json.loads(line)["completion"]
            for line in open(tmp_path / "temp" / "temperature=0.0" / "samples.jsonl")]
  assert len(greedy) == 4 and greedy[0] == greedy[1] and greedy[2] == greedy[3]
  assert [r["samples_per_problem"] for r in summary["rows"]] == [2, 2]
  summary = studies.run_study(config, str(tmp_path / "repair"), "repair", rounds=1)
  assert [(r["feedback"]["attempted"], r["control"]["attempted"])
          for r in summary["rounds"]] == [(2, 2), (2, 2)]
  with open(tmp_path / "repair" / "round_1" / repair.DIALOGS_FILE) as f:
    assert all("\nFeedback: " in json.loads(line)["prompt"] for line in f)
  with open(tmp_path / "repair" / "round_1" / "results.json") as f:
    assert json.load(f)["meta"]["repair_round"] == 1
