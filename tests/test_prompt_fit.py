"""Prompts too long for a model's context lose whole shots, or fail as prompt_too_long, and
results.json names the problems (data/prompt_fit.py, evaluation/runner.py)."""
import json

import pytest

from configs import eval_synthesis
from data import code_corpus, prompt_fit, tasks
from data import tokenizer as tokenizer_lib
from evaluation import repair
from evaluation.runner import run_eval
from tests.scripted_sampler import ScriptedSampler


@pytest.fixture(scope="module")
def bos_tokenizer(tmp_path_factory) -> tokenizer_lib.Tokenizer:
  """A small trained tokenizer that puts BOS first, as imported Llama/Gemma models do."""
  files = list(code_corpus.iter_source_files(code_corpus.stdlib_dir()))[:40]
  prefix = tmp_path_factory.mktemp("tok") / "fit"
  trained = tokenizer_lib.train_tokenizer([t for _, t in files], prefix, vocab_size=1000)
  return tokenizer_lib.Tokenizer(trained.model_proto, imported=True, add_bos=True)


@pytest.fixture(scope="module")
def mbpp_test(mbpp_dirs):
  return {e["task_id"]: e for e in tasks.load_task_examples("mbpp_synthesis", "test",
                                                           **mbpp_dirs)}


def _count(tokenizer):
  return lambda text: len(tokenizer.encode_prompt(text))


def test_shot_ends_split_the_prompt_into_its_shots_and_query(mbpp_test):
  example = mbpp_test[40]
  ends = example["prompt_shot_ends"]
  assert len(ends) == 3
  pieces = [example["prompt"][a:b] for a, b in zip([0] + ends[:-1], ends)]
  assert all(p.startswith("You are an expert Python programmer") and p.endswith("[DONE]\n\n")
             for p in pieces)
  assert example["prompt"][ends[-1]:].startswith("You are an expert Python programmer, and "
                                                 "here is your task: " + example["text"])


@pytest.mark.parametrize("task_id", [40, 493])
def test_a_long_prompt_loses_whole_shots_and_keeps_bos_task_and_tests(mbpp_test, bos_tokenizer,
                                                                      task_id):
  example = mbpp_test[task_id]
  count = _count(bos_tokenizer)
  ends, prompt = example["prompt_shot_ends"], example["prompt"]
  query = prompt[ends[-1]:]
  # Room for the first shot and the query, not for two shots: two shots go.
  limit = count(prompt[:ends[0]] + query)
  assert count(prompt[:ends[1]] + query) > limit
  fitted = prompt_fit.fit_example(example, count, limit, "drop_shots")
  assert fitted["shots_dropped"] == 2 and fitted["prompt_shot_ends"] == ends[:1]
  assert fitted["prompt"] == prompt[:ends[0]] + query
  assert fitted["prompt"].endswith(query) and query.endswith("[BEGIN]\n")
  assert all(test in fitted["prompt"] for test in example["test_list"])
  tokens = bos_tokenizer.encode_prompt(fitted["prompt"])
  assert tokens[0] == bos_tokenizer.bos_id and len(tokens) <= limit
  # Fits as it is: unchanged.
  assert prompt_fit.fit_example(example, count, count(prompt), "drop_shots") is example


def test_fail_mode_and_a_query_that_cannot_fit(mbpp_test, bos_tokenizer):
  example, count = mbpp_test[40], _count(bos_tokenizer)
  failed = prompt_fit.fit_example(example, count, count(example["prompt"]) - 1, "fail")
  assert failed["prompt_too_long"] and failed["prompt"] == example["prompt"]
  query = example["prompt"][example["prompt_shot_ends"][-1]:]
  # Even without shots the query does not fit: it is never cut, it fails.
  too_small = prompt_fit.fit_example(example, count, count(query) - 1, "drop_shots")
  assert too_small["prompt_too_long"] and "shots_dropped" not in too_small
  with pytest.raises(ValueError, match="unknown prompt_overflow 'cut'"):
    prompt_fit.fit_example(example, count, 10, "cut")


def test_a_grown_repair_dialog_loses_shots_not_turns(mbpp_test, bos_tokenizer):
  example, count = mbpp_test[11], _count(bos_tokenizer)
  record = {"completion": "def f(x):\n  return x\n", "status": "failed", "error": "",
            "tests_passed": 0, "tests_total": 3, "passed": False}
  dialog = {**example, "prompt": repair.repair_prompt(example, record)}
  turn = dialog["prompt"][len(example["prompt"]):]
  assert turn.startswith("def f(x):") and turn.endswith("[BEGIN]\n")
  fitted = prompt_fit.fit_example(dialog, count, count(dialog["prompt"]) - 1, "drop_shots")
  assert fitted["shots_dropped"] == 1
  query = example["prompt"][example["prompt_shot_ends"][-1]:]
  assert fitted["prompt"].endswith(query + turn)


def _config(mbpp_dirs, **overrides):
  config = eval_synthesis.get_config()
  config.data.manual_dir = mbpp_dirs["manual_dir"]
  config.data.data_dir = mbpp_dirs["data_dir"]
  config.checkpoint = "scripted"
  config.update(overrides)
  return config


@pytest.mark.parametrize("overflow", ["drop_shots", "fail"])
def test_results_list_the_problems_whose_prompts_did_not_fit(mbpp_dirs, mbpp_test, tmp_path,
                                                             overflow):
  """Characters stand in for tokens (ScriptedSampler): a limit between the prompts' lengths."""
  examples = [mbpp_test[t] for t in range(11, 17)]
  limit = sorted(len(e["prompt"]) for e in examples)[2]
  long_ids = [e["id"] for e in examples if len(e["prompt"]) > limit]
  seen = []
  sampler = ScriptedSampler(lambda prompt, _: seen.append(prompt) or "return 1\n")
  config = _config(mbpp_dirs, max_problems=6, num_samples=2, max_prompt_len=limit,
                   prompt_overflow=overflow)
  results = run_eval(config, str(tmp_path / "ev"), sampler)
  assert len(long_ids) == 3
  fit = results["prompt_fit"]
  if overflow == "drop_shots":
    assert list(fit["shots_dropped"]) == long_ids and fit["prompt_too_long"] == []
    assert all(len(p) <= limit for p in seen) and len(seen) == 12
    # What the model saw: whole shots, then the query.
    by_id = {e["id"]: e for e in examples}
    for example_id, dropped in fit["shots_dropped"].items():
      example = by_id[example_id]
      shorter = prompt_fit.without_last_shots(example["prompt"], example["prompt_shot_ends"],
                                              dropped)
      assert shorter in seen
  else:
    assert fit == {"shots_dropped": {}, "prompt_too_long": long_ids}
    assert len(seen) == 6  # only the problems that fit were sampled
    assert results["status_counts"]["prompt_too_long"] == 6
    per_problem = {p["id"]: (p["n"], p["c"]) for p in results["per_problem"]}
    assert all(per_problem[i] == (2, 0) for i in long_ids)
    with open(tmp_path / "ev" / "samples.jsonl") as f:
      statuses = {r["id"]: r["status"] for r in map(json.loads, f)}
    assert {i for i, s in statuses.items() if s == "prompt_too_long"} == set(long_ids)
  assert results["meta"]["token_budgets"]["max_prompt_len"] == limit
  assert results["meta"]["prompt_overflow"] == overflow
