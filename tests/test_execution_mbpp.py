"""Every MBPP reference solution passes its own tests and challenge tests in the sandbox."""
import json
import os

import pytest

from execution import Job, SandboxConfig, WorkerPool, score

SLOW_TASK = 123  # Amicable numbers below 10,000: about 3-6 s here, far above every other task.

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox tests run as root (CI)")


def _mbpp_jobs(shared_data_dir) -> list[Job]:
  jobs = []
  with open(shared_data_dir / "mbpp" / "mbpp.jsonl") as f:
    for line in f:
      task = json.loads(line)
      jobs.append(Job(f"mbpp/{task['task_id']}", task["code"],
                      tuple(task["test_list"] + task["challenge_test_list"]),
                      task["test_setup_code"]))
  return jobs


def test_every_mbpp_reference_solution_passes_with_default_limits(shared_data_dir):
  jobs = _mbpp_jobs(shared_data_dir)
  assert len(jobs) == 974
  with WorkerPool(SandboxConfig()) as pool:
    results = pool.run(jobs)
  failures = {r.id: (r.status, r.error) for r in results if not r.passed}
  # With the default 10 s timeout, task 123 passes too.
  assert failures == {}
  assert [r.id for r in results] == [j.id for j in jobs]
  assert sum(r.tests_total for r in results) == 974 * 3 + 16  # 16 challenge asserts.
  overall = score(results, ks=(1,))["overall"]
  assert overall["pass_at_k"] == {1: 1.0} and overall["status_counts"]["passed"] == 974


def test_mbpp_setup_code_runs_after_the_program(shared_data_dir):
  jobs = {j.id: j for j in _mbpp_jobs(shared_data_dir)}
  with_setup = [j for j in jobs.values() if j.setup]
  assert sorted(j.id for j in with_setup) == ["mbpp/367", "mbpp/927"]
  # Without the program's Node class the setup cannot run: an error in setup, not a pass.
  broken = Job("no-node", "def max_height(node):\n  return 0\n", jobs["mbpp/927"].tests,
               jobs["mbpp/927"].setup)
  with WorkerPool(SandboxConfig(workers=1)) as pool:
    results = pool.run(with_setup + [broken])
  assert [(r.status, r.tests_passed) for r in results] == [
      ("passed", 3), ("passed", 3), ("error", 0)]
  assert results[2].error.startswith("in setup: NameError")


def test_slow_task_123_is_a_timeout_under_a_short_limit(shared_data_dir):
  slow = next(j for j in _mbpp_jobs(shared_data_dir) if j.id == f"mbpp/{SLOW_TASK}")
  with WorkerPool(SandboxConfig(timeout_s=0.5, workers=1)) as pool:
    [result] = pool.run([slow])
  assert (result.status, result.passed, result.error) == ("timeout", False, "wall-clock timeout")
