"""Transfer of MBPP finetuning to HumanEval: MBPP synthesis pass@k beside HumanEval pass@k,
one row per model and objective, and each finetuned model's gain over the pretrained model
it started from.

Transfer is HumanEval pass@k of a model finetuned on an MBPP objective (synthesis or
execution prediction) minus HumanEval pass@k of the pretrained-only model of the same size
(objective PRETRAINED, the base both finetunes start from in scripts/reproduce.py), in
percentage points. Every model gets the same HumanEval prompts (zero-shot), so the difference
is the finetuning's. The MBPP gain beside it is the in-domain one (there the pretrained
model's prompt is 3-shot and the finetuned models' 0-shot, as in the paper).

Built from evaluation/compare.py's rows (each run's results.json); runs of the same model,
objective and task are averaged, as in compare.py's plots.
"""
import collections
import csv
import io
import math
import os
import re
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from evaluation import compare  # noqa: E402
from evaluation import report  # noqa: E402

PRETRAINED = "few-shot"       # the objective the pipeline gives the pretrained-only model
SOURCE_TASK = "mbpp_synthesis"
TARGET_TASK = "humaneval"
_TASK_NAMES = {SOURCE_TASK: "MBPP", TARGET_TASK: "HumanEval"}
_IDENTITY = ("model", "objective")
FILES = ("transfer.md", "transfer.csv", "transfer.png")


def _ks(rows: Sequence[dict[str, Any]]) -> list[int]:
  return sorted({int(m.group(1)) for r in rows if r["task"] in _TASK_NAMES
                 for name in r if (m := re.fullmatch(r"pass@(\d+)", name))})


def transfer_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per (model, objective) evaluated on HumanEval: `TASK_pass@k` of both tasks side
  by side for each k (fractions, None where the run has no such k), then `TASK_gain@k` (minus
  the pretrained model's; None for the pretrained model itself or where it was not
  evaluated; HumanEval's is the transfer). Ordered by model size, the pretrained model
  first, then the objectives alphabetically."""
  ks = _ks(rows)
  values = collections.defaultdict(list)   # (model, objective, task, k) -> [pass@k]
  sizes = {}
  for r in rows:
    if r["task"] not in _TASK_NAMES:
      continue
    sizes[r["model"]] = compare.model_size(r)
    for k in ks:
      if r.get(f"pass@{k}") is not None:
        values[(r["model"], r["objective"], r["task"], k)].append(r[f"pass@{k}"])

  def mean(model: str, objective: str, task: str, k: int) -> float | None:
    found = values.get((model, objective, task, k))
    return sum(found) / len(found) if found else None

  evaluated = {(r["model"], r["objective"]) for r in rows if r["task"] == TARGET_TASK}
  table = []
  for model, objective in sorted(evaluated, key=lambda p: (sizes[p[0]], p[0],
                                                           p[1] != PRETRAINED, p[1])):
    entry = {"model": model, "objective": objective}
    for k in ks:
      for task in _TASK_NAMES:
        entry[f"{task}_pass@{k}"] = mean(model, objective, task, k)
    for k in ks:
      for task in _TASK_NAMES:
        value, base = entry[f"{task}_pass@{k}"], mean(model, PRETRAINED, task, k)
        entry[f"{task}_gain@{k}"] = (value - base if objective != PRETRAINED
                                     and None not in (value, base) else None)
    table.append(entry)
  return table


def _header(name: str) -> str:
  if name in _IDENTITY:
    return name
  task, kind, k = re.fullmatch(r"(\w+?)_(pass|gain)@(\d+)", name).groups()
  if kind == "pass":
    return f"{_TASK_NAMES[task]} pass@{k} (%)"
  return f"{_TASK_NAMES[task]} {'transfer' if task == TARGET_TASK else 'gain'}@{k} (points)"


def _cell(name: str, value: Any) -> str:
  if value is None:
    return ""
  if name in _IDENTITY:
    return str(value)
  return f"{100 * value:+.2f}" if "_gain@" in name else f"{100 * value:.2f}"


def to_markdown(table: Sequence[dict[str, Any]]) -> str:
  """The transfer table: pass@k in percent, gains in percentage points (signed)."""
  if not table:
    return ""
  names = list(table[0])
  return "\n".join(report.table([_header(n) for n in names],
                                [[_cell(n, r[n]) for n in names] for r in table])) + "\n"


def to_csv(table: Sequence[dict[str, Any]]) -> str:
  """The transfer table with raw fractions (0..1), empty where there is no value."""
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=list(table[0]) if table else list(_IDENTITY),
                          lineterminator="\n")
  writer.writeheader()
  writer.writerows(table)
  return out.getvalue()


def plot(table: Sequence[dict[str, Any]], path: str) -> None:
  """A panel per k: MBPP and HumanEval pass@k side by side, a bar pair per model/objective."""
  ks = sorted({int(n.rsplit("@", 1)[1]) for n in table[0] if "_pass@" in n})
  fig, axes = plt.subplots(1, max(len(ks), 1), figsize=(4.5 * max(len(ks), 1), 3.8),
                           squeeze=False)
  labels = [f"{r['model']}\n{r['objective']}" for r in table]
  for ax, k in zip(axes[0], ks):
    tallest = 0.0
    for offset, task in ((-0.2, SOURCE_TASK), (0.2, TARGET_TASK)):
      # A run without this k gets no bar (NaN), not a bar at 0.
      heights = [math.nan if r[f"{task}_pass@{k}"] is None else 100 * r[f"{task}_pass@{k}"]
                 for r in table]
      tallest = max([tallest, *(h for h in heights if not math.isnan(h))])
      ax.bar([i + offset for i in range(len(table))], heights, width=0.4,
             label=_TASK_NAMES[task])
    ax.set_ylim(0, max(1.0, 1.15 * tallest))  # all-zero tiny runs: an axis from 0, not -0.05
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel(f"pass@{k} (%)")
    ax.set_title(f"MBPP finetuning's transfer to HumanEval: pass@{k}", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


_EXPLANATION = (
    f"Transfer: HumanEval pass@k of a model finetuned on an MBPP objective minus that of the "
    f"pretrained-only model (objective `{PRETRAINED}`), in percentage points; every model "
    f"gets the same zero-shot HumanEval prompts. The MBPP gain is the in-domain one (the "
    f"pretrained model is prompted 3-shot there, the finetuned ones 0-shot).\n\n")


def write_transfer(rows: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
  """transfer.md (explained), transfer.csv and transfer.png in out_dir from compare.py's
  rows; nothing when no run is on HumanEval. Returns the paths written."""
  table = transfer_rows(rows)
  if not table:
    return []
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, name) for name in FILES]
  for path, text in zip(paths, (_EXPLANATION + to_markdown(table), to_csv(table))):
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
  plot(table, paths[2])
  return paths
