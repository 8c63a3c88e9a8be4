"""The model-free half of evaluation: completions -> sandbox -> pass@k -> results and report.

Knows nothing of JAX or of any model, so it scores completions from anywhere.

Samples made elsewhere (one `{"task_id": int, "completion": str}` a line):

    examples = data.tasks.load_task_examples("mbpp_synthesis", "test", ...)
    results = evaluate_samples_file("their_samples.jsonl", examples, workdir,
                                    meta={"model": ..., "objective": ..., "split": "test"})

Samples streamed in by eval.py's sampler (resumable; see Scorer):

    with Scorer(workdir, sandbox_config) as scorer:
      for batch in batches([e for e in examples if e["id"] not in scorer.done_ids]):
        scorer.score(batch, sample(batch))          # {example id: [completion, ...]}
    results = finish(workdir, examples, scorer.records, meta=..., sandbox_config=...)

Files in a workdir: samples.jsonl (one scored sample a line, appended problem by problem),
results.json (schema in results.py) and report.md with PNG plots beside it.
scripts/compare.py (evaluation/compare.py) gathers many workdirs into one table.
"""
from evaluation.evaluate import evaluate_samples_file, finish
from evaluation.report import REPORT_FILE, write_report
from evaluation.results import RESULTS_FILE, read_results, summarize, write_results
from evaluation.samples import SamplesFileError, problem_key, read_samples_file
from evaluation.scorer import (SAMPLES_FILE, Scorer, WorkdirMismatch, load_scored,
                                score_completions)

__all__ = [
    "REPORT_FILE", "RESULTS_FILE", "SAMPLES_FILE", "SamplesFileError", "Scorer",
    "WorkdirMismatch", "evaluate_samples_file", "finish", "load_scored", "problem_key",
    "read_results", "read_samples_file", "score_completions", "summarize", "write_report",
    "write_results",
]
