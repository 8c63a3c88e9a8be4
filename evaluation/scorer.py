"""Completions -> sandbox jobs -> one scored record per sample, appended to samples.jsonl.

Resumable: records are appended problem by problem (all samples of a problem in one write),
and a restarted Scorer skips every problem already complete in samples.jsonl, so no problem
is executed twice. A torn last write (the process killed mid-line, or between the lines of
one problem) is dropped on restart and that problem is scored again.

One record (line of samples.jsonl) per sample:
  id, task, task_id, [test_index], sample_index, num_samples, prompt_template_sha256,
  completion, program (what the sandbox ran), [prediction] (mbpp_execution),
  status (one of RECORD_STATUSES), passed, tests_passed, tests_total, error, duration_s,
  and, for synthesis problems with challenge tests, challenge_status, challenge_passed,
  challenge_error.
"""
import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Sequence

from absl import logging

from data import prompt_fit, tasks
from evaluation import evalplus_references
from execution import PASSED, STATUSES, Job, Result, SandboxConfig, WorkerPool
from execution.progress import ProgressLog
from rundir import layout

SAMPLES_FILE = layout.SAMPLES_FILE
# The sandbox's verdicts, and those decided without running anything: an execution
# prediction that is not a value (data/execution_examples.py), and a problem whose prompt
# does not fit the model's context with prompt_overflow="fail" (data/prompt_fit.py).
RECORD_STATUSES = (*STATUSES, tasks.INVALID_PREDICTION, prompt_fit.PROMPT_TOO_LONG)
# A chunk is what is lost at worst when a run is killed; large enough to keep every worker
# busy, small enough that a kill costs seconds.
DEFAULT_CHUNK_PROGRAMS = 512
_RECORD_KEYS = frozenset(("id", "task", "sample_index", "num_samples", "completion", "status",
                          "passed"))


class WorkdirMismatch(ValueError):
  """The workdir holds scored samples that do not belong to this run."""


def _job(request: dict[str, Any]) -> Job:
  return Job(request["id"], request["program"], tuple(request["tests"]), request["setup"])


def _job_key(job: Job) -> tuple:
  return (job.program, job.tests, job.setup)


def _invalid_prediction(example: dict[str, Any], error: tasks.InvalidPrediction
                        ) -> tuple[Job, Result]:
  """The job that was not run (the problem's code) and its verdict."""
  return (Job(example["id"], example["code"], (), example["test_setup"]),
          Result(example["id"], tasks.INVALID_PREDICTION, False, 0, 1, str(error), 0.0))


def _prompt_too_long(example: dict[str, Any]) -> tuple[Job, Result]:
  """Nothing was sampled or run: the prompt does not fit the model's context."""
  return (Job(example["id"], "", (), ""),
          Result(example["id"], prompt_fit.PROMPT_TOO_LONG, False, 0, 0,
                 "the prompt does not fit max_prompt_len tokens; nothing was sampled", 0.0))


def _plus_verdicts(result: Result) -> tuple[Result, Result]:
  """EvalPlus's base and base + plus verdicts from the one program that checks both
  (tasks.evalplus_request with plus=True): its second test (the plus inputs) passes only after
  the first (the base inputs) has, so one passed test means base passed, plus not."""
  if result.passed or result.tests_passed < 1:
    return dataclasses.replace(result, tests_passed=min(result.tests_passed, 1),
                               tests_total=1), result
  return dataclasses.replace(result, status=PASSED, passed=True, tests_passed=1, tests_total=1,
                             error=""), result


def _costliest_first(chunk: list, job_count: int) -> list[int]:
  """The indices of a batch's jobs, the ones known to run longest first (HumanEval+ / MBPP+:
  a right sample runs as long as its reference did on all inputs), so that the batch does
  not end with one worker on a program of seconds while the others idle; stable otherwise."""
  cost = [0.0] * job_count
  for example, plan in chunk:
    seconds = evalplus_references.reference_seconds(example)
    for _, main, challenge in plan:
      for index in (main, challenge):
        if isinstance(index, int):
          cost[index] = max(cost[index], seconds)
  return sorted(range(job_count), key=lambda i: -cost[i])


def _record(example: dict[str, Any], sample_index: int, num_samples: int, completion: str,
            job: Job, result: Result, challenge: Result | None) -> dict[str, Any]:
  record = {"id": example["id"], "task": example["task"], "task_id": example["task_id"]}
  if "test_index" in example:
    record["test_index"] = example["test_index"]
  record.update({
      "sample_index": sample_index, "num_samples": num_samples,
      "prompt_template_sha256": example["prompt_template_sha256"],
      "completion": completion, "program": job.program,
  })
  if example["task"] == "mbpp_execution":
    record["prediction"] = tasks.predicted_value(completion)
  record.update({"status": result.status, "passed": result.passed,
                 "tests_passed": result.tests_passed, "tests_total": result.tests_total,
                 "error": result.error, "duration_s": result.duration_s})
  if challenge is not None:
    record.update({"challenge_status": challenge.status, "challenge_passed": challenge.passed,
                   "challenge_error": challenge.error})
  return record


