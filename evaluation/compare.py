"""Many eval workdirs -> one table (markdown, CSV, JSONL) and plots per task.

Each workdir's results.json names its run in `meta`: "model" (size/preset), "objective"
(few-shot, finetuned-synthesis, ...), "task" and "split". One row per run; the plots show,
per task and per headline k, pass@k (for execution prediction: accuracy) against model
size, one line per objective. Sizes order by meta "num_params" where present, else by the
preset name ("244m" < "1b" < "137b"); names that are not sizes go last, alphabetically.
"""
import collections
import csv
import io
import json
import math
import os
import re
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from evaluation import report  # noqa: E402
from evaluation import results as results_lib  # noqa: E402
from evaluation import summaries  # noqa: E402

_BASE_COLUMNS = ("run", "model", "num_params", "objective", "task", "split", "problems",
                 "samples_per_problem")
_SIZE_UNITS = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
TENSORBOARD_DIR = "tensorboard"  # Below --out_dir: one TensorBoard run per compared run.


def find_results(paths: Sequence[str]) -> list[str]:
  """results.json files: each path is a workdir, a results.json, or a folder searched below."""
  found = []
  for path in paths:
    if os.path.isfile(path):
      found.append(path)
    elif os.path.isfile(os.path.join(path, results_lib.RESULTS_FILE)):
      found.append(os.path.join(path, results_lib.RESULTS_FILE))
    else:
      below = sorted(os.path.join(root, results_lib.RESULTS_FILE)
                     for root, _, files in os.walk(path) if results_lib.RESULTS_FILE in files)
      if not below:
        raise FileNotFoundError(f"no {results_lib.RESULTS_FILE} in or below {path}")
      found.extend(below)
  return found


def model_size(meta: dict[str, Any]) -> float:
  """Parameters for ordering (of a meta or a row): "num_params", else parsed from "1b"-style
  model names, else inf."""
  if isinstance(meta.get("num_params"), (int, float)):
    return float(meta["num_params"])
  match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmbt])", str(meta.get("model", "")).lower())
  return float(match.group(1)) * _SIZE_UNITS[match.group(2)] if match else math.inf


def row(results: dict[str, Any], run: str) -> dict[str, Any]:
  """One table row: the run's identity, then its headline numbers."""
  meta = results["meta"]
  entry = {"run": run, "model": meta.get("model", "unknown"),
           "num_params": meta.get("num_params"), "objective": meta.get("objective", "unknown"),
           "task": meta.get("task", "unknown"),
           "split": meta.get("split", "unknown"), "problems": len(results["per_problem"]),
           "samples_per_problem": results.get("samples_per_problem", {}).get("min")}
  entry.update({f"pass@{k}": v for k, v in results["pass_at_k"].items()})
  if "pass_rate" in results:
    entry["pass_rate"] = results["pass_rate"]
  challenge = results.get("challenge") or {}
  entry.update({f"challenge_pass@{k}": v for k, v in challenge.get("pass_at_k", {}).items()})
  return entry


def gather(paths: Sequence[str]) -> list[dict[str, Any]]:
  """Rows of every run under `paths`, ordered by task, objective, model size, run."""
  rows = []
  for path in find_results(paths):
    results = results_lib.read_results(path)
    rows.append(row(results, os.path.relpath(os.path.dirname(os.path.abspath(path)))))
  rows.sort(key=lambda r: (r["task"], r["objective"], model_size(r), r["model"], r["run"]))
  return rows


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
  """Identity columns, then every metric any row has (pass@k by k, challenge last)."""
  metrics = {k for r in rows for k in r} - set(_BASE_COLUMNS)
  def order(name: str) -> tuple:
    k = re.search(r"@(\d+)$", name)
    return (name.startswith("challenge"), name == "pass_rate", int(k.group(1)) if k else 0)
  return list(_BASE_COLUMNS) + sorted(metrics, key=order)


def _cell(value: Any) -> str:
  if value is None:
    return ""
  return f"{100 * value:.2f}" if isinstance(value, float) else str(value)


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
  """The table; metrics in percent, empty where a run has no such k."""
  names = columns(rows)
  header = [n if n in _BASE_COLUMNS else f"{n} (%)" for n in names]
  return "\n".join(report.table(header, [[_cell(r.get(n)) for n in names] for r in rows])) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
  """The table with raw fractions (0..1), one run a line."""
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=columns(rows), lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  return out.getvalue()


def to_jsonl(rows: Sequence[dict[str, Any]]) -> str:
  return "".join(json.dumps(r) + "\n" for r in rows)


def plot_task(rows: Sequence[dict[str, Any]], task: str, path: str) -> None:
  """pass@k per headline k against model size, a line per objective (runs averaged)."""
  rows = [r for r in rows if r["task"] == task]
  metrics = [n for n in columns(rows) if n.startswith("pass@")]
  sizes = {r["model"]: model_size(r) for r in rows}
  models = sorted(sizes, key=lambda m: (sizes[m], m))
  fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(4 * max(len(metrics), 1), 3.5),
                           squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    values = collections.defaultdict(list)
    for r in rows:
      if r.get(metric) is not None:
        values[(r["objective"], r["model"])].append(r[metric])
    for objective in sorted({o for o, _ in values}):
      points = [(i, sum(values[(objective, m)]) / len(values[(objective, m)]))
                for i, m in enumerate(models) if (objective, m) in values]
      ax.plot([x for x, _ in points], [100 * y for _, y in points], marker="o", label=objective)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models)
    ax.set_xlabel("model")
    ax.set_ylabel(("accuracy" if task == "mbpp_execution" and metric == "pass@1" else metric)
                  + " (%)")
    ax.set_title(f"{task}: {metric}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_comparison(rows: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
  """compare.md, compare.csv, compare.jsonl and compare_TASK.png in out_dir; returns paths."""
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for name, text in (("compare.md", to_markdown(rows)), ("compare.csv", to_csv(rows)),
                     ("compare.jsonl", to_jsonl(rows))):
    written.append(os.path.join(out_dir, name))
    with open(written[-1], "w", encoding="utf-8") as f:
      f.write(text)
  for task in sorted({r["task"] for r in rows}):
    written.append(os.path.join(out_dir, f"compare_{task}.png"))
    plot_task(rows, task, written[-1])
  written.extend(write_tensorboard(rows, os.path.join(out_dir, TENSORBOARD_DIR)))
  return written


def write_tensorboard(rows: Sequence[dict[str, Any]], logdir: str) -> list[str]:
  """One TensorBoard run per row under `logdir` (named after the row's run): its metrics as
  `TASK/METRIC` scalars (pass@1 as pass_at_1), its identity as hparams, so the HPARAMS tab
  shows the table."""
  written = []
  for r in rows:
    run_dir = os.path.join(logdir, re.sub(r"[^A-Za-z0-9._-]+", "_", r["run"]).strip("_."))
    metrics = {f"{r['task']}/{name.replace('@', '_at_')}": float(v) for name, v in r.items()
               if name not in _BASE_COLUMNS and isinstance(v, (int, float))}
    identity = {name: r[name] for name in _BASE_COLUMNS if r.get(name) is not None}
    if summaries.write_scalars(run_dir, metrics, identity):
      written.append(run_dir)
  return written
