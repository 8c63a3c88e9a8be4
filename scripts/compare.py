"""Gathers eval workdirs into one table (markdown, CSV, JSONL) and plots per task.

    python scripts/compare.py runs/eval-* [--out_dir runs/compare]
    python scripts/compare.py runs/          # every results.json below runs/

Prints the markdown table; with --out_dir also writes compare.md, compare.csv (fractions
0..1), compare.jsonl, compare_TASK.png (pass@k against model size per objective) and
tensorboard/RUN/ (each run's numbers as TensorBoard scalars and hparams:
`tensorboard --logdir OUT_DIR/tensorboard`, HPARAMS tab).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation import compare  # noqa: E402  (after making the repo importable)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("paths", nargs="+", help="eval workdirs, results.json files or folders")
  parser.add_argument("--out_dir", help="also write the table and plots here")
  args = parser.parse_args(argv)
  try:
    rows = compare.gather(args.paths)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(compare.to_markdown(rows), end="")
  if args.out_dir:
    for path in compare.write_comparison(rows, args.out_dir):
      print(f"wrote {path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
