"""Feedback repair: show a failed program's execution feedback and sample again, N rounds,
beside a control arm that samples again without feedback.

The paper's Section 6 had people talk to the model about its failed programs; here the
feedback is what the sandbox saw, so the study needs nobody in the loop. After an ordinary
eval (round 0), every problem that no sample solved gets a longer prompt, the dialog so far
plus its best failed sample and the feedback on it:

    {prompt of the previous round}{failed program}
    [DONE]
    Feedback: the code fails the test `assert f(2) == 3`: `f(2)` returned `4`, expected `3`. ...
    [BEGIN]

(the feedback is one line, ending "Please fix the code.")

and `num_samples` new samples. When the failing test is an equality assert, the returned
value is what the call really gave, from a probe run in the sandbox (evaluation/repair_probe.py);
other failures are named as the sandbox saw them (`... fails the test `...` (AssertionError).`,
`the test `...` raised ZeroDivisionError: ...`). Problems still unsolved go on to the next
round with the dialog grown by one more turn. The best failed sample is the one that passed
the most tests (ties: the lowest sample index).

Drawing more samples solves problems by itself, so "solved after round k" alone mixes the
effect of feedback with that of k more draws. The control arm measures the second: the same
rounds, each drawing `num_samples` new samples from the original prompt for every problem
that arm has not solved yet (round 0 is shared). The gain due to feedback is the difference
of the two curves. The control costs about as many samples again as the feedback rounds (its
prompts are shorter; it usually has more problems left); `control=False` skips it.

Each round of each arm is an ordinary resumable Scorer workdir sampled with its own seed, and
a feedback round's dialogs are stored before it samples and reused on a rerun, so a killed
study resumes exactly, without sampling or probing again what it has.

Layout: WORKDIR/round_0 (the eval), WORKDIR/round_1 ... (feedback; samples.jsonl,
results.json, report.md, dialogs.jsonl with each problem's prompt), WORKDIR/control/round_1
... (control), and WORKDIR/repair.json, repair.md and repair.png: the problems solved after
each round, with and without feedback, and the gain.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Sequence

from absl import logging

from data import tasks
from data.prompt_fit import PROMPT_TOO_LONG
from data.prompts import BEGIN, DONE, cut_at_done
from evaluation import evaluate, report, repair_probe
from evaluation.call_schedule import sample_problems
from evaluation.throughput_ledger import combined as combined_throughput
from evaluation.scorer import Scorer
from execution import FAILED, SandboxConfig

REPAIR_FILE = "repair.json"
REPAIR_REPORT = "repair.md"
REPAIR_PLOT = "repair.png"
DIALOGS_FILE = "dialogs.jsonl"
CONTROL_DIR = "control"
FEEDBACK_ARM = "feedback"
CONTROL_ARM = "control"
FEEDBACK = "Feedback: {problem} Please fix the code.\n"
REPAIRABLE_TASKS = ("mbpp_synthesis",)  # Feedback names a failing test; only synthesis has them.
_TEST_ERROR = re.compile(r"^test (\d+): (.*)$", re.DOTALL)
# Seeds of successive rounds are far apart so no round reuses another's sampling keys; the
# control arm's round k sits halfway between the feedback arm's rounds k and k + 1.
_ROUND_SEED_STRIDE = 1_000_003
_CONTROL_SEED_OFFSET = _ROUND_SEED_STRIDE // 2


def round_dir(workdir: str, round_index: int, arm: str = FEEDBACK_ARM) -> str:
  """Round 0 (shared by both arms) and the feedback rounds: WORKDIR/round_N; the control
  arm's later rounds: WORKDIR/control/round_N."""
  if arm == CONTROL_ARM and round_index > 0:
    return os.path.join(workdir, CONTROL_DIR, f"round_{round_index}")
  return os.path.join(workdir, f"round_{round_index}")


def round_seed(base_seed: int, round_index: int, arm: str) -> int:
  offset = _CONTROL_SEED_OFFSET if arm == CONTROL_ARM else 0
  return base_seed + round_index * _ROUND_SEED_STRIDE + offset


