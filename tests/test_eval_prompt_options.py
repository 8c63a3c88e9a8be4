"""Every *PromptOptions field is settable from the eval configs, per task; none is ignored."""
import dataclasses
import json
import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from data import prompts
from data import tasks
from evaluation.runner import load_examples, prompt_options
from tests.test_prompts import GOLDEN_TASK_11

CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = {"mbpp_synthesis": CONFIGS_DIR / "eval_synthesis.py",
                "mbpp_execution": CONFIGS_DIR / "eval_execution.py",
                "mathqa": CONFIGS_DIR / "eval_mathqa.py",
                "humaneval": CONFIGS_DIR / "eval_humaneval.py",
                "humaneval_plus": CONFIGS_DIR / "eval_humaneval_plus.py",
                "mbpp_plus": CONFIGS_DIR / "eval_mbpp_plus.py"}
# A non-default command-line value for every field of every task's prompt options, and what
# it parses to.
FLAG_VALUES = {
    "num_shots": ("2", 2),
    "shot_task_ids": ("(5,6,7)", (5, 6, 7)),
    "shot_seed": ("4", 4),
    "num_tests_shown": ("1", 1),
    "shot_separator": ("\n###\n", "\n###\n"),
    "normalize_line_endings": ("true", True),
    "variant": ("code_tests", "code_tests"),
    "shot_indices": ("(1,2)", (1, 2)),
}


def _parse(task: str, *overrides: str):
  """The ConfigDict eval.py gets from `--config=configs/eval_TASK.py --config.x=y ...`."""
  argv = ["eval.py", f"--config={CONFIG_FILES[task]}", *overrides]
  flag_values = flags.FlagValues()
  config = config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values,
                                           lock_config=True, sys_argv=argv)
  flag_values(argv)
  return config.value


def _fields(task: str) -> list[str]:
  return [f.name for f in dataclasses.fields(tasks.PROMPT_OPTIONS_TYPES[task])]


def test_the_flag_values_cover_every_prompt_option():
  assert set(FLAG_VALUES) == {name for task in CONFIG_FILES for name in _fields(task)}


@pytest.mark.parametrize("task", sorted(CONFIG_FILES))
def test_every_field_is_settable_from_the_command_line(task):
  for name in _fields(task):
    text, value = FLAG_VALUES[name]
    config = _parse(task, f"--config.prompt.{name}={text}")
    assert config.task == task
    assert prompt_options(config)[name] == value


@pytest.mark.parametrize("task", sorted(CONFIG_FILES))
def test_defaults_are_the_prompt_options_defaults(task):
  options_type = tasks.PROMPT_OPTIONS_TYPES[task]
  assert options_type(**prompt_options(_parse(task))) == options_type()


@pytest.mark.parametrize("task, name", [("mbpp_synthesis", "variant"),
                                        ("mbpp_execution", "num_tests_shown"),
                                        ("mathqa", "normalize_line_endings"),
                                        ("mathqa", "shot_task_ids")])
def test_a_field_the_task_lacks_is_refused(task, name):
  config = _parse(task, f"--config.prompt.{name}={FLAG_VALUES[name][0]}")
  with pytest.raises(ValueError, match=f"task '{task}' has no 'prompt.{name}' option") as e:
    prompt_options(config)
  assert "\n" not in str(e.value)


def test_unknown_task_is_refused():
  with pytest.raises(ValueError, match="unknown task 'mbpp'"):
    prompt_options(_parse("mbpp_synthesis", "--config.task=mbpp"))


def _data_dirs(mbpp_dirs) -> list[str]:
  return [f"--config.data.data_dir={mbpp_dirs['data_dir']}",
          f"--config.data.manual_dir={mbpp_dirs['manual_dir']}", "--config.max_problems=1"]


def test_overridden_options_reach_the_synthesis_prompts(mbpp_dirs, shared_data_dir):
  with open(shared_data_dir / "mbpp" / "mbpp.jsonl", encoding="utf-8") as f:
    problems = {p["task_id"]: p for p in map(json.loads, f)}
  assert load_examples(_parse("mbpp_synthesis", *_data_dirs(mbpp_dirs)))[0]["prompt"] == (
      GOLDEN_TASK_11)
  config = _parse("mbpp_synthesis", *_data_dirs(mbpp_dirs), "--config.prompt.shot_separator=\n",
                  "--config.prompt.shot_task_ids=(5,6,7)")
  prompt = load_examples(config)[0]["prompt"]
  options = prompts.SynthesisPromptOptions(shot_separator="\n", shot_task_ids=(5, 6, 7))
  assert prompt == prompts.synthesis_prompt(problems[11], [problems[i] for i in range(1, 11)],
                                            options)
  assert prompt.startswith(prompts.synthesis_query(problems[5], options))
  assert prompt.count("[DONE]\nYou are an expert") == 3 and "[DONE]\n\n" not in prompt


def test_overridden_options_reach_the_execution_prompts(mbpp_dirs):
  config = _parse("mbpp_execution", *_data_dirs(mbpp_dirs),
                  "--config.prompt.variant=code_description", "--config.prompt.num_shots=1",
                  "--config.prompt.shot_separator=\n~~~\n")
  prompt = load_examples(config)[0]["prompt"]
  assert prompt.startswith("# Write a function to find the similar elements")
  assert prompt.count("[DONE]\n~~~\n# ") == 1
