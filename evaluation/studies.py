"""The paper's ablations, one command each: one eval config, one config key varied.

    python scripts/study.py --study=tests_shown --config=configs/eval_synthesis.py \
        --workdir=runs/study-tests --config.checkpoint=runs/pretrain \
        --config.data.manual_dir=../shared/data/mbpp

Studies (`--values=a,b,c` replaces the default values; the variants draw independently of each
other, evaluation/draws.py):
  tests_shown         prompt.num_tests_shown in 0, 1, 3: how much the tests in the prompt
                      help (synthesis only).
  temperature         sampling.temperature in 0.1, 0.3, 0.5, 0.7, 0.9: the trade between
                      pass@1 (low T) and pass@80 (high T).
  prompt_sensitivity  prompt.shot_seed in 0..14: 15 random 3-shot prompts, each scored, and
                      their ensemble, the union of all prompts' samples (WORKDIR/ensemble).
  repair              execution feedback for up to `rounds` rounds, beside a control arm that
                      draws as many new samples without feedback (about doubling the
                      sampling after round 0; `control=False` skips it; evaluation/repair.py).

The checkpoint is loaded once for the whole study. Each variant is an ordinary eval workdir,
WORKDIR/KEY=VALUE (samples.jsonl, results.json, report.md), so rerunning the command resumes
where it stopped and scripts/compare.py reads the variants too. The study's own outputs:
WORKDIR/study.json (a row per variant), study.md (the table) and study.png (pass@k and the
share of problems solved against the varied value; the ensemble as dashed lines).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import statistics
from typing import Any, Sequence

import ml_collections
from absl import logging

from evaluation import report
from evaluation import results as results_lib
from evaluation.repair import round_dir, run_repair
from evaluation.runner import (load_examples, make_sampler, run_eval,
                               sandbox_config)
from evaluation.scorer import load_scored
from rundir import layout

STUDY_FILE = "study.json"
STUDY_REPORT = "study.md"
STUDY_PLOT = "study.png"
ENSEMBLE_DIR = "ensemble"
DEFAULT_REPAIR_ROUNDS = 4


@dataclasses.dataclass(frozen=True)
class Study:
  """A config key and the values it takes; `ensemble` adds the union of all variants."""
  name: str
  key: str
  values: tuple[Any, ...]
  value_type: type
  label: str
  ensemble: bool = False  # also implies the values have no order (seeds)

  def variant_name(self, value: Any) -> str:
    return f"{self.key.rsplit('.', 1)[-1]}={value}"


STUDIES = {
    "tests_shown": Study("tests_shown", "prompt.num_tests_shown", (0, 1, 3), int,
                         "tests shown in the prompt"),
    "temperature": Study("temperature", "sampling.temperature", (0.1, 0.3, 0.5, 0.7, 0.9),
                         float, "sampling temperature"),
    "prompt_sensitivity": Study("prompt_sensitivity", "prompt.shot_seed", tuple(range(15)),
                                int, "seed of the random 3-shot prompt", ensemble=True),
}
STUDY_NAMES = tuple(STUDIES) + ("repair",)


def parse_values(study: Study, text: str) -> tuple[Any, ...]:
  """'0,1,3' -> (0, 1, 3) in the study's value type; '' keeps the defaults."""
  if not text:
    return study.values
  try:
    return tuple(study.value_type(v) for v in text.split(","))
  except ValueError as e:
    raise ValueError(f"--values for {study.name} must be {study.value_type.__name__}s "
                     f"separated by commas, got {text!r}") from e


def variant_config(config: ml_collections.ConfigDict, key: str,
                   value: Any) -> ml_collections.ConfigDict:
  """A copy of `config` with the dotted `key` set; a key the config lacks is an error."""
  variant = copy.deepcopy(config)
  *parents, last = key.split(".")
  node = variant
  for part in parents:
    node = node.get(part)
    if not isinstance(node, ml_collections.ConfigDict):
      break
  if not isinstance(node, ml_collections.ConfigDict) or last not in node:
    raise ValueError(f"this eval config has no {key!r} (task {config.task!r}), so the study "
                     "cannot vary it")
  node[last] = value
  return variant


