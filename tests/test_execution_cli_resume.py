"""`python -m execution` under kill -9: verdicts are on disk as they finish, a restart runs
only the ids not yet there, one run per output file, and bad paths/input fail before any run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT

_ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT))


def _cli(*args: str, **popen) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "execution", *args], cwd=REPO_ROOT, env=_ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "execution", *args], cwd=REPO_ROOT, env=_ENV,
                        capture_output=True, text=True, timeout=120)


def _jobs(n: int) -> list[dict]:
  # Slow enough (0.15 s each) that the run is killed half way; every third one fails.
  return [{"id": f"p{i // 3}/{i % 3}", "program": "import time\ntime.sleep(0.15)\n",
           "tests": [f"assert {i % 3} != 2"]} for i in range(n)]


def _lines(path) -> list[str]:
  return path.read_text().splitlines(keepends=True) if path.exists() else []


@pytest.mark.skipif(os.geteuid() != 0, reason="sandbox tests run as root (CI)")
def test_killed_run_resumes_without_running_an_id_twice(tmp_path):
  jobs = _jobs(30)
  source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  source.write_text("".join(json.dumps(j) + "\n" for j in jobs))
  args = ("--input", str(source), "--output", str(out), "--workers", "2", "--memory-mb", "512")
  first = _cli(*args)
  try:
    deadline = time.monotonic() + 60
    while len(_lines(out)) < 4:
      assert first.poll() is None and time.monotonic() < deadline, first.communicate()
      time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # frozen (still holding its output) while we look
    kept = _lines(out)
    # A second run on the same output is refused at once, naming the first.
    second = _run(*args)
    assert second.returncode == 2
    assert f"is being written by another run (pid {first.pid} on " in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
  finally:
    first.kill()
  assert _lines(out) == kept and 4 <= len(kept) < len(jobs)
  # Streamed in input order: what survived the kill is a prefix of the input.
  assert [json.loads(line)["id"] for line in kept] == [j["id"] for j in jobs[:len(kept)]]
  with open(out, "a") as f:  # as if killed in the middle of writing the next line
    f.write('{"id": "%s", "sta' % jobs[len(kept)]["id"])

  resumed = _run(*args)
  assert resumed.returncode == 0, resumed.stderr
  todo = len(jobs) - len(kept)
  assert "dropping a torn last line" in resumed.stderr
  assert f"resuming; {len(kept)} verdicts already there, {todo} to run" in resumed.stderr
  assert f"{todo}/{todo} programs" in resumed.stderr  # ran only the rest
  final = _lines(out)
  assert final[:len(kept)] == kept  # earlier verdicts untouched (their durations too)
  records = [json.loads(line) for line in final]
  assert [r["id"] for r in records] == [j["id"] for j in jobs]
  assert [r["passed"] for r in records] == [i % 3 != 2 for i in range(len(jobs))]

  again = _run(*args)  # nothing left: no sandbox started, output unchanged
  assert again.returncode == 0 and "0 to run" in again.stderr
  assert _lines(out) == final
  assert not (tmp_path / "out.jsonl.lock").exists()


@pytest.mark.parametrize("content, error", [
    ('{"id": "a", "program": "", "tests": []}\n[1, 2]\n',
     "in.jsonl:2: expected a JSON object per line, got a list"),
    (b'{"id": "a", "program": "", "tests": []}\n{"id": "b", "program": "x = \'\xff\'", '
     b'"tests": []}\n', "in.jsonl:2: not valid UTF-8 (byte 0xff at position 30 of the line)"),
])
def test_bad_input_lines_are_one_line_with_file_and_line(tmp_path, content, error):
  source = tmp_path / "in.jsonl"
  if isinstance(content, bytes):
    source.write_bytes(content)
  else:
    source.write_text(content)
  done = _run("--input", str(source), "--output", str(tmp_path / "out.jsonl"))
  assert done.returncode == 2
  assert done.stderr.strip() == f"error: {source.parent}/{error}"
  assert not (tmp_path / "out.jsonl").exists()


def test_output_in_a_missing_directory_fails_before_anything_runs(tmp_path):
  source = tmp_path / "in.jsonl"
  source.write_text("".join(json.dumps(j) + "\n" for j in _jobs(3)))
  for flag in ("--output", "--scores"):
    paths = {"--output": str(tmp_path / "out.jsonl"), "--scores": str(tmp_path / "s.json")}
    paths[flag] = str(tmp_path / "missing" / "file")
    done = _run("--input", str(source), "--output", paths["--output"], "--scores",
                paths["--scores"])
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {flag} {paths[flag]}: directory "
                                   f"{tmp_path / 'missing'} does not exist")
    assert "sandbox" not in done.stderr


def test_output_of_another_input_is_refused(tmp_path):
  source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  source.write_text("".join(json.dumps(j) + "\n" for j in _jobs(3)))
  out.write_text(json.dumps({"id": "other/0", "status": "passed", "passed": True,
                             "tests_passed": 1, "tests_total": 1, "error": "",
                             "duration_s": 0.1}) + "\n")
  done = _run("--input", str(source), "--output", str(out))
  assert done.returncode == 2 and "holds verdicts of ids not in" in done.stderr
  assert "'other/0'" in done.stderr


def test_output_that_is_not_a_regular_file_is_refused(tmp_path):
  source = tmp_path / "in.jsonl"
  source.write_text("".join(json.dumps(j) + "\n" for j in _jobs(1)))
  done = _run("--input", str(source), "--output", str(tmp_path))  # e.g. a directory or a pipe
  assert done.returncode == 2
  assert done.stderr.strip() == f"error: --output {tmp_path}: not a regular file; give a file path"
