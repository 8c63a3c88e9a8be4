"""MBPP execution prediction: greedy answers to `assert CALL == ?` for every test of the
500 test problems, scored by executing `assert CALL == PREDICTION` with the program.

    python eval.py --config=configs/eval_execution.py --workdir=runs/eval-exec \
        --config.checkpoint=runs/pretrain --config.data.manual_dir=../shared/data/mbpp

Variants (the paper's four): `--config.prompt.variant=code|code_description|code_tests|
code_description_tests`; every other field of data/prompts.py's ExecutionPromptOptions is
`--config.prompt.FIELD` too (shot_task_ids, shot_seed, shot_separator, normalize_line_endings,
num_shots). Writes the same files as eval_synthesis.py; pass@1 is the execution accuracy.
"""
from configs import eval_base


def get_config():
  config = eval_base.get_config()
  config.task = "mbpp_execution"
  config.num_samples = 1
  config.sampling.temperature = 0.0
  config.sampling.max_new_tokens = 64
  config.prompt.variant = "code"
  return config