def _row(name: str, value: Any, results: dict[str, Any]) -> dict[str, Any]:
  return {"variant": name, "value": value, "problems": results["num_problems"],
          "samples_per_problem": results["samples_per_problem"]["min"],
          "pass_at_k": results["pass_at_k"], "pass_rate": results["pass_rate"],
          "problems_solved": results["problems_solved"]}


def ensemble_results(examples: Sequence[dict[str, Any]], variant_dirs: Sequence[str],
                     out_dir: str, meta: dict[str, Any]) -> dict[str, Any]:
  """The union of the variants' samples, per problem, scored as one eval in `out_dir`.

  `examples`: one variant's (only ids and task matter; the prompts differ per variant).
  Only problems that every variant scored take part. pass@k is reported at the paper's k and
  at the whole pool (`problems_solved`: any sample of any prompt passes).
  """
  scored = [load_scored(d) for d in variant_dirs]
  common = set.intersection(*(set(s) for s in scored))
  merged = {}
  for example_id in common:
    records = [r for s in scored for r in s[example_id]]
    merged[example_id] = [{**r, "sample_index": i} for i, r in enumerate(records)]
  examples = [e for e in examples if e["id"] in common]
  pool = min((len(r) for r in merged.values()), default=0)
  ks = tuple(k for k in results_lib.PAPER_KS if k < pool) + ((pool,) if pool else ())
  results = results_lib.summarize(examples, merged, meta=meta, ks=ks)
  results["meta"]["prompt_template_sha256"] = sorted(
      {r["prompt_template_sha256"] for records in merged.values() for r in records})
  results["meta"]["ensemble_of"] = [os.path.basename(d) for d in variant_dirs]
  results_lib.write_results(out_dir, results)
  report.write_report(out_dir, results)
  return results


def run_study(config: ml_collections.ConfigDict, workdir: str, study_name: str,
              values: str = "", rounds: int = DEFAULT_REPAIR_ROUNDS,
              control: bool = True) -> dict[str, Any]:
  """Runs (or resumes) one study in `workdir`; returns what study.json / repair.json hold.

  `rounds` and `control` (the no-feedback control arm) are the repair study's.
  """
  if study_name not in STUDY_NAMES:
    raise ValueError(f"unknown study {study_name!r}; choose one of {STUDY_NAMES}")
  if config.samples_path:
    raise ValueError("studies sample from a model: set --config.checkpoint, not "
                     "--config.samples_path")
  # The study's folder is one run: a second study there is refused at once (each variant's
  # eval workdir, a folder inside it, is locked by run_eval too).
  with layout.workdir_lock(workdir):
    return _run_study(config, workdir, study_name, values, rounds, control)


def _run_study(config: ml_collections.ConfigDict, workdir: str, study_name: str, values: str,
               rounds: int, control: bool) -> dict[str, Any]:
  if study_name == "repair":
    return _run_repair_study(config, workdir, rounds, control)
  study = STUDIES[study_name]
  # Every variant is built and checked before the (slow) model load and the first sample.
  variants = []
  for value in parse_values(study, values):
    variant = variant_config(config, study.key, value)
    variants.append((study.variant_name(value), value, variant, load_examples(variant)))
  sampler = make_sampler(config)
  rows, dirs, metas = [], [], []
  for number, (name, value, variant, examples) in enumerate(variants, 1):
    logging.info("study %s: variant %d/%d, %s", study.name, number, len(variants), name)
    dirs.append(os.path.join(workdir, name))
    results = run_eval(variant, dirs[-1], sampler, examples)
    metas.append(results["meta"])
    rows.append(_row(name, value, results))
  summary = {"study": study.name, "key": study.key, "label": study.label, "rows": rows,
             "ensemble": None}
  if study.ensemble:
    # What the variants share; of what is each variant's own, the draw variants (a list).
    meta = {k: v for k, v in metas[0].items() if k not in (
        "config", "throughput", "token_budgets", "draw_variant", "draw_variant_of")}
    meta["draw_variant"] = [m["draw_variant"] for m in metas]
    meta["study"] = study.name
    ensemble = ensemble_results(variants[0][3], dirs, os.path.join(workdir, ENSEMBLE_DIR), meta)
    summary["ensemble"] = _row(ENSEMBLE_DIR, "union", ensemble)
  write_study(workdir, summary)
  return summary