def _failing_test(example: dict[str, Any], record: dict[str, Any]) -> tuple[int, str] | None:
  """(index, what went wrong) of the test the sandbox names in the record's error."""
  match = _TEST_ERROR.match(record.get("error") or "")
  if match and int(match.group(1)) < len(example["test_list"]):
    return int(match.group(1)), match.group(2).strip()
  return None


def describe_failure(example: dict[str, Any], record: dict[str, Any],
                     returned: str | None = None) -> str:
  """One sentence on why the sample failed, naming the failing test where there is one.

  `returned`: repr of what the failing equality test's call returned (repair_probe), said
  instead of the bare AssertionError when given.
  """
  status, error = record["status"], record.get("error") or ""
  failing = _failing_test(example, record)
  if failing:
    index, what = failing
    test = example["test_list"][index].strip()
    if status == FAILED:
      equality = repair_probe.equality_assert(test) if returned is not None else None
      if equality:
        return (f"the code fails the test `{test}`: `{equality.call}` returned `{returned}`, "
                f"expected `{repair_probe.cap(equality.expected)}`.")
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


def feedback_probe(example: dict[str, Any], record: dict[str, Any]) -> repair_probe.Probe | None:
  """The probe of what the failing call returned, for a sample failing an equality assert."""
  failing = _failing_test(example, record)
  if record["status"] != FAILED or not failing:
    return None
  index = failing[0]
  equality = repair_probe.equality_assert(example["test_list"][index])
  if equality is None:
    return None
  request = tasks.execution_request(example, record["completion"])
  return repair_probe.Probe(example["id"], request["program"], request["setup"],
                            tuple(request["tests"][:index]), equality.call)


def repair_prompt(example: dict[str, Any], record: dict[str, Any],
                  returned: str | None = None) -> str:
  """The dialog for the next round: this round's prompt, the failed program, the feedback."""
  program = cut_at_done(record["completion"]).rstrip("\n")
  feedback = FEEDBACK.format(problem=describe_failure(example, record, returned))
  return f"{example['prompt']}{program}\n{DONE}\n{feedback}{BEGIN}\n"


def next_round(examples: Sequence[dict[str, Any]],
               records_by_id: dict[str, list[dict[str, Any]]],
               sandbox_config: SandboxConfig | None = None,
               known_prompts: dict[str, str] | None = None) -> list[dict[str, Any]]:
  """The unsolved problems of a round, each with its dialog grown by one turn.

  The best failed samples that fail an equality assert are probed for their returned value,
  all in one sandbox run. `known_prompts` ({id: prompt}, a resumed round's dialogs) are used
  as they are, without probing again.
  """
  known = known_prompts or {}
  unsolved = []
  for example in examples:
    records = records_by_id.get(example["id"])
    # A problem whose prompt did not fit was never sampled: no program to give feedback on.
    if (records and not any(r["passed"] for r in records)
        and records[0]["status"] != PROMPT_TOO_LONG):
      unsolved.append((example, best_failure(records)))
  probes = [p for p in (feedback_probe(e, r) for e, r in unsolved if e["id"] not in known) if p]
  returned = repair_probe.returned_values(probes, sandbox_config)
  return [{**e, "prompt": known[e["id"]] if e["id"] in known else
           repair_prompt(e, r, returned.get(e["id"]))} for e, r in unsolved]


def _read_dialogs(directory: str) -> dict[str, str]:
  path = os.path.join(directory, DIALOGS_FILE)
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return {d["id"]: d["prompt"] for d in map(json.loads, f)}


def _write_dialogs(directory: str, examples: Sequence[dict[str, Any]]) -> None:
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, DIALOGS_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(json.dumps({"id": e["id"], "prompt": e["prompt"]}) + "\n" for e in examples)
  os.replace(path + ".tmp", path)


@dataclasses.dataclass
class _Arm:
  """One arm's state: what it attempted last, with what outcome, and its history."""
  name: str
  attempted: list[dict[str, Any]]
  records: dict[str, list[dict[str, Any]]]
  solved_in: dict[str, int]
  entries: list[dict[str, Any]]


def round_meta(meta: dict[str, Any], round_index: int, arm: str, seed: int
               ) -> dict[str, Any]:
  """The eval's meta for one round of one arm: the round, the arm and the seed its samples
  are drawn with (also as the recorded config's seed, so nothing in the round's results.json
  names round 0's)."""
  out = {**meta, "repair_round": round_index, "repair_arm": arm, "seed": seed}
  if isinstance(meta.get("config"), dict):
    out["config"] = {**meta["config"], "seed": seed}
  return out


