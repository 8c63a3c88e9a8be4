"""eval.py under jax.distributed: 2 processes x 4 CPU devices on 127.0.0.1 write the same
samples.jsonl and results.json as 1 process with 8 devices, and resume exactly after a kill.

The mesh (fsdp 4 x tensor 2) splits the parameters across both processes, so every generate
call is one computation over both hosts; the samples are drawn at temperature 0.5 with a fixed
seed, so a sample drawn with other keys or rows would show.
"""
import json
import os

import pytest

from configs import eval_synthesis
from evaluation.runner import run_eval
from model import run_dir
from tests import multiprocess
from tests.test_train_loop import _config, corpus  # noqa: F401  (module fixture)
from training.loop import train

# 8 samples of 3 problems in rows of 4: chunks of 2 problems (evaluation/call_schedule.py), so a
# resumed run skips a whole chunk, and every process must skip the same one.
_OVERRIDES = {"max_problems": 3, "num_samples": 8, "slots_per_call": 4, "max_prompt_len": 640,
              "sampling.max_new_tokens": 8, "sampling.temperature": 0.5, "seed": 7,
              "mesh.data": 1, "mesh.fsdp": 4, "mesh.tensor": 2}


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory):  # noqa: F811
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  train(_config(corpus, num_train_steps=1, checkpoint_every=1, eval_every=0), workdir)
  return workdir


def _overrides(tiny_run, mbpp_dirs) -> dict:
  return {"checkpoint": tiny_run, "data.manual_dir": mbpp_dirs["manual_dir"],
          "data.data_dir": mbpp_dirs["data_dir"], **_OVERRIDES}


def _eval_two_processes(overrides: dict, workdir: str, elsewhere: str, returncode: int = 0,
                        timeout: int = 600) -> list[str]:
  """eval.py in 2 processes; process 1 is given `elsewhere` as its workdir (as if on another
  host), which it must never create: process 0 is the one writer. Returns their outputs."""
  flags = [f"--config.{key}={value}" for key, value in overrides.items()]
  procs = multiprocess.start_processes(lambda process_id: [
      "eval.py", "--config=configs/eval_synthesis.py",
      f"--workdir={elsewhere if process_id else workdir}", "--distributed", *flags])
  outputs = multiprocess.wait_for(procs, timeout)
  for p, out in zip(procs, outputs):
    assert p.returncode == returncode, out[-4000:]
  assert not os.path.exists(elsewhere)
  return outputs


def _samples(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, run_dir.SAMPLES_FILE), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  for r in records:
    r.pop("duration_s")  # wall time of the sandbox run
  return sorted(records, key=lambda r: (r["id"], r["sample_index"]))


def _results(workdir: str) -> dict:
  """results.json without the run's timings (its token and program counts stay)."""
  with open(os.path.join(workdir, run_dir.RESULTS_FILE), encoding="utf-8") as f:
    results = json.load(f)
  throughput = results["meta"]["throughput"]
  for key in [k for k in throughput if k.endswith("_s")]:
    assert throughput.pop(key) >= 0, key
  return results


@pytest.mark.slow
def test_two_process_eval_equals_one_process_and_resumes(tiny_run, mbpp_dirs, tmp_path):
  overrides = _overrides(tiny_run, mbpp_dirs)
  config = eval_synthesis.get_config()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  elsewhere = str(tmp_path / "process1")
  run_eval(config, one)  # this process: 8 devices (tests/conftest.py)
  _eval_two_processes(overrides, two, elsewhere)
  expected = _samples(one)
  assert len(expected) == 24 and len({r["completion"] for r in expected}) > 1
  assert _samples(two) == expected
  assert _results(two) == _results(one)

  # Killed while writing the last problem (the second chunk): its records are torn off; the
  # resumed 2-process run samples that chunk alone, exactly as before, and writes it once.
  path = os.path.join(two, run_dir.SAMPLES_FILE)
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(lines[:-8] + [lines[-8][:10]])
  _eval_two_processes(overrides, two, elsewhere)
  assert _samples(two) == expected
  resumed, uninterrupted = _results(two), _results(one)
  # max_prompt_len=640: the 3-shot prompts lose whole shots (this tokenizer's queries take
  # 226-612 tokens), the same ones in both runs, and every problem is sampled.
  assert uninterrupted["prompt_fit"]["shots_dropped"]
  assert not uninterrupted["prompt_fit"]["prompt_too_long"]
  assert resumed["prompt_fit"] == uninterrupted["prompt_fit"]
  # Its last launch generated and executed only the torn problem's samples; meta.throughput
  # sums both launches.
  resumed_counts = resumed["meta"].pop("throughput")
  all_counts = uninterrupted["meta"].pop("throughput")
  with open(os.path.join(two, run_dir.THROUGHPUT_FILE), encoding="utf-8") as f:
    first, last = json.load(f)["launches"]
  assert 0 < last["tokens_generated"] < all_counts["tokens_generated"]
  assert 0 < last["programs_executed"] < all_counts["programs_executed"]
  assert resumed_counts["launches"] == 2 and resumed_counts["tokens_generated"] == (
      first["tokens_generated"] + last["tokens_generated"])
  assert resumed == uninterrupted

  # A failure on process 0 (its workdir holds a damaged file) stops process 1 too, at once,
  # each with a one-line error (exit 2), instead of leaving it waiting in a collective.
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(lines[:3] + ["{not json\n"] + lines[3:])
  zero, one_ = _eval_two_processes(overrides, two, elsewhere, returncode=2)
  assert "error: " in zero and "corrupt record" in zero
  assert "error: another process failed opening the workdir" in one_
