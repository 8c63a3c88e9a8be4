"""Feedback repair: show a failed program's execution feedback and sample again, N rounds.

The paper's Section 6 had people talk to the model about its failed programs; here the
feedback is what the sandbox saw, so the study needs nobody in the loop. After an ordinary
eval (round 0), every problem that no sample solved gets a longer prompt, the dialog so far
plus its best failed sample and the feedback on it:

    {prompt of the previous round}{failed program}
    [DONE]
    Feedback: the code fails the test `assert f(2) == 3` (AssertionError). Please fix the code.
    [BEGIN]

and `num_samples` new samples. Problems still unsolved go on to the next round with the
dialog grown by one more turn. The best failed sample is the one that passed the most tests
(ties: the lowest sample index), so a round is a pure function of the previous round's
records, and a killed study resumes exactly (each round is an ordinary resumable Scorer
workdir, sampled with its own seed).

Layout: WORKDIR/round_0 (the eval), WORKDIR/round_1 ... (samples.jsonl, results.json,
report.md, dialogs.jsonl with each problem's prompt), and WORKDIR/repair.json, repair.md and
repair.png: the share of problems solved after each round.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

from absl import logging

from data.prompts import BEGIN, DONE, cut_at_done
from evaluation import evaluate, report
from evaluation.sampler import sample_problems
from evaluation.scoring import Scorer
from execution import SandboxConfig

REPAIR_FILE = "repair.json"
REPAIR_REPORT = "repair.md"
REPAIR_PLOT = "repair.png"
DIALOGS_FILE = "dialogs.jsonl"
FEEDBACK = "Feedback: {problem} Please fix the code.\n"
REPAIRABLE_TASKS = ("mbpp_synthesis",)  # Feedback names a failing test; only synthesis has them.
_TEST_ERROR = re.compile(r"^test (\d+): (.*)$", re.DOTALL)
# Seeds of successive rounds are far apart so no round reuses another's sampling keys.
_ROUND_SEED_STRIDE = 1_000_003


def round_dir(workdir: str, round_index: int) -> str:
  return os.path.join(workdir, f"round_{round_index}")


def describe_failure(example: dict[str, Any], record: dict[str, Any]) -> str:
  """One sentence on why the sample failed, naming the failing test where there is one."""
  status, error = record["status"], record.get("error") or ""
  match = _TEST_ERROR.match(error)
  if match and int(match.group(1)) < len(example["test_list"]):
    test = example["test_list"][int(match.group(1))].strip()
    what = match.group(2).strip()
    if status == "failed":
      return f"the code fails the test `{test}` ({what})."
    return f"the test `{test}` raised {what}."
  if status == "syntax_error":
    return f"the code does not parse: {error}."
  if status == "timeout":
    return "the code did not finish within the time limit."
  if status == "killed":
    return f"the code was killed ({error or 'a resource limit'})."
  return f"the code raised {error}." if error else "the code did not pass the tests."


def best_failure(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """The failed sample that passed the most tests; the lowest sample index among equals."""
  return min(records, key=lambda r: (-r.get("tests_passed", 0), r["sample_index"]))


def repair_prompt(example: dict[str, Any], record: dict[str, Any]) -> str:
  """The dialog for the next round: this round's prompt, the failed program, the feedback."""
  program = cut_at_done(record["completion"]).rstrip("\n")
  feedback = FEEDBACK.format(problem=describe_failure(example, record))
  return f"{example['prompt']}{program}\n{DONE}\n{feedback}{BEGIN}\n"