def _run_repair_study(config: ml_collections.ConfigDict, workdir: str, rounds: int,
                      control: bool) -> dict[str, Any]:
  if rounds < 1:
    raise ValueError(f"the repair study needs at least 1 round, got {rounds}")
  examples = load_examples(config)
  # Round 0's sampler (config's seed and draw variant): the rounds' seeds derive from it.
  sampler = make_sampler(config, examples)
  results = run_eval(config, round_dir(workdir, 0), sampler, examples)
  return run_repair(sampler, examples, load_scored(round_dir(workdir, 0)), workdir,
                    rounds=rounds, num_samples=config.num_samples, meta=results["meta"],
                    sandbox_config=sandbox_config(config), control=control)


def _headline_ks(rows: Sequence[dict[str, Any]]) -> list[str]:
  return sorted({k for r in rows for k in r["pass_at_k"]}, key=int)


def write_study(workdir: str, summary: dict[str, Any]) -> None:
  """study.json, study.md (table: a row per variant, the spread over them, the ensemble) and
  study.png."""
  with open(os.path.join(workdir, STUDY_FILE), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
    f.write("\n")
  rows, ensemble = summary["rows"], summary["ensemble"]
  ks = _headline_ks(rows)
  metrics = [f"pass@{k}" for k in ks] + ["pass_rate", "problems_solved"]

  def values(row: dict[str, Any]) -> list[float | None]:
    return [_metric(row, m) for m in metrics]

  def cells(numbers: Sequence[float | None]) -> list[str]:
    return ["" if v is None else f"{100 * v:.2f}" for v in numbers]

  table_rows = [[r["variant"], r["problems"], r["samples_per_problem"]] + cells(values(r))
                for r in rows]
  if len(rows) > 1:
    columns = list(zip(*(values(r) for r in rows)))
    spread = [f"{100 * statistics.mean(c):.2f} ± {100 * statistics.stdev(c):.2f}"
              if None not in c else "" for c in columns]
    table_rows.append(["mean ± std over variants", "", ""] + spread)
  if ensemble:
    table_rows.append([f"ensemble (union of {len(rows)})", ensemble["problems"],
                       ensemble["samples_per_problem"]] + cells(values(ensemble)))
  lines = [f"# Study: {summary['study']} ({summary['key']})", "",
           "Each variant is an eval workdir beside this file; metrics in percent."
           + (" The ensemble pools every variant's samples per problem "
              f"({ENSEMBLE_DIR}/); its problems_solved counts a problem solved if any "
              "sample of any prompt passes." if ensemble else ""), ""]
  lines += report.table(["variant", "problems", "samples"] + [f"{m} (%)" for m in metrics],
                        table_rows)
  lines += ["", f"![{summary['study']}]({STUDY_PLOT})", ""]
  with open(os.path.join(workdir, STUDY_REPORT), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  plotted = [f"pass@{k}" for k in ks[:1] + ks[-1:]] if ks else []
  plotted = list(dict.fromkeys(plotted)) + ["problems_solved"]
  series = {m: [_metric(r, m) for r in rows] for m in plotted}
  reference = {m: _metric(ensemble, m) for m in plotted
               if ensemble and _metric(ensemble, m) is not None}
  report.line_plot(os.path.join(workdir, STUDY_PLOT), [r["value"] for r in rows],
                   {m: [v if v is not None else float("nan") for v in s]
                    for m, s in series.items()},
                   xlabel=summary["label"], ylabel="percent", title=f"{summary['study']}",
                   reference=reference, connect=ensemble is None)


def _metric(row: dict[str, Any], metric: str) -> float | None:
  if metric.startswith("pass@"):
    return row["pass_at_k"].get(metric.split("@")[1])
  return row[metric]
