"""The two ends of an eval run that need no model: finishing a run, and scoring a file."""
import os
from typing import Any, Sequence

from absl import logging

from evaluation import report
from evaluation import results as results_lib
from evaluation import sample_formats
from evaluation import samples
from evaluation import scorer
from evaluation import summaries
from execution import SandboxConfig


def finish(workdir: str, examples: Sequence[dict[str, Any]],
           records_by_id: dict[str, list[dict[str, Any]]], *, meta: dict[str, Any],
           sandbox_config: SandboxConfig | None = None,
           ks: Sequence[int] = results_lib.PAPER_KS) -> dict[str, Any]:
  """Summarizes scored records; writes results.json, report.md (+ plots) and TensorBoard
  event files of the headline numbers (evaluation/summaries.py)."""
  meta = dict(meta)
  meta.setdefault("sandbox", scorer.sandbox_meta(sandbox_config or SandboxConfig()))
  results = results_lib.summarize(examples, records_by_id, meta=meta, ks=ks)
  results_lib.write_results(workdir, results)
  report.write_report(workdir, results)
  summaries.write_results_summary(workdir, results)
  logging.info("%s: %s", workdir, ", ".join(
      f"pass@{k} {100 * v:.2f}%" for k, v in results["pass_at_k"].items()))
  return results


def evaluate_samples_file(samples_path: str, examples: Sequence[dict[str, Any]], workdir: str,
                          *, meta: dict[str, Any] | None = None,
                          sandbox_config: SandboxConfig | None = None,
                          ks: Sequence[int] = results_lib.PAPER_KS,
                          samples_format: str = "",
                          **scorer_options) -> dict[str, Any]:
  """samples_path mode: scores a file of completions made elsewhere; resumable in workdir.

  The whole file is validated before anything runs (SamplesFileError on a bad line or an
  unknown task id). Problems of `examples` without samples are reported as unscored.
  `samples_format`: one of sample_formats.FORMATS (ours, bigcode, evalplus, lm_eval), or ""
  to detect it. meta.num_samples becomes the number of samples each problem has in the file
  (the largest, where they differ).
  """
  output = os.path.join(workdir, scorer.SAMPLES_FILE)
  if os.path.exists(output) and os.path.samefile(samples_path, output):
    raise samples.SamplesFileError(f"{samples_path} is where the scored samples go; "
                                   "move the input elsewhere")
  completions, format_meta = sample_formats.read_samples(samples_path, examples,
                                                         samples_format)
  examples = sample_formats.examples_for_format(examples, format_meta["samples_format"])
  records = scorer.score_completions(examples, completions, workdir, sandbox_config,
                                      **scorer_options)
  meta = {"samples_source": samples_path, **(meta or {}), **format_meta,
          "num_samples": max(len(c) for c in completions.values())}
  return finish(workdir, examples, records, meta=meta, sandbox_config=sandbox_config, ks=ks)
