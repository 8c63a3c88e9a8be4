"""The new-token budget covers every reference answer; the prompt budget leaves it room in the
model's context (evaluation/token_budgets.py)."""
import pytest

from configs import eval_execution, eval_mathqa, eval_synthesis
from data import code_corpus, tasks
from data import tokenizer as tokenizer_lib
from evaluation import token_budgets
from evaluation.runner import run_eval
from tests.scripted_sampler import ScriptedSampler


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> tokenizer_lib.Tokenizer:
  files = list(code_corpus.iter_source_files(code_corpus.stdlib_dir()))[:40]
  prefix = tmp_path_factory.mktemp("tok") / "budget"
  return tokenizer_lib.train_tokenizer([t for _, t in files], prefix, vocab_size=1000)


def _continuation(tokenizer):
  return lambda text: len(tokenizer.encode_continuation(text))


def test_eval_configs_compute_the_budgets_by_default():
  for module in (eval_synthesis, eval_execution, eval_mathqa):
    config = module.get_config()
    assert config.sampling.max_new_tokens == token_budgets.AUTO
    assert config.max_prompt_len == token_budgets.AUTO
    assert config.prompt_overflow == "drop_shots"


@pytest.mark.parametrize("task", ["mbpp_synthesis", "mbpp_execution"])
def test_auto_budget_covers_every_reference_answer_of_mbpp(mbpp_dirs, tokenizer, task):
  examples = tasks.load_task_examples(task, "test", **mbpp_dirs)
  count = _continuation(tokenizer)
  budgets = token_budgets.resolve(max_new_tokens=0, max_prompt_len=0, examples=examples,
                                  completion_tokens=count, context_len=None)
  needed = [count(e["target"]) for e in examples]
  assert all(e["target"].endswith("[DONE]") for e in examples)
  assert max(needed) <= budgets.max_new_tokens < max(needed) + token_budgets.NEW_TOKENS_MULTIPLE
  assert budgets.max_new_tokens % token_budgets.NEW_TOKENS_MULTIPLE == 0
  assert budgets.report["references_over_budget"] == {}
  assert budgets.report["longest_reference_tokens"] == max(needed)
  assert budgets.max_prompt_len == token_budgets.DEFAULT_MAX_PROMPT_LEN
  if task == "mbpp_synthesis":
    # A fixed 256 cuts some of the 500 references with this tokenizer: they are named.
    fixed = token_budgets.resolve(max_new_tokens=256, max_prompt_len=0, examples=examples,
                                  completion_tokens=count, context_len=None)
    over = {e["id"]: n for e, n in zip(examples, needed) if n > 256}
    assert over and fixed.report["references_over_budget"] == over
    assert fixed.max_new_tokens == 256 and fixed.report["max_new_tokens_from"] == "config"


def test_prompt_budget_is_the_models_context_less_new_tokens():
  examples = [{"id": "a", "target": "x" * 40}, {"id": "b", "target": "y" * 70}]
  resolve = lambda **kw: token_budgets.resolve(examples=examples, completion_tokens=len, **kw)
  auto = resolve(max_new_tokens=0, max_prompt_len=0, context_len=4096)
  assert (auto.max_new_tokens, auto.max_prompt_len) == (96, 4000)
  assert resolve(max_new_tokens=64, max_prompt_len=0, context_len=None).max_prompt_len == 1024
  assert resolve(max_new_tokens=64, max_prompt_len=2000, context_len=4096).max_prompt_len == 2000
  with pytest.raises(ValueError, match=r"max_prompt_len=4090 \+ max_new_tokens=96 exceed"):
    resolve(max_new_tokens=0, max_prompt_len=4090, context_len=4096)
  with pytest.raises(ValueError, match="leaves no room for a prompt"):
    resolve(max_new_tokens=4096, max_prompt_len=0, context_len=4096)


def test_run_eval_samples_with_the_computed_budget(mbpp_dirs, tmp_path):
  """Characters stand in for tokens (ScriptedSampler)."""
  used = []
  sampler = ScriptedSampler(lambda _, s: used.append(s.sampling.max_new_tokens) or "x = 1\n",
                            context_len=2048)
  config = eval_synthesis.get_config()
  config.data.update(**mbpp_dirs)
  config.update(checkpoint="scripted", max_problems=4, num_samples=1)
  results = run_eval(config, str(tmp_path / "ev"), sampler)
  longest = max(len(e["target"]) for e in tasks.load_task_examples(
      "mbpp_synthesis", "test", **mbpp_dirs)[:4])
  budgets = results["meta"]["token_budgets"]
  assert set(used) == {budgets["max_new_tokens"]} and budgets["max_new_tokens"] >= longest
  assert budgets["longest_reference_tokens"] == longest
  assert budgets["max_prompt_len"] == 2048 - budgets["max_new_tokens"]
  assert budgets["context_len"] == 2048 and budgets["references_over_budget"] == {}
