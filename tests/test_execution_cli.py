"""`python -m execution`: JSONL in, JSONL out in input order, scores, and loud failures."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox tests run as root (CI)")

OUTPUT_KEYS = {"id", "status", "passed", "tests_passed", "tests_total", "error", "duration_s"}


def _run_cli(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  return subprocess.run([sys.executable, "-m", "execution", *args], capture_output=True,
                        text=True, env=env, cwd=REPO_ROOT, timeout=120)


def test_cli_writes_one_verdict_per_input_line_in_order(tmp_path):
  jobs = [
      {"id": "p/0", "program": "def f(x):\n  return 2 * x\n", "tests": ["assert f(2) == 4"]},
      {"id": "p/1", "program": "def f(x):\n  return x\n", "tests": ["assert f(2) == 4"]},
      {"id": "p/2", "program": "while True:\n  pass\n", "tests": ["assert f(2) == 4"]},
      {"id": "q/0", "program": "class Node:\n  pass\n", "setup": "n = Node()",
       "tests": ["assert isinstance(n, Node)"]},
      {"id": "q/1", "program": "def f(x) return", "tests": []},
  ]
  source = tmp_path / "in.jsonl"
  source.write_text("".join(json.dumps(j) + "\n" for j in jobs))
  out, scores = tmp_path / "out.jsonl", tmp_path / "scores.json"
  done = _run_cli("--input", str(source), "--output", str(out), "--timeout", "1",
                  "--workers", "2", "--memory-mb", "512", "--scores", str(scores), "--k", "1,2")
  assert done.returncode == 0, done.stderr
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [line["id"] for line in lines] == ["p/0", "p/1", "p/2", "q/0", "q/1"]
  assert all(set(line) == OUTPUT_KEYS for line in lines)
  assert [line["status"] for line in lines] == [
      "passed", "failed", "timeout", "passed", "syntax_error"]
  assert [line["passed"] for line in lines] == [True, False, False, True, False]
  overall = json.loads(scores.read_text())["overall"]
  # p: 1 of 3 pass -> pass@1 = 1/3, pass@2 = 1 - C(2,2)/C(3,2) = 2/3; q: 1 of 2 -> 1/2, 1.
  assert overall["pass_at_k"]["1"] == pytest.approx((1 / 3 + 1 / 2) / 2)
  assert overall["pass_at_k"]["2"] == pytest.approx((2 / 3 + 1) / 2)
  assert "pid namespace" in done.stderr and "5/5 programs" in done.stderr


def test_cli_rejects_malformed_input_with_the_line_number(tmp_path):
  source = tmp_path / "in.jsonl"
  source.write_text(json.dumps({"id": "a", "program": "", "tests": []}) + "\n" +
                    json.dumps({"id": "b", "program": 3, "tests": []}) + "\n")
  done = _run_cli("--input", str(source), "--output", str(tmp_path / "out.jsonl"))
  assert done.returncode == 2
  assert "in.jsonl:2" in done.stderr
  assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("flags, status", [((), "passed"), (("--run-as-main",), "error")])
def test_cli_runs_main_blocks_only_when_asked(tmp_path, flags, status):
  program = "def f():\n  return 1\nif __name__ == '__main__':\n  input()\n"
  source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  source.write_text(json.dumps({"id": "m", "program": program, "tests": ["assert f() == 1"]}))
  done = _run_cli("--input", str(source), "--output", str(out), "--workers", "1", *flags)
  assert done.returncode == 0, done.stderr
  assert json.loads(out.read_text())["status"] == status


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_cli_on_a_full_disk_says_so_in_one_line(tmp_path):
  # The output lies on a 40 KiB tmpfs mounted in a private mount namespace; two verdicts
  # carrying 30,000 characters of output each fill it.
  source, full = tmp_path / "in.jsonl", tmp_path / "full"
  full.mkdir()
  source.write_text("".join(json.dumps({"id": f"p{i}", "program": "print('x' * 30000)",
                                        "tests": []}) + "\n" for i in range(2)))
  command = (f"mount -t tmpfs -o size=40k tmpfs {full} && exec {sys.executable} -m execution "
             f"--input {source} --output {full}/out.jsonl --with-output --workers 1 "
             "--screen-batch 0")
  done = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), cwd=REPO_ROOT,
                        timeout=120)
  assert done.returncode == 2, done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("error: writing the results failed: No space left on device ("), last
  assert "Traceback" not in done.stderr
