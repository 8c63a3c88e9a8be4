"""report.md with two PNG plots beside it: pass@k against k, and the status breakdown."""
import os
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # Files only: eval runs on headless machines.
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the backend)

from evaluation.scorer import RECORD_STATUSES as STATUSES  # noqa: E402
from rundir import layout  # noqa: E402

REPORT_FILE = layout.REPORT_FILE
PASS_AT_K_PLOT = "pass_at_k.png"
STATUS_PLOT = "status_counts.png"


def _percent(value: float) -> str:
  return f"{100 * value:.2f}%"


def plot_pass_at_k(results: dict[str, Any], path: str) -> None:
  curve = {int(k): v for k, v in results["pass_at_k_curve"].items()}
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(list(curve), [100 * v for v in curve.values()], marker="o")
  if len(curve) > 1:
    ax.set_xscale("log")
  ax.set_xlabel("k (samples per problem)")
  ax.set_ylabel("pass@k (%)")
  meta = results["meta"]
  ax.set_title(f"{meta['task']} {meta['split']}: {meta['model']} ({meta['objective']})",
               fontsize=9)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def line_plot(path: str, xs: Sequence[Any], series: dict[str, Sequence[float]], *,
              xlabel: str, ylabel: str, title: str,
              reference: dict[str, float] | None = None, connect: bool = True) -> None:
  """Fractions (drawn in percent) against `xs`, one line per series; `reference` values are
  dashed horizontal lines (a study's ensemble). Non-numeric xs are evenly spaced labels;
  `connect=False` draws points only, for xs with no order (seeds), each one ticked."""
  numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
  positions = list(xs) if numeric else list(range(len(xs)))
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  for label, values in series.items():
    line, = ax.plot(positions, [100 * v for v in values], marker="o", label=label,
                    linestyle="-" if connect else "none")
    if reference and label in reference:
      ax.axhline(100 * reference[label], color=line.get_color(), linestyle="--",
                 label=f"{label}, ensemble")
  if not numeric or not connect:
    ax.set_xticks(positions)
    ax.set_xticklabels([str(x) for x in xs])
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.grid(True, alpha=0.3)
  if len(series) > 1 or reference:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_status_counts(results: dict[str, Any], path: str) -> None:
  groups = [("tests", results["status_counts"])]
  if results.get("challenge"):
    groups.append(("challenge tests", results["challenge"]["status_counts"]))
  fig, ax = plt.subplots(figsize=(6, 3.5))
  width = 0.8 / len(groups)
  for i, (label, counts) in enumerate(groups):
    xs = [j + i * width for j in range(len(STATUSES))]
    ax.bar(xs, [counts.get(s, 0) for s in STATUSES], width, label=label)
  ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(STATUSES))])
  ax.set_xticklabels(STATUSES, rotation=20)
  ax.set_ylabel("samples")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
  """Markdown table lines."""
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render(results: dict[str, Any]) -> str:
  """The markdown of report.md (plots referenced by file name)."""
  meta = results["meta"]
  out = [f"# Eval: {meta['task']} {meta['split']}, {meta['model']} ({meta['objective']})", ""]
  out += table(["meta", "value"], [[k, f"`{v}`"] for k, v in sorted(meta.items())
                                    if not isinstance(v, dict)])
  spp = results["samples_per_problem"]
  out += ["", "## Scores", "",
          f"{results['num_problems']} problems scored of {results['num_examples']} "
          f"({results['unscored_problems']} without samples), {results['num_samples']} "
          f"samples ({spp['min']}-{spp['max']} per problem).", ""]
  rows = [[f"pass@{k}", _percent(v)] for k, v in results["pass_at_k"].items()]
  rows += [["samples passing", _percent(results["pass_rate"])],
           ["problems solved by any sample", _percent(results["problems_solved"])]]
  out += table(["metric", "value"], rows)
  if meta["task"] == "mbpp_execution":
    out += ["", "A problem is one test assert; pass@1 is the execution-prediction accuracy."]
  out += ["", f"![pass@k against k]({PASS_AT_K_PLOT})", "", "## Execution statuses", ""]
  header, columns = ["status", "samples"], [results["status_counts"]]
  if results.get("challenge"):
    header.append("challenge tests")
    columns.append(results["challenge"]["status_counts"])
  out += table(header, [[s] + [c.get(s, 0) for c in columns] for s in STATUSES])
  out += ["", f"![status breakdown]({STATUS_PLOT})"]
  challenge = results.get("challenge")
  if challenge:
    out += ["", "## Challenge tests", "",
            f"{challenge['num_problems']} problems have challenge tests; scored separately "
            "(a sample passes if it passes the challenge asserts).", ""]
    rows = [[f"pass@{k}", _percent(v)] for k, v in challenge["pass_at_k"].items()]
    rows.append(["samples passing", _percent(challenge["pass_rate"])])
    out += table(["metric", "value"], rows)
  return "\n".join(out) + "\n"


def write_report(workdir: str, results: dict[str, Any]) -> str:
  """Writes report.md, pass_at_k.png and status_counts.png into `workdir`; returns the md path."""
  os.makedirs(workdir, exist_ok=True)
  if results["pass_at_k_curve"]:
    plot_pass_at_k(results, os.path.join(workdir, PASS_AT_K_PLOT))
  plot_status_counts(results, os.path.join(workdir, STATUS_PLOT))
  path = os.path.join(workdir, REPORT_FILE)
  with open(path, "w", encoding="utf-8") as f:
    f.write(render(results))
  return path
