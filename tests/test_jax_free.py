"""Scoring a samples file, the sandbox's command line and the sweep status checks need no JAX:
each runs in a subprocess where `import jax` fails (a stub `jax` package first on the path)."""
import json
import os
import subprocess
import sys

import pytest

from configs import eval_synthesis
from evaluation.runner import run_eval
from evaluation.sample_formats import docstring_prompt
from tests.conftest import REPO_ROOT

TASK_IDS = range(11, 16)


@pytest.fixture(scope="module")
def no_jax_env(tmp_path_factory) -> dict[str, str]:
  stub = tmp_path_factory.mktemp("no_jax")
  (stub / "jax").mkdir()
  (stub / "jax" / "__init__.py").write_text(
      'raise ImportError("this test runs without JAX: nothing here may import it")\n')
  return dict(os.environ, PYTHONPATH=os.pathsep.join([str(stub), str(REPO_ROOT)]))


def _run(args, env, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                        cwd=REPO_ROOT, timeout=300, **kwargs)


def test_the_stub_makes_jax_fail(no_jax_env):
  """Or the tests below would prove nothing."""
  done = _run(["-c", "import jax"], no_jax_env)
  assert done.returncode != 0 and "runs without JAX" in done.stderr


def _bigcode_generations(shared_data_dir, path) -> None:
  """bigcode's generations_mbpp.json for tasks 11..15, one generation each: the reference
  solutions, except task 13's, which fails."""
  examples = {}
  with open(shared_data_dir / "mbpp" / "mbpp.jsonl") as f:
    for line in f:
      problem = json.loads(line)
      examples[problem["task_id"]] = problem
  generations = [[docstring_prompt(examples[t]) +
                  (examples[t]["code"] if t != 13 else "def wrong():\n  return None\n")]
                 for t in TASK_IDS]
  path.write_text(json.dumps(generations))


def test_eval_scores_a_bigcode_file_without_jax(no_jax_env, mbpp_dirs, shared_data_dir,
                                                tmp_path):
  samples = tmp_path / "generations_mbpp.json"
  _bigcode_generations(shared_data_dir, samples)
  workdir = tmp_path / "no_jax"
  done = _run(["eval.py", "--config=configs/eval_synthesis.py", f"--workdir={workdir}",
               f"--config.samples_path={samples}", f"--config.max_problems={len(TASK_IDS)}",
               f"--config.data.manual_dir={mbpp_dirs['manual_dir']}",
               f"--config.data.data_dir={mbpp_dirs['data_dir']}"], no_jax_env)
  assert done.returncode == 0, done.stderr[-3000:]
  without_jax = json.loads((workdir / "results.json").read_text())
  assert without_jax["meta"]["samples_format"] == "bigcode"
  assert without_jax["pass_at_k"] == {"1": 0.8}
  # The same file scored in this process, where JAX is importable: the same numbers.
  config = eval_synthesis.get_config()
  config.data.manual_dir, config.data.data_dir = mbpp_dirs["manual_dir"], mbpp_dirs["data_dir"]
  config.samples_path, config.max_problems = str(samples), len(TASK_IDS)
  with_jax = run_eval(config, str(tmp_path / "with_jax"))
  assert with_jax["pass_at_k"] == without_jax["pass_at_k"]
  assert with_jax["per_problem"] == without_jax["per_problem"]


@pytest.mark.skipif(os.geteuid() != 0, reason="sandbox tests run as root (CI)")
def test_execution_cli_runs_without_jax(no_jax_env, tmp_path):
  source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  source.write_text(json.dumps({"id": "p/0", "program": "def f(x):\n  return 2 * x\n",
                                "tests": ["assert f(2) == 4"]}) + "\n")
  done = _run(["-m", "execution", "--input", str(source), "--output", str(out),
               "--workers", "1"], no_jax_env)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(out.read_text())["status"] == "passed"


def test_sweep_status_runs_without_jax(no_jax_env, tmp_path):
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  (tmp_path / "samples.jsonl").write_text("{}\n")
  done = _run(["-c", "from sweeps import status; import sys; "
               "print(status.train_status(sys.argv[1], 4).state, "
               "status.eval_status(sys.argv[1]).state)", str(tmp_path)], no_jax_env)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split() == ["finished", "resume"]
