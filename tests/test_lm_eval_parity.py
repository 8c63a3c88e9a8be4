"""Our default MBPP synthesis prompt is lm-evaluation-harness's, byte for byte, for all 500.

lm-eval's own code renders its prompts: its TaskManager loads the `mbpp` task from the yaml in
its wheel (lm_eval/tasks/mbpp/mbpp.yaml: jinja doc_to_text and doc_to_target, the shots of its
utils.list_fewshot_samples, target_delimiter "" and the default fewshot_delimiter "\\n\\n"), and
Task.build_all_requests builds the requests its evaluator sends a model: each test problem's
3-shot context (ConfigurableTask.fewshot_context) and the generation settings. Two things are
replaced, neither on the prompt's path:
  * the hub download: `datasets.load_dataset("google-research-datasets/mbpp", "full")` returns
    the shared mbpp.jsonl in the hub's split layout (tests run offline);
  * `evaluate.load("code_eval")`, which the task's utils.py calls on import for its pass@1
    metric and which downloads the metric's code from the hub: a stand-in metric.
Our side is the prompt eval.py feeds the model: the default eval_synthesis config's examples.
"""
import importlib.metadata
import json
import pathlib
import sys
import types

import pytest

# Installed by requirements-test.txt (as the other parity references are).
datasets = pytest.importorskip("datasets")
lm_eval_tasks = pytest.importorskip("lm_eval.tasks")

from configs import eval_synthesis  # noqa: E402
from data import prompts  # noqa: E402
from evaluation.runner import load_examples  # noqa: E402

LM_EVAL_VERSION = "0.4.13"
# The Hugging Face dataset's splits of MBPP, by task id (inclusive).
HF_SPLITS = {"test": (11, 510), "train": (601, 974), "validation": (511, 600),
             "prompt": (1, 10)}
MBPP_TASK_DIR = pathlib.Path(lm_eval_tasks.__file__).parent / "mbpp"


def _stand_in_evaluate() -> types.ModuleType:
  """An `evaluate` module whose metrics load offline and score nothing (NaN).

  The task's utils.py runs its metric once on import, as a check that code execution is
  enabled; the prompts never use it.
  """

  class Metric:
    def compute(self, **kwargs):
      return {"pass@1": float("nan")}, {}

  module = types.ModuleType("evaluate")
  module.load = lambda name, *args, **kwargs: Metric()
  return module


@pytest.fixture(scope="module")
def mbpp_records(shared_data_dir) -> dict[int, dict]:
  with open(shared_data_dir / "mbpp" / "mbpp.jsonl", encoding="utf-8") as f:
    return {p["task_id"]: p for p in map(json.loads, f)}


@pytest.fixture(scope="module")
def lm_eval_mbpp(mbpp_records):
  """lm-eval's `mbpp` task, built by its TaskManager from its yaml, reading the local MBPP."""
  assert importlib.metadata.version("lm_eval") == LM_EVAL_VERSION
  local = datasets.DatasetDict({
      split: datasets.Dataset.from_list([mbpp_records[i] for i in range(first, last + 1)])
      for split, (first, last) in HF_SPLITS.items()})
  requested = []

  def load_dataset(path, name=None, **kwargs):
    requested.append((path, name, kwargs))
    return local

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(datasets, "load_dataset", load_dataset)
    patch.setitem(sys.modules, "evaluate", _stand_in_evaluate())
    # Indexing only the mbpp folder: all of lm-eval's tasks take 15 s to index.
    manager = lm_eval_tasks.TaskManager(include_defaults=False, include_path=str(MBPP_TASK_DIR))
    task = manager.load("mbpp")["tasks"]["mbpp"]
  assert requested == [("google-research-datasets/mbpp", "full", {})]
  assert task.config.metadata["config_source"] == str(MBPP_TASK_DIR / "mbpp.yaml")
  return task


@pytest.fixture(scope="module")
def lm_eval_prompts(lm_eval_mbpp) -> dict[int, str]:
  """What lm-eval asks a model to continue, per test task id."""
  assert lm_eval_mbpp.config.num_fewshot == 3
  lm_eval_mbpp.build_all_requests()
  prompts_by_id = {}
  for request in lm_eval_mbpp.instances:
    context, generation = request.arguments
    assert generation["until"] == [prompts.DONE]  # Its stop rule is ours too.
    prompts_by_id[request.doc["task_id"]] = context
  return prompts_by_id


def test_default_synthesis_prompts_equal_lm_evals_for_all_500(lm_eval_prompts, mbpp_dirs):
  config = eval_synthesis.get_config()
  config.data.data_dir, config.data.manual_dir = mbpp_dirs["data_dir"], mbpp_dirs["manual_dir"]
  ours = {e["task_id"]: e["prompt"] for e in load_examples(config)}
  assert sorted(ours) == sorted(lm_eval_prompts) == list(range(11, 511))
  mismatched = [i for i in ours if ours[i] != lm_eval_prompts[i]]
  assert not mismatched, f"{len(mismatched)} prompts differ from lm-eval's, e.g. task " \
                         f"{mismatched[0]}"


def test_the_old_separator_matches_none(lm_eval_prompts, mbpp_records):
  """Shots separated by "[DONE]\\n" (our old default) differ from lm-eval in every prompt."""
  first, last = HF_SPLITS["prompt"]
  prompt_split = [mbpp_records[i] for i in range(first, last + 1)]
  old = prompts.SynthesisPromptOptions(shot_separator="\n")
  matching = [i for i, theirs in lm_eval_prompts.items()
              if prompts.synthesis_prompt(mbpp_records[i], prompt_split, old) == theirs]
  assert not matching
  assert all(prompts.synthesis_prompt(mbpp_records[i], prompt_split) == theirs
             for i, theirs in lm_eval_prompts.items())
