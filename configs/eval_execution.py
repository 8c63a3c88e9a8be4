"""MBPP execution prediction: greedy answers to `assert CALL == ?` for every test of the
500 test problems, scored by running the call with the program and comparing the value.

    python eval.py --config=configs/eval_execution.py --workdir=runs/eval-exec \
        --config.checkpoint=runs/pretrain --config.data.manual_dir=../shared/data/mbpp

Variants (the paper's four): `--config.prompt.variant=code|code_description|code_tests|
code_description_tests`; every other field of data/prompts.py's ExecutionPromptOptions is
`--config.prompt.FIELD` too (shot_task_ids, shot_seed, shot_separator, normalize_line_endings,
num_shots). Writes the same files as eval_synthesis.py; pass@1 is the execution accuracy.

An answer counts only if it is a value (a literal; an echoed call or a name scores
`invalid_prediction`) and equals what the call returns, types respected (True is not 1; 3
matches 3.0): data/execution_examples.py. Cost, measured on the 2-core CPU (2026-12-01) with
the tiny model: 40 asserts, greedy, 8-14 s (115-265 generated tokens/s); all 1,500 asserts
(2026-12-07, a loaded machine) 7-10 minutes at 1.7 GB peak resident memory (calls sized by
decode/budget.py's CPU budget; `--config.cpu_sampling_memory_mb`). What to expect there:
few-shot 1 of 40 right, after execution finetuning 2 of 40 (both the value 1).
"""
from configs import eval_base


def get_config():
  config = eval_base.get_config()
  config.task = "mbpp_execution"
  config.num_samples = 1
  config.sampling.temperature = 0.0
  config.prompt.variant = "code"
  return config
