"""Prompt formats, pinned byte for byte on the real MBPP and MathQA data."""
import hashlib
import json
import subprocess
import sys

import pytest

from data import execution_examples
from data import prompts

# The paper's 3-shot prompt (shots 2, 3, 4; three tests shown) for task 11, exactly; the
# shots are separated by a blank line ("[DONE]\n\n"), as in lm-evaluation-harness.
GOLDEN_TASK_11 = (
    "You are an expert Python programmer, and here is your task: Write a function to find "
    "the similar elements from the given two tuple lists. Your code should pass these "
    "tests:\n"
    "\n"
    "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
    "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)\n"
    "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)\n"
    "[BEGIN]\n"
    "def similar_elements(test_tup1, test_tup2):\r\n"
    "  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
    "  return (res) \n"
    "[DONE]\n"
    "\n"
    "You are an expert Python programmer, and here is your task: Write a python function "
    "to identify non-prime numbers. Your code should pass these tests:\n"
    "\n"
    "assert is_not_prime(2) == False\n"
    "assert is_not_prime(10) == True\n"
    "assert is_not_prime(35) == True\n"
    "[BEGIN]\n"
    "import math\r\n"
    "def is_not_prime(n):\r\n"
    "    result = False\r\n"
    "    for i in range(2,int(math.sqrt(n)) + 1):\r\n"
    "        if n % i == 0:\r\n"
    "            result = True\r\n"
    "    return result\n"
    "[DONE]\n"
    "\n"
    "You are an expert Python programmer, and here is your task: Write a function to find "
    "the largest integers from a given list of numbers using heap queue algorithm. Your "
    "code should pass these tests:\n"
    "\n"
    "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] \n"
    "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] \n"
    "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, "
    "58, 35]\n"
    "[BEGIN]\n"
    "import heapq as hq\r\n"
    "def heap_queue_largest(nums,n):\r\n"
    "  largest_nums = hq.nlargest(n, nums)\r\n"
    "  return largest_nums\n"
    "[DONE]\n"
    "\n"
    "You are an expert Python programmer, and here is your task: Write a python function "
    "to remove first and last occurrence of a given character from the string. Your code "
    "should pass these tests:\n"
    "\n"
    'assert remove_Occ("hello","l") == "heo"\n'
    'assert remove_Occ("abcda","a") == "bcd"\n'
    'assert remove_Occ("PHP","P") == "H"\n'
    "[BEGIN]\n")
GOLDEN_TASK_11_SHA256 = "8d9e21c0a49993c96c3d9b9ebfeab807986ec347f22336422e51e0032820a29b"


@pytest.fixture(scope="module")
def problems(shared_data_dir) -> dict[int, dict]:
  with open(shared_data_dir / "mbpp" / "mbpp.jsonl", encoding="utf-8") as f:
    return {p["task_id"]: p for p in map(json.loads, f)}


@pytest.fixture(scope="module")
def prompt_split(problems) -> list[dict]:
  return [problems[i] for i in range(1, 11)]


def test_golden_synthesis_prompt_task_11(problems, prompt_split):
  prompt = prompts.synthesis_prompt(problems[11], prompt_split)
  assert prompt == GOLDEN_TASK_11
  assert hashlib.sha256(prompt.encode()).hexdigest() == GOLDEN_TASK_11_SHA256


def test_golden_prompt_uses_the_default_shot_separator(problems, prompt_split):
  assert prompts.DEFAULT_SHOT_SEPARATOR == "\n\n"
  old_separator = prompts.SynthesisPromptOptions(shot_separator="\n")
  old = prompts.synthesis_prompt(problems[11], prompt_split, old_separator)
  assert old == GOLDEN_TASK_11.replace("[DONE]\n\n", "[DONE]\n")
  assert len(old) == len(GOLDEN_TASK_11) - 3  # one byte per shot.


def test_cli_prints_exactly_the_golden_prompt(shared_data_dir, tmp_path):
  # A fresh TFDS data dir: the CLI builds MBPP first, and TFDS's "Downloading and preparing"
  # messages (printed to stdout by TFDS) must not end up in the prompt.
  out = subprocess.run(
      [sys.executable, "-m", "data.show_prompt", "--task", "synthesis", "--task_id", "11",
       "--data_dir", str(tmp_path / "tfds"), "--manual_dir", str(shared_data_dir / "mbpp")],
      capture_output=True, check=True)
  assert b"Downloading and preparing" in out.stderr
  assert out.stdout == GOLDEN_TASK_11.encode()


def test_target_and_cut_at_done(problems):
  options = prompts.SynthesisPromptOptions()
  target = prompts.synthesis_target(problems[11], options)
  assert target == problems[11]["code"] + "\n[DONE]"
  assert prompts.cut_at_done(target + "\nYou are an expert") == problems[11]["code"] + "\n"
  assert prompts.cut_at_done("no marker") == "no marker"


@pytest.mark.parametrize("num_tests", [0, 1])
def test_number_of_tests_shown(problems, num_tests):
  options = prompts.SynthesisPromptOptions(num_shots=0, num_tests_shown=num_tests)
  prompt = prompts.synthesis_prompt(problems[11], [], options)
  head = ("You are an expert Python programmer, and here is your task: Write a python "
          "function to remove first and last occurrence of a given character from the "
          "string.")
  if num_tests == 0:
    assert prompt == head + "\n[BEGIN]\n"
  else:
    assert prompt == (head + " Your code should pass these tests:\n\n"
                      'assert remove_Occ("hello","l") == "heo"\n[BEGIN]\n')


def test_bad_number_of_tests_is_refused():
  with pytest.raises(ValueError, match="0, 1 or 3"):
    prompts.SynthesisPromptOptions(num_tests_shown=2)