def _sample_round(sampler, todo: Sequence[dict[str, Any]], directory: str, seed: int,
                  num_samples: int, meta: dict[str, Any],
                  sandbox_config: SandboxConfig | None) -> dict[str, list[dict[str, Any]]]:
  """Samples and scores one round of one arm in its own (resumable) workdir; its
  results.json has the round's own throughput and prompt fit."""
  if not todo:
    return {}
  sampler.seed = seed
  tokens_before = sampler.tokens_generated
  todo = sampler.fit_prompts(todo)  # a grown dialog may lose whole shots (data/prompt_fit.py)
  with Scorer(directory, sandbox_config, expected_programs=len(todo) * num_samples) as scorer:
    times = sample_problems(sampler, todo, num_samples, scorer.done_ids, scorer.score)
    records = {e["id"]: scorer.records[e["id"]] for e in todo if e["id"] in scorer.records}
    meta = {**meta, "throughput": combined_throughput([{
        "wall_s": times.wall_s, "sampling_s": times.sampling_s,
        "tokens_generated": sampler.tokens_generated - tokens_before,
        "execution_s": times.execution_s, "programs_executed": scorer.programs_executed,
        "programs_screened": scorer.programs_screened, "complete": True}])}
  evaluate.finish(directory, todo, records, meta=meta, sandbox_config=sandbox_config)
  return records


def run_repair(sampler, examples: Sequence[dict[str, Any]],
               round0_records: dict[str, list[dict[str, Any]]], workdir: str, *,
               rounds: int, num_samples: int, meta: dict[str, Any],
               sandbox_config: SandboxConfig | None = None,
               control: bool = True) -> dict[str, Any]:
  """Rounds 1..`rounds` of repair after the scored round 0; writes and returns repair.json.

  Args:
    sampler: an evaluation.sampler.Sampler (or anything with its sampling methods, `seed`
      and counters); round 0's, whose seed the rounds' seeds derive from (round_seed).
    examples: the eval's examples, with round 0's prompts.
    round0_records: round 0's scored records by example id.
    workdir: the study directory (round_N subdirectories go there).
    rounds: repair rounds after round 0.
    num_samples: samples per problem per round, in each arm.
    meta: the eval's meta, recorded in each round's results.json with the round's own
      seed (round_meta), throughput and prompt fit.
    sandbox_config: limits for executing the repaired programs and the probes.
    control: also run the control arm (the same rounds without feedback).
  """
  task = examples[0]["task"] if examples else None
  if task not in REPAIRABLE_TASKS:
    raise ValueError(f"feedback repair needs failing tests to show; task {task!r} is not one "
                     f"of {REPAIRABLE_TASKS}")
  scored = [e for e in examples if e["id"] in round0_records]
  records0 = {e["id"]: round0_records[e["id"]] for e in scored}
  solved0 = {i: 0 for i, records in records0.items() if any(r["passed"] for r in records)}
  base_seed = sampler.seed
  entry0 = _round_entry(0, len(scored), len(solved0), len(solved0), len(scored),
                        sum(map(len, records0.values())), base_seed)
  arms = [_Arm(name, scored, records0, dict(solved0), [entry0])
          for name in (FEEDBACK_ARM, CONTROL_ARM)[:2 if control else 1]]
  try:
    for index in range(1, rounds + 1):
      for arm in arms:
        directory = round_dir(workdir, index, arm.name)
        if arm.name == FEEDBACK_ARM:
          todo = next_round(arm.attempted, arm.records, sandbox_config, _read_dialogs(directory))
          _write_dialogs(directory, todo)
        else:  # The original prompts of the problems this arm has not solved.
          todo = [e for e in scored if e["id"] not in arm.solved_in]
        logging.info("repair round %d/%d, %s arm: %d unsolved problems, %d samples each",
                     index, rounds, arm.name, len(todo), num_samples)
        seed = round_seed(base_seed, index, arm.name)
        arm.records = _sample_round(sampler, todo, directory, seed, num_samples,
                                    round_meta(meta, index, arm.name, seed), sandbox_config)
        arm.attempted = todo
        for example_id, records in arm.records.items():
          if any(r["passed"] for r in records):
            arm.solved_in.setdefault(example_id, index)
        arm.entries.append(_round_entry(
            index, len(todo), sum(r == index for r in arm.solved_in.values()),
            len(arm.solved_in), len(scored), sum(map(len, arm.records.values())), seed))
  finally:
    sampler.seed = base_seed
  summary = {"meta": meta, "num_problems": len(scored), "num_samples_per_round": num_samples,
             "control": control, "rounds": _side_by_side(arms, len(scored)),
             "solved_in_round": {arm.name: {e["id"]: arm.solved_in.get(e["id"]) for e in scored}
                                 for arm in arms}}
  write_repair_summary(workdir, summary)
  return summary