def load_scored(workdir: str) -> dict[str, list[dict[str, Any]]]:
  """The complete problems in `workdir`/samples.jsonl: {example id: records by sample_index}.

  Drops an unparseable last line and problems missing some of their samples (a torn
  write), rewriting the file without them; any other unparseable line is an error.
  """
  path = os.path.join(workdir, SAMPLES_FILE)
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  by_id: dict[str, list[dict[str, Any]]] = {}
  torn = False
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if number == len(lines):
        torn = True
        break
      raise WorkdirMismatch(f"{path}:{number}: corrupt record ({e.msg})") from e
    if not isinstance(record, dict) or not _RECORD_KEYS <= record.keys():
      raise WorkdirMismatch(f"{path}:{number}: not a scored sample (this file is the "
                            "scorer's output; keep input samples elsewhere)")
    by_id.setdefault(record["id"], []).append(record)
  complete = {}
  for example_id, records in by_id.items():
    records.sort(key=lambda r: r["sample_index"])
    if [r["sample_index"] for r in records] == list(range(records[0]["num_samples"])):
      complete[example_id] = records
    else:
      torn = True
  if torn:
    logging.warning("%s: dropping a torn write; %d complete problems kept", path, len(complete))
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
      for records in complete.values():
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(temporary, path)
  return complete


