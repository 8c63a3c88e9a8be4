"""Launches a sweep file's runs: locally N at a time, or as SLURM array jobs.

    python scripts/launch.py configs/sweeps/lr_seeds.py --dry-run
    python scripts/launch.py configs/sweeps/lr_seeds.py --local 2
    python scripts/launch.py configs/sweeps/objectives.py --slurm runs/slurm/objectives

Every run gets its own workdir, RUNS_DIR/SWEEP/[STAGE/]NAME (relative to the repository root,
where commands run). Finished runs are skipped, half-finished ones relaunched (train.py and
eval.py resume from their workdir); nothing is deleted. A run is its full resolved config: a
workdir holding work done under another config (a changed base override, a raised
num_train_steps) is an error that lists the differences, or with --new-run-dirs the run moves
to NAME.v2 (NAME.v3, ...). The sweep is validated (config keys, duplicate workdirs, configs
of earlier runs) before anything starts. See sweeps/spec.py for the sweep file API.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sweeps import SweepError, build_plan, describe, local, slurm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("sweep_file", help="a Python file with get_sweep()")
  parser.add_argument("--dry-run", action="store_true", help="print the plan, do nothing")
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument("--local", type=int, metavar="N", help="run here, N at a time")
  mode.add_argument("--slurm", metavar="OUT_DIR", help="write SLURM array jobs to OUT_DIR")
  parser.add_argument("--runs-dir", default="runs", help="parent of the sweep's workdirs")
  parser.add_argument("--python", default=sys.executable, help="interpreter in the commands")
  parser.add_argument("--max-parallel", type=int, default=0,
                      help="SLURM: at most this many array tasks at once (0: no limit)")
  parser.add_argument("--new-run-dirs", action="store_true",
                      help="a run whose workdir holds work done under another config starts "
                           "in NAME.v2 (.v3, ...) instead of being an error")
  args = parser.parse_args(argv)
  if not args.dry_run and args.local is None and args.slurm is None:
    parser.error("choose --local N, --slurm OUT_DIR or --dry-run")

  try:
    plan = build_plan(args.sweep_file, args.runs_dir, new_run_dirs=args.new_run_dirs)
  except SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.slurm is not None:
    files = slurm.slurm_files(plan, args.slurm, args.python, args.max_parallel)
    if args.dry_run:
      print(describe.describe(plan, args.python))
      for path, content in files.items():
        print(f"\n--- would write {path}\n{content}", end="")
      return 0
    try:
      slurm.write_files(files)
    except FileExistsError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(describe.describe(plan, args.python))
    if not files:
      print("every run is finished; nothing to submit")
      return 0
    print("\nwrote " + ", ".join(sorted(files)))
    print(f"submit with: bash {os.path.join(os.path.abspath(args.slurm), 'submit.sh')}")
    return 0
  print(describe.describe(plan, args.python))
  if args.dry_run:
    return 0
  try:
    outcomes = local.run_local(plan, args.local, args.python)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("\n" + local.summary(outcomes))
  return 1 if any(o.result in ("failed", "blocked") for o in outcomes) else 0


if __name__ == "__main__":
  sys.exit(main())