def next_round(examples: Sequence[dict[str, Any]],
               records_by_id: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
  """The unsolved problems of a round, each with its dialog grown by one turn."""
  todo = []
  for example in examples:
    records = records_by_id.get(example["id"])
    if records and not any(r["passed"] for r in records):
      todo.append({**example, "prompt": repair_prompt(example, best_failure(records))})
  return todo


def _write_dialogs(directory: str, examples: Sequence[dict[str, Any]]) -> None:
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, DIALOGS_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(json.dumps({"id": e["id"], "prompt": e["prompt"]}) + "\n" for e in examples)
  os.replace(path + ".tmp", path)


def run_repair(sampler, examples: Sequence[dict[str, Any]],
               round0_records: dict[str, list[dict[str, Any]]], workdir: str, *,
               rounds: int, num_samples: int, meta: dict[str, Any],
               sandbox_config: SandboxConfig | None = None) -> dict[str, Any]:
  """Rounds 1..`rounds` of repair after the scored round 0; writes and returns repair.json.

  Args:
    sampler: an evaluation.sampler.Sampler (anything with its `complete` and `seed`).
    examples: the eval's examples, with round 0's prompts.
    round0_records: round 0's scored records by example id.
    workdir: the study directory (round_N subdirectories go there).
    rounds: repair rounds after round 0.
    num_samples: samples per problem per round.
    meta: the eval's meta, recorded in each round's results.json.
    sandbox_config: limits for executing the repaired programs.
  """
  task = examples[0]["task"] if examples else None
  if task not in REPAIRABLE_TASKS:
    raise ValueError(f"feedback repair needs failing tests to show; task {task!r} is not one "
                     f"of {REPAIRABLE_TASKS}")
  scored = [e for e in examples if e["id"] in round0_records]
  solved_in = {e["id"]: 0 for e in scored if any(r["passed"] for r in round0_records[e["id"]])}
  current, records, base_seed = scored, round0_records, sampler.seed
  per_round = [_round_entry(0, len(scored), len(solved_in), len(solved_in), len(scored))]
  for index in range(1, rounds + 1):
    current = next_round(current, records)
    directory = round_dir(workdir, index)
    _write_dialogs(directory, current)
    logging.info("repair round %d/%d: %d unsolved problems, %d samples each", index, rounds,
                 len(current), num_samples)
    records = {}
    if current:
      sampler.seed = base_seed + index * _ROUND_SEED_STRIDE
      with Scorer(directory, sandbox_config,
                  expected_programs=len(current) * num_samples) as scorer:
        sample_problems(sampler, current, num_samples, scorer.done_ids, scorer.score)
        records = scorer.records
      evaluate.finish(directory, current, records, meta={**meta, "repair_round": index},
                      sandbox_config=sandbox_config)
    for example_id, round_records in records.items():
      if any(r["passed"] for r in round_records):
        solved_in.setdefault(example_id, index)
    per_round.append(_round_entry(index, len(current), sum(r == index for r in solved_in.values()),
                                  len(solved_in), len(scored)))
  sampler.seed = base_seed
  summary = {"meta": meta, "num_problems": len(scored), "rounds": per_round,
             "num_samples_per_round": num_samples,
             "solved_in_round": {e["id"]: solved_in.get(e["id"]) for e in scored}}
  write_repair_summary(workdir, summary)
  return summary


def _round_entry(index: int, attempted: int, solved_now: int, solved_total: int,
                 total: int) -> dict[str, Any]:
  return {"round": index, "attempted": attempted, "solved_this_round": solved_now,
          "solved_total": solved_total, "solved_rate": solved_total / max(total, 1)}


def write_repair_summary(workdir: str, summary: dict[str, Any]) -> None:
  """repair.json, plus repair.md with the table and repair.png with the curve."""
  with open(os.path.join(workdir, REPAIR_FILE), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
    f.write("\n")
  rounds = summary["rounds"]
  report.line_plot(os.path.join(workdir, REPAIR_PLOT), [r["round"] for r in rounds],
                  {"problems solved": [r["solved_rate"] for r in rounds]},
                  xlabel="feedback round", ylabel="problems solved (%)",
                  title=f"Feedback repair, {summary['num_problems']} problems, "
                        f"{summary['num_samples_per_round']} samples per round")
  lines = [f"# Feedback repair: {summary['meta'].get('model', '')} "
           f"{summary['meta'].get('objective', '')}", "",
           f"{summary['num_problems']} problems; round 0 is the plain eval; each later round "
           f"re-prompts the still unsolved problems with the execution feedback on their best "
           f"failed sample ({summary['num_samples_per_round']} samples per round).", ""]
  lines += report.table(["round", "problems attempted", "solved in this round",
                         "solved so far", "solved so far (%)"],
                        [[r["round"], r["attempted"], r["solved_this_round"], r["solved_total"],
                          f"{100 * r['solved_rate']:.2f}"] for r in rounds])
  lines += ["", f"![solved by round]({REPAIR_PLOT})", ""]
  with open(os.path.join(workdir, REPAIR_REPORT), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