class Scorer:
  """Scores problems as they arrive, appending to samples.jsonl; skips finished problems.

  Use as a context manager from one long-lived thread (the sandbox's workers are tied to
  the thread that starts them). eval.py's loop:

      with Scorer(workdir, sandbox_config, expected_programs=...) as scorer:
        todo = [e for e in examples if e["id"] not in scorer.done_ids]
        for batch in batches(todo):
          scorer.score(batch, sample(batch))    # {example id: [completion, ...]}
      finish(workdir, examples, scorer.records, meta=..., sandbox_config=sandbox_config)

  A problem is the unit of resumption: hand all of its samples to one `score` call.
  """

  def __init__(self, workdir: str, sandbox_config: SandboxConfig | None = None, *,
               chunk_programs: int = DEFAULT_CHUNK_PROGRAMS, expected_programs: int = 0,
               progress_every_s: float = 10.0,
               log: Callable[[str], None] = logging.info):
    """Opens (or resumes) the workdir.

    Args:
      workdir: where samples.jsonl lives; created if missing.
      sandbox_config: limits and isolation for the sandbox (default: its defaults).
      chunk_programs: programs per sandbox batch; each batch's problems are appended when
        it completes.
      expected_programs: a hint for the ETA of a streamed run (programs still to execute);
        without it the ETA covers what has been handed to `score` so far.
      progress_every_s: least interval between progress lines.
      log: where progress lines go.
    """
    os.makedirs(workdir, exist_ok=True)
    self.workdir = workdir
    self.sandbox_config = sandbox_config or SandboxConfig()
    self.chunk_programs = chunk_programs
    self.records = load_scored(workdir)
    self.progress = ProgressLog(log, progress_every_s)
    self.progress.expect(expected_programs)
    self._expected_hint = expected_programs > 0
    self._pool: WorkerPool | None = None
    self.programs_executed = 0
    self.programs_screened = 0  # Of those, decided by the sandbox's syntax screen.
    # HumanEval+ / MBPP+: each task's reference outputs, computed once (evalplus_references).
    self._evalplus_references: dict[str, dict[str, Any]] = {}
    if self.records:
      logging.info("%s: resuming; %d problems already scored", workdir, len(self.records))

  @property
  def done_ids(self) -> set[str]:
    return set(self.records)

  def __enter__(self) -> "Scorer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    if self._pool is not None:
      self._pool.close()
      self._pool = None

  def _check_resumed(self, example: dict[str, Any], completions: Sequence[str] | None) -> None:
    stored = self.records[example["id"]]
    first = stored[0]
    if (first["task"], first["prompt_template_sha256"]) != (
        example["task"], example["prompt_template_sha256"]):
      raise WorkdirMismatch(
          f"{self.workdir}: {example['id']} was scored as task {first['task']} with prompt "
          f"template {first['prompt_template_sha256'][:12]}, not {example['task']} with "
          f"{example['prompt_template_sha256'][:12]}; use a fresh workdir")
    if completions is not None and [r["completion"] for r in stored] != list(completions):
      raise WorkdirMismatch(f"{self.workdir}: {example['id']} was scored with other "
                            "completions than these; use a fresh workdir")

  def score(self, examples: Iterable[dict[str, Any]],
            completions_by_id: dict[str, Sequence[str]]) -> None:
    """Executes the completions of every example not yet scored and appends their records.

    Examples without completions are skipped (a samples file may cover part of a split);
    examples already in the workdir are checked against it (task, prompt template and,
    where given, the completions) and not run again.
    """
    todo = []
    for example in examples:
      completions = completions_by_id.get(example["id"])
      if example["id"] in self.records:
        self._check_resumed(example, completions)
      elif completions:
        todo.append((example, list(completions)))
    stored_tasks = {r[0]["task"] for r in self.records.values()}
    new_tasks = {e["task"] for e, _ in todo}
    if len(stored_tasks | new_tasks) > 1:
      raise WorkdirMismatch(f"{self.workdir}: one workdir holds one task, not "
                            f"{sorted(stored_tasks | new_tasks)}")
    if any(e["task"] in tasks.PLUS_TASK_NAMES for e, _ in todo):
      with_references = evalplus_references.with_reference_outputs(
          [e for e, _ in todo], self.sandbox_config, workdir=self.workdir,
          cache=self._evalplus_references)
      todo = [(e, c) for e, (_, c) in zip(with_references, todo)]
    chunks = list(self._chunks(todo))
    if not self._expected_hint:
      self.progress.expect(sum(len(jobs) for _, jobs in chunks))
    for chunk, jobs in chunks:
      self._run_chunk(chunk, jobs)

  def _chunks(self, todo: list) -> Iterable[tuple[list, list[Job]]]:
    """Groups problems into sandbox batches; identical jobs within a batch run once."""
    chunk, jobs, index_of = [], [], {}
    for example, completions in todo:
      # Per sample: (completion, main job index, challenge job index or None); a verdict
      # reached without running anything stands in for the main job index.
      plan = []
      with_challenge = bool(example.get("challenge_test_list"))
      for completion in completions:
        if prompt_fit.is_too_long(example):
          verdict = _prompt_too_long(example)
          plan.append((completion, verdict, verdict if with_challenge else None))
          continue
        indices = []
        # HumanEval+ / MBPP+: one program decides both verdicts (_plus_verdicts).
        plus = example["task"] in tasks.PLUS_TASK_NAMES
        for challenge in ((True,) if plus else (False, True) if with_challenge else (False,)):
          try:
            request = tasks.execution_request(example, completion, challenge=challenge)
          except tasks.InvalidPrediction as e:
            indices.append(_invalid_prediction(example, e))
            continue
          job = _job(request)
          # Sampled programs repeat often (easy problems, low temperature): run each once.
          key = _job_key(job)
          if key not in index_of:
            index_of[key] = len(jobs)
            jobs.append(job)
          indices.append(index_of[key])
        plan.append((completion, indices[0], indices[-1] if with_challenge else None))
      chunk.append((example, plan))
      if len(jobs) >= self.chunk_programs:
        yield chunk, jobs
        chunk, jobs, index_of = [], [], {}
    if chunk:
      yield chunk, jobs

  def _run_chunk(self, chunk: list, jobs: list[Job]) -> None:
    if self._pool is None:
      config = self.sandbox_config
      if any(example["task"] in tasks.PLUS_TASK_NAMES for example, _ in chunk):
        config = evalplus_references.harness_preimported(config)
      self._pool = WorkerPool(config)
      logging.info("sandbox: %d workers, isolation layers %s", self.sandbox_config.worker_count,
                   self._pool.layers)
    self.progress.start_batch()
    screened_before = self._pool.screened
    order = _costliest_first(chunk, len(jobs))
    ran = self._pool.run([jobs[i] for i in order], self.progress) if jobs else []
    results: list[Result] = [None] * len(jobs)  # type: ignore[list-item]
    for index, result in zip(order, ran):
      results[index] = result
    self.programs_executed += len(jobs)
    self.programs_screened += self._pool.screened - screened_before
    lines = []
    for example, plan in chunk:
      records = []
      for i, (completion, main, challenge) in enumerate(plan):
        main_verdict = main if isinstance(main, tuple) else (jobs[main], results[main])
        challenge_verdict = (None if challenge is None else challenge[1]
                             if isinstance(challenge, tuple) else results[challenge])
        if example["task"] in tasks.PLUS_TASK_NAMES and not isinstance(main, tuple):
          base, challenge_verdict = _plus_verdicts(results[main])
          main_verdict = (jobs[main], base)
        records.append(_record(example, i, len(plan), completion, *main_verdict,
                               challenge_verdict))
      self.records[example["id"]] = records
      lines.extend(json.dumps(r) + "\n" for r in records)
    with open(os.path.join(self.workdir, SAMPLES_FILE), "a", encoding="utf-8") as f:
      f.write("".join(lines))
      f.flush()
      os.fsync(f.fileno())


def score_completions(examples: Sequence[dict[str, Any]],
                      completions_by_id: dict[str, Sequence[str]], workdir: str,
                      sandbox_config: SandboxConfig | None = None,
                      **scorer_options) -> dict[str, list[dict[str, Any]]]:
  """Scores all completions (resuming in `workdir`); returns records of `examples` by id."""
  with Scorer(workdir, sandbox_config, **scorer_options) as scorer:
    scorer.score(examples, completions_by_id)
    return {e["id"]: scorer.records[e["id"]] for e in examples if e["id"] in scorer.records}


def sandbox_meta(config: SandboxConfig) -> dict[str, Any]:
  """The sandbox settings to record with results (they change verdicts: timeouts), as JSON
  reads them back (tuples as lists: results.json is compared with what was written)."""
  return json.loads(json.dumps(dataclasses.asdict(config)))
