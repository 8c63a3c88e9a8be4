"""`python -m data.show_prompt`: print exactly the prompt a model sees for one example.

    python -m data.show_prompt --task synthesis --task_id 11 --manual_dir ../shared/data/mbpp
    python -m data.show_prompt --task execution --variant code_tests --task_id 12 --show_target \\
        --manual_dir ../shared/data/mbpp
    python -m data.show_prompt --task mathqa --index 0 --manual_dir ../shared/data/mathqa/raw

stdout is the prompt and nothing else (then, with --show_target, the target), so it can be
piped or diffed; the template fingerprint and dataset-building messages go to stderr. Kept
apart from data/prompts.py, which renders prompts and imports nothing that loads datasets
(data/tasks.py imports it).
"""
import argparse
import contextlib
import sys
from typing import Any, Sequence

from data import mbpp
from data import tasks
from data.prompts import EXECUTION_VARIANTS


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m data.show_prompt",
      description="Print exactly the prompt a model sees (and, with --show_target, the "
                  "text it should produce).")
  parser.add_argument("--task", choices=("synthesis", "execution", "mathqa"),
                      default="synthesis")
  parser.add_argument("--task_id", type=int, default=11,
                      help="MBPP task id (synthesis, execution).")
  parser.add_argument("--test_index", type=int, default=0,
                      help="execution: which test of the problem is asked.")
  parser.add_argument("--variant", choices=EXECUTION_VARIANTS, default="code")
  parser.add_argument("--index", type=int, default=0,
                      help="mathqa: position of the problem in its split.")
  parser.add_argument("--split", default=None,
                      help="mathqa split (default validation); MBPP splits follow task_id.")
  parser.add_argument("--num_shots", type=int, default=None)
  parser.add_argument("--shot_task_ids", default=None, help="comma-separated, e.g. 2,3,4")
  parser.add_argument("--shot_seed", type=int, default=None)
  parser.add_argument("--num_tests_shown", type=int, default=3)
  parser.add_argument("--normalize_line_endings", action="store_true")
  parser.add_argument("--sanitized", action="store_true", help="use sanitized MBPP")
  parser.add_argument("--show_target", action="store_true")
  parser.add_argument("--data_dir", default=None, help="TFDS data dir")
  parser.add_argument("--manual_dir", default=None,
                      help="directory with the official files (e.g. ../shared/data/mbpp)")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  # stdout is exactly the model's input: TFDS prints "Downloading and preparing dataset ..."
  # to stdout when it first builds a dataset, so everything before the prompt goes to stderr.
  with contextlib.redirect_stdout(sys.stderr):
    example = _chosen_example(args)
  print(f"prompt template sha256: {example['prompt_template_sha256']}", file=sys.stderr)
  sys.stdout.write(example["prompt"])
  if args.show_target:
    sys.stdout.write(example["target"])
  sys.stdout.flush()


def _chosen_example(args: argparse.Namespace) -> dict[str, Any]:
  """The task example the arguments name, loaded with load_task_examples."""
  options: dict[str, Any] = {}
  if args.num_shots is not None:
    options["num_shots"] = args.num_shots
  if args.shot_seed is not None:
    options["shot_seed"] = args.shot_seed
  if args.task in ("synthesis", "execution"):
    if args.shot_task_ids:
      options["shot_task_ids"] = tuple(int(i) for i in args.shot_task_ids.split(","))
    options["normalize_line_endings"] = args.normalize_line_endings
    options["mbpp_config"] = "sanitized" if args.sanitized else "full"
    split = mbpp.split_of_task_id(args.task_id)
    if args.task == "synthesis":
      options["num_tests_shown"] = args.num_tests_shown
      task = "mbpp_synthesis"
    else:
      options["variant"] = args.variant
      task = "mbpp_execution"
    examples = tasks.load_task_examples(task, split, data_dir=args.data_dir,
                                        manual_dir=args.manual_dir, **options)
    chosen = [e for e in examples if e["task_id"] == args.task_id
              and e.get("test_index", 0) == args.test_index]
  else:
    examples = tasks.load_task_examples("mathqa", args.split or "validation",
                                        data_dir=args.data_dir,
                                        manual_dir=args.manual_dir, **options)
    chosen = examples[args.index:args.index + 1]
  if not chosen:
    raise SystemExit("no such example")
  return chosen[0]


if __name__ == "__main__":
  main()
