"""EvalPlus's expected outputs, computed once per evaluation instead of once per sample.

As evalplus's get_groundtruth does, each HumanEval+ / MBPP+ task's reference solution runs
once on all its inputs, recording each output and its time (the per-input time limits derive
from it); here it runs in the sandbox, one program per task (evalplus_harness
reference_program), and what it prints becomes the example's EVALPLUS_EXPECTED field, which
the samples' programs carry as data (data/tasks.py evalplus_request). Kept in memory for the
evaluation, and, with a workdir, in REFERENCES_FILE there, keyed by a digest of the task's
reference, inputs and the harness itself, so that a resumed evaluation does not compute them
again. A reference that fails (Mbpp/255's plus runs out of memory, as in evalplus) is kept in
memory only: a resumed run tries it again.
"""
import dataclasses
import hashlib
import json
import os
from typing import Any, Sequence

from absl import logging

from data import evalplus_harness, tasks
from execution import Job, SandboxConfig, WorkerPool
from rundir import layout

REFERENCES_FILE = layout.EVALPLUS_REFERENCES_FILE
# The reference program prints every expected output that is not a digest: HumanEval+'s
# largest task prints ~10 MB.
_OUTPUT_CAP_MB = 256
_GROUPS = ("base", "plus")


def harness_preimported(config: SandboxConfig | None) -> SandboxConfig:
  """`config` (default: the sandbox's defaults) whose workers preimport the harness every
  HumanEval+ / MBPP+ program runs (data/evalplus_harness.py), so that no program compiles
  and imports it again; the programs run the same without it, only slower."""
  config = config or SandboxConfig()
  if evalplus_harness.__name__ in config.preimport:
    return config
  return dataclasses.replace(config, preimport=(*config.preimport, evalplus_harness.__name__))


def reference_seconds(example: dict[str, Any]) -> float:
  """The reference's run time on all inputs of a plus example whose reference outputs are
  computed, which a right sample's program takes too; 0 for any other example."""
  records = example.get(tasks.EVALPLUS_EXPECTED) or {}
  return sum(r.get("seconds", 0.0) for r in records.values())


def _harness_sha() -> str:
  with open(evalplus_harness.__file__, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def reference_key(example: dict[str, Any], harness_sha: str = "") -> str:
  """What the expected outputs of `example` depend on, as one digest."""
  fields = [harness_sha or _harness_sha()] + [
      example[k] for k in ("dataset", "task_id", "entry_point", "reference", "atol",
                           "base_input", "plus_input")]
  return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def _read_cache(path: str) -> dict[str, dict[str, Any]]:
  cached = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a torn last write: that task is computed again
        cached[record["key"]] = record["records"]
  return cached


def _records(result) -> dict[str, Any]:
  records = evalplus_harness.reference_records(result.output)
  for group in _GROUPS:
    if group not in records:  # killed or timed out before it printed this group
      records[group] = {"error": f"the reference program ended {result.status} "
                                 f"({result.error or 'no error'}) before this group"}
  return records


def with_reference_outputs(examples: Sequence[dict[str, Any]],
                           sandbox_config: SandboxConfig | None = None, *,
                           workdir: str | None = None,
                           cache: dict[str, dict[str, Any]] | None = None
                           ) -> list[dict[str, Any]]:
  """`examples`, each HumanEval+ / MBPP+ one with its EVALPLUS_EXPECTED field (others as
  they are); computes in the sandbox only what neither `cache` (a dict this fills) nor
  `workdir`/REFERENCES_FILE holds."""
  plus = [e for e in examples
          if e["task"] in tasks.PLUS_TASK_NAMES and tasks.EVALPLUS_EXPECTED not in e]
  if not plus:
    return list(examples)
  cache = {} if cache is None else cache
  harness_sha = _harness_sha()
  keys = {e["id"]: reference_key(e, harness_sha) for e in plus}
  path = os.path.join(workdir, REFERENCES_FILE) if workdir else None
  if path and any(k not in cache for k in keys.values()):
    cache.update(_read_cache(path))
  missing = list({keys[e["id"]]: e for e in plus if keys[e["id"]] not in cache}.items())
  if missing:
    config = harness_preimported(sandbox_config)
    config = dataclasses.replace(
        config, output_cap_bytes=_OUTPUT_CAP_MB << 20,
        max_file_mb=max(config.max_file_mb, _OUTPUT_CAP_MB), screen_batch=0)
    jobs = []
    for _, example in missing:
      request = tasks.evalplus_reference_request(example)
      jobs.append(Job(request["id"], request["program"], tuple(request["tests"]),
                      request["setup"]))
    logging.info("evalplus: computing the reference outputs of %d tasks", len(jobs))
    with WorkerPool(config) as pool:
      results = pool.run(jobs)
    lines = []
    for (key, _), result in zip(missing, results):
      cache[key] = _records(result)
      if not any("error" in r for r in cache[key].values()):
        lines.append(json.dumps({"key": key, "records": cache[key]}) + "\n")
    if path and lines:
      os.makedirs(workdir, exist_ok=True)
      with open(path, "a", encoding="utf-8") as f:
        f.write("".join(lines))
  return [{**e, tasks.EVALPLUS_EXPECTED: cache[keys[e["id"]]]} if e["id"] in keys else e
          for e in examples]