def _round_entry(index: int, attempted: int, solved_now: int, solved_total: int,
                 total: int, samples: int, seed: int) -> dict[str, Any]:
  return {"round": index, "attempted": attempted, "samples": samples,
          "solved_this_round": solved_now, "solved_total": solved_total,
          "solved_rate": solved_total / max(total, 1), "seed": seed}


def _side_by_side(arms: Sequence[_Arm], total: int) -> list[dict[str, Any]]:
  """Per round: each arm's entry and the gain due to feedback (None without a control)."""
  feedback, control = arms[0].entries, (arms[1].entries if len(arms) > 1 else None)
  rows = []
  for index, entry in enumerate(feedback):
    other = control[index] if control else None
    gain = entry["solved_total"] - other["solved_total"] if other else None
    rows.append({"round": index, FEEDBACK_ARM: entry, CONTROL_ARM: other, "gain": gain,
                 "gain_rate": None if gain is None else gain / max(total, 1)})
  return rows


def _solved_cell(entry: dict[str, Any]) -> str:
  return f"{entry['solved_total']} ({100 * entry['solved_rate']:.2f}%)"


def write_repair_summary(workdir: str, summary: dict[str, Any]) -> None:
  """repair.json, plus repair.md with the table and repair.png with the curves."""
  with open(os.path.join(workdir, REPAIR_FILE), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
    f.write("\n")
  rounds, control = summary["rounds"], summary["control"]
  series = {"with feedback": [r[FEEDBACK_ARM]["solved_rate"] for r in rounds]}
  if control:
    series["without feedback (control)"] = [r[CONTROL_ARM]["solved_rate"] for r in rounds]
  # Round numbers as labels: one tick per round, none between.
  report.line_plot(os.path.join(workdir, REPAIR_PLOT), [str(r["round"]) for r in rounds], series,
                   xlabel="round", ylabel="problems solved (%)",
                   title=f"Feedback repair, {summary['num_problems']} problems, "
                         f"{summary['num_samples_per_round']} samples per problem per round")
  n = summary["num_samples_per_round"]
  lines = [f"# Feedback repair: {summary['meta'].get('model', '')} "
           f"{summary['meta'].get('objective', '')}", "",
           f"{summary['num_problems']} problems; round 0 is the plain eval (shared by both "
           "arms); each later round "
           f"re-prompts the still unsolved problems with the execution feedback on their best "
           f"failed sample ({n} samples per problem per round)."]
  header = ["round", "attempted, feedback", "solved so far, feedback"]
  if control:
    lines[-1] += (f" The control arm draws {n} more samples per round from the original "
                  "prompt for the problems it has not solved, so the gain due to feedback is "
                  "the difference of the two curves.")
    header += ["attempted, control", "solved so far, control", "gain due to feedback"]
  else:
    lines[-1] += (" No control arm was run: part of the rise is due to drawing more samples, "
                  "not to the feedback.")
  table_rows = []
  for r in rounds:
    row = [r["round"], r[FEEDBACK_ARM]["attempted"], _solved_cell(r[FEEDBACK_ARM])]
    if control:
      row += [r[CONTROL_ARM]["attempted"], _solved_cell(r[CONTROL_ARM]),
              f"{r['gain']:+d} ({100 * r['gain_rate']:+.2f} pp)"]
    table_rows.append(row)
  lines += [""] + report.table(header, table_rows)
  lines += ["", f"![solved by round]({REPAIR_PLOT})", ""]
  with open(os.path.join(workdir, REPAIR_REPORT), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