def test_seeded_shots_are_reproducible_and_never_the_query(problems, prompt_split):
  draws = set()
  for seed in range(15):
    options = prompts.SynthesisPromptOptions(shot_seed=seed)
    shots = prompts.choose_shots(prompt_split, 5, 3, (), seed)
    assert 5 not in [s["task_id"] for s in shots] and len(shots) == 3
    assert prompts.synthesis_prompt(problems[5], prompt_split, options) == (
        prompts.synthesis_prompt(problems[5], prompt_split, options))
    draws.add(tuple(s["task_id"] for s in shots))
  assert len(draws) >= 10  # 15 seeds give (mostly) different prompts.


def test_a_shot_problem_is_never_its_own_shot(problems, prompt_split):
  prompt = prompts.synthesis_prompt(problems[3], prompt_split)
  assert prompt.count("[BEGIN]") == 3 and prompt.count("is_not_prime(10)") == 1
  assert prompt.startswith(prompts.synthesis_query(problems[2],
                                                   prompts.SynthesisPromptOptions()))


def test_fixed_shot_ids_separator_and_line_endings(problems, prompt_split):
  options = prompts.SynthesisPromptOptions(num_shots=1, shot_task_ids=(7,),
                                           shot_separator="\n###\n",
                                           normalize_line_endings=True)
  prompt = prompts.synthesis_prompt(problems[11], prompt_split, options)
  shot = prompts.synthesis_query(problems[7], options)
  assert prompt.startswith(shot) and "\r" not in prompt
  assert prompt.count("[DONE]\n###\nYou are an expert") == 1
  assert prompts.synthesis_target(problems[2], options) == (
      problems[2]["code"].replace("\r\n", "\n") + "\n[DONE]")


def test_template_fingerprint_changes_with_options():
  default = prompts.template_fingerprint(prompts.SynthesisPromptOptions())
  assert default == prompts.template_fingerprint(prompts.SynthesisPromptOptions())
  assert default != prompts.template_fingerprint(
      prompts.SynthesisPromptOptions(shot_separator="\n"))
  assert default != prompts.template_fingerprint(prompts.ExecutionPromptOptions())


def test_execution_prompt_variants(problems, prompt_split):
  case = execution_examples.cases_from_problem(problems[11])[0][1]
  code_block = "[BEGIN]\n" + problems[11]["code"] + "\n[DONE]\n"
  worked = ('assert remove_Occ("hello","l") == "heo"\n'
            'assert remove_Occ("PHP","P") == "H"\n')
  description = ("# Write a python function to remove first and last occurrence of a "
                 "given character from the string.\n")
  query = 'assert remove_Occ("abcda","a") == '
  expected = {
      "code": code_block + query,
      "code_description": description + code_block + query,
      "code_tests": code_block + worked + query,
      "code_description_tests": description + code_block + worked + query,
  }
  for variant, text in expected.items():
    options = prompts.ExecutionPromptOptions(variant=variant, num_shots=0)
    assert prompts.execution_prompt(problems[11], case, prompt_split, options) == text
  assert prompts.execution_target(case) == '"bcd"\n[DONE]'
  # With shots, each shot asks about its first test and shows its answer.
  three_shot = prompts.execution_prompt(problems[11], case, prompt_split)
  assert three_shot.count("[DONE]") == 3 * 2 + 1
  assert three_shot.startswith("[BEGIN]\n" + problems[2]["code"])
  assert "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n[DONE]\n\n[BEGIN]" in (
      three_shot)


def test_mathqa_prompt(mathqa_dirs):  # noqa: F811
  from data import mathqa  # pylint: disable=import-outside-toplevel
  problems = mathqa.load("validation", **mathqa_dirs)
  query = problems[3]
  assert prompts.mathqa_prompt(query) == f"# {query['text']}\n"
  assert prompts.mathqa_target(query) == query["program"] + "[DONE]"
  two_shot = prompts.mathqa_prompt(query, problems,
                                   prompts.MathqaPromptOptions(num_shots=2))
  assert two_shot == (f"# {problems[0]['text']}\n{problems[0]['program']}[DONE]\n\n"
                      f"# {problems[1]['text']}\n{problems[1]['program']}[DONE]\n\n"
                      f"# {query['text']}\n")
  # The query is never its own shot.
  own = prompts.mathqa_prompt(problems[0], problems,
                              prompts.MathqaPromptOptions(num_shots=1))
  assert own.count(problems[0]["text"]) == 1


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "data.show_prompt", *args],
                        capture_output=True, check=True)


def test_cli_execution_and_mathqa_print_the_task_examples(mbpp_dirs, mathqa_dirs):  # noqa: F811
  from data import tasks  # pylint: disable=import-outside-toplevel
  execution = _cli("--task", "execution", "--variant", "code_description", "--task_id",
                   "12", "--test_index", "2", "--show_target",
                   "--data_dir", mbpp_dirs["data_dir"],
                   "--manual_dir", mbpp_dirs["manual_dir"])
  example = next(e for e in tasks.load_task_examples(
      "mbpp_execution", "test", variant="code_description", **mbpp_dirs)
                 if (e["task_id"], e["test_index"]) == (12, 2))
  assert execution.stdout.decode() == example["prompt"] + example["target"]
  assert example["prompt_template_sha256"] in execution.stderr.decode()
  mathqa_out = _cli("--task", "mathqa", "--index", "5", "--data_dir",
                    mathqa_dirs["data_dir"], "--manual_dir", mathqa_dirs["manual_dir"])
  example = tasks.load_task_examples("mathqa", "validation", **mathqa_dirs)[5]
  assert mathqa_out.stdout.decode() == example["prompt"]
