"""MBPP+ (EvalPlus v0.2.0, 378 problems), scored as evalplus 0.3.1 scores it (see
configs/eval_humaneval_plus.py for the rules; MBPP+ adds its input retyping into tuples, sets
and complex numbers, its set-equality and not-None oracles and the alternative formulas of
tasks 558 and 581). Prompts are EvalPlus's (`prompt.strip() + "\\n"`: the task's description
and one test in a docstring), zero-shot; completions stop at EvalPlus's MBPP stop sequences.

    python eval.py --config=configs/eval_mbpp_plus.py --workdir=runs/eval-mbppplus \
        --config.checkpoint=runs/pretrain --config.data.manual_dir=../shared/data/evalplus

or `--config.samples_path=samples.jsonl` (EvalPlus's `solution`/`completion` lines with
Mbpp/N ids). results.json: `pass_at_k` is EvalPlus's "base", `challenge.pass_at_k` its
"base + extra tests".

Cost: the 378 reference solutions as samples, base and base+plus, took 62 s on the 2-core
CPU (2026-12-07).
Broken upstream: Mbpp/255's plus inputs (combinations of up to 1.7M tuples) exceed the memory
limit: its reference program is killed on them (at 4 GiB, also at 8 GiB), so every sample fails
"base + extra tests", as even its reference solution does in evalplus 0.3.1 itself (base pass,
plus fail: checked with its evaluator).
"""
from configs import eval_humaneval_plus


def get_config():
  config = eval_humaneval_plus.get_config()
  config.task = "mbpp_plus"
  return config
