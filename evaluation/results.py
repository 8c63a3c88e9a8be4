"""results.json: pass@k, per-problem counts, status counts and the run's meta.

Schema (keys other tools rely on are marked *):
  schema_version: 1
  meta*: {task*, split*, model*, objective*, prompt_template_sha256*, samples_source*,
          sandbox: SandboxConfig fields, ...anything the caller adds}
    model: size/preset name ("tiny", "1b", ...) or the external system's name;
    objective: "few-shot", "finetuned-synthesis", "finetuned-execution", ...;
    samples_source: "sampled" or the path of the samples file that was scored;
    throughput (sampled runs): {wall_s, sampling_s, tokens_generated, tokens_per_s,
      execution_s, programs_executed (distinct programs: repeats run once),
      programs_screened (of those, decided by the sandbox's syntax screen without a process
      of their own), programs_per_s, launches, launches_cut_short}
      summed over every launch of a resumed eval (evaluation/throughput_ledger.py).
    seed, draw_variant, draw_variant_of (sampled runs): what the samples were drawn with
      besides the model: the seed, and the variant folded into its key (an int, 0 for the
      default prompt and token rule) with the settings it stands for (evaluation/draws.py).
      A repair round records its own seed (evaluation/repair.py); an ensemble, its variants'.
  pass_at_k*: {"1": float, "10": float, "80": float}: mean over problems of the unbiased
    estimator; only k <= the fewest samples any problem has (no problem is left out of a k).
  pass_at_k_curve: the same on a denser grid of k, for plots.
  per_problem*: [{id, task_id, [test_index], n, c, [challenge_n, challenge_c]}] in example
    order; n samples drawn, c passed.
  num_problems, num_samples, samples_per_problem: {min, max},
  num_examples (problems in the split), unscored_problems (examples without samples),
  pass_rate: share of samples that pass; problems_solved: share of problems with c > 0,
  status_counts: {passed, failed, error, syntax_error, timeout, killed, invalid_prediction,
    prompt_too_long} (evaluation.scorer.RECORD_STATUSES; invalid_prediction: an execution
    prediction that is not a value, never run; prompt_too_long: not sampled),
  prompt_fit: {shots_dropped: {id: shots}, prompt_too_long: [ids]}: the problems whose prompt
    did not fit max_prompt_len tokens and lost whole shots, or were not sampled (their
    samples' status is prompt_too_long); data/prompt_fit.py. meta.token_budgets (sampled
    runs) holds max_prompt_len, max_new_tokens and the problems whose reference answer
    max_new_tokens cannot hold (evaluation/token_budgets.py).
  challenge: null, or for synthesis problems with challenge tests, scored separately:
    {num_problems, num_samples, pass_at_k, pass_rate, problems_solved, status_counts}.
"""
import json
import os
from typing import Any, Sequence

from data import prompt_fit
from evaluation.scorer import RECORD_STATUSES
from execution import Result, score
from rundir import layout

RESULTS_FILE = layout.RESULTS_FILE
SCHEMA_VERSION = 1
PAPER_KS = (1, 10, 80)
REQUIRED_KEYS = ("meta", "pass_at_k", "per_problem")


def curve_ks(max_k: int) -> list[int]:
  """1, 2, 3, 5, 10, 20, 30, 50, 100, ... up to and including max_k."""
  ks, decade = [], 1
  while decade <= max_k:
    ks.extend(k for k in (decade, 2 * decade, 3 * decade, 5 * decade) if k <= max_k)
    decade *= 10
  return sorted(set(ks) | {max_k}) if max_k >= 1 else []


def _scores(results: list[Result], ks: Sequence[int]) -> dict[str, Any]:
  """Overall numbers of `results` (ids "problem/sample"), pass@k only for k <= min n."""
  if not results:
    return {"num_problems": 0, "num_samples": 0, "pass_at_k": {}, "pass_at_k_curve": {},
            "pass_rate": 0.0, "problems_solved": 0.0,
            "status_counts": {s: 0 for s in RECORD_STATUSES}}
  per_problem = score(results, ks=(1,), statuses=RECORD_STATUSES)["per_problem"]
  min_n = min(p["n"] for p in per_problem.values())
  grid = sorted(set(curve_ks(min_n)) | {k for k in ks if k <= min_n})
  overall = score(results, ks=grid, statuses=RECORD_STATUSES)["overall"]

  def as_str(values: dict[int, float]) -> dict[str, float]:  # JSON keys are strings.
    return {str(k): float(values[k]) for k in sorted(values)}

  return {
      "num_problems": overall["problems"], "num_samples": overall["samples"],
      "pass_at_k": as_str({k: overall["pass_at_k"][k] for k in ks if k <= min_n}),
      "pass_at_k_curve": as_str(overall["pass_at_k"]),
      "pass_rate": overall["pass_rate"],
      "problems_solved": sum(p["passed"] > 0 for p in per_problem.values()) / len(per_problem),
      "status_counts": overall["status_counts"],
  }


def _as_result(record: dict[str, Any], challenge: bool) -> Result:
  prefix = "challenge_" if challenge else ""
  return Result(id=f"{record['id']}/{record['sample_index']}", status=record[prefix + "status"],
                passed=record[prefix + "passed"], tests_passed=record.get("tests_passed", 0),
                tests_total=record.get("tests_total", 0), error=record[prefix + "error"],
                duration_s=record.get("duration_s", 0.0))


def summarize(examples: Sequence[dict[str, Any]], records_by_id: dict[str, list[dict[str, Any]]],
              *, meta: dict[str, Any] | None = None,
              ks: Sequence[int] = PAPER_KS) -> dict[str, Any]:
  """results.json's content for `examples` from their scored records (Scorer.records).

  Args:
    examples: the split's examples (one task); those without records count as unscored.
    records_by_id: {example id: records}, e.g. Scorer.records or score_completions' return.
    meta: run description; should name "model", "objective", "split", "samples_source"
      (missing ones are recorded as "unknown"); "task" and "prompt_template_sha256" are
      filled from the examples.
    ks: the headline k (the paper's 1, 10, 80); reported only where k <= min samples.
  """
  if not examples:
    raise ValueError("no examples")
  task = examples[0]["task"]
  fingerprints = sorted({e["prompt_template_sha256"] for e in examples})
  meta = {"model": "unknown", "objective": "unknown", "split": "unknown",
          "samples_source": "unknown", **(meta or {}), "task": task,
          "prompt_template_sha256": fingerprints[0] if len(fingerprints) == 1 else fingerprints}
  results, challenge_results, per_problem = [], [], []
  for example in examples:
    records = records_by_id.get(example["id"])
    if not records:
      continue
    entry = {"id": example["id"], "task_id": example["task_id"]}
    if "test_index" in example:
      entry["test_index"] = example["test_index"]
    entry.update(n=len(records), c=sum(r["passed"] for r in records))
    results.extend(_as_result(r, challenge=False) for r in records)
    if "challenge_status" in records[0]:
      entry.update(challenge_n=len(records),
                   challenge_c=sum(r["challenge_passed"] for r in records))
      challenge_results.extend(_as_result(r, challenge=True) for r in records)
    per_problem.append(entry)
  summary = _scores(results, ks)
  challenge = None
  if challenge_results:
    challenge = _scores(challenge_results, ks)
    del challenge["pass_at_k_curve"]
  counts = [p["n"] for p in per_problem]
  return {
      "schema_version": SCHEMA_VERSION,
      "meta": meta,
      **summary,
      "samples_per_problem": {"min": min(counts, default=0), "max": max(counts, default=0)},
      "num_examples": len(examples),
      "unscored_problems": len(examples) - len(per_problem),
      "prompt_fit": prompt_fit.fit_report(examples),
      "challenge": challenge,
      "per_problem": per_problem,
  }


def write_results(workdir: str, results: dict[str, Any]) -> str:
  """Writes results.json atomically (a reader never sees half a file); returns its path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RESULTS_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
    f.write("\n")
  os.replace(path + ".tmp", path)
  return path


def read_results(path: str) -> dict[str, Any]:
  """results.json from a file or a workdir; raises ValueError if keys tools need are missing."""
  if os.path.isdir(path):
    path = os.path.join(path, RESULTS_FILE)
  with open(path, encoding="utf-8") as f:
    results = json.load(f)
  missing = [k for k in REQUIRED_KEYS if k not in results]
  if missing:
    raise ValueError(f"{path}: not an eval results file (missing {missing})")
  return results
