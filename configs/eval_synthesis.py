"""MBPP program synthesis, as in the paper: 500 test problems x 80 samples at temperature 0.5,
3-shot prompts (tasks 2, 3, 4) with 3 tests shown, byte for byte lm-evaluation-harness's `mbpp`
prompts.

    python eval.py --config=configs/eval_synthesis.py --workdir=runs/eval-syn \
        --config.checkpoint=runs/pretrain --config.data.manual_dir=../shared/data/mbpp

From a finetuned run use `--config.prompt.num_shots=0 --config.meta.objective=finetuned-synthesis`
(the finetuning format). Ablations: `--config.prompt.num_tests_shown=0|1|3`,
`--config.prompt.shot_seed=S` (a seeded random 3-shot prompt), `--config.sampling.temperature`;
each as a whole study (all values, one model load, a table and a plot), and the
execution-feedback repair rounds: `python scripts/study.py --study=tests_shown|temperature|
prompt_sensitivity|repair --config=configs/eval_synthesis.py --workdir=DIR ...`.
Every field of data/prompts.py's SynthesisPromptOptions is `--config.prompt.FIELD`, e.g.
`--config.prompt.shot_task_ids='(5,6,7)'`, `--config.prompt.normalize_line_endings=true`,
`--config.prompt.shot_separator=$'\\n'` (bash quoting for a newline; default a blank line);
a field the task does not have (e.g. `variant`) is an error.
Cost, measured on the 2-core CPU (2026-12-01) with the tiny model: 40 problems x 4 samples of
up to 96 tokens sampled at 530-560 tokens/s (1.5-2.9 problems/s) and executed at 465-730
programs/s, 14-28 s in all; the sandbox runs MBPP reference programs at 530-680/s. The full
protocol (500 x 80 samples, up to 544 new tokens: the longest reference's budget) with the
tiny synthesis-finetuned model of scripts/reproduce.py took 12 min 47 s end to end with the
paged decode engine (2026-12-07, one XLA device per core, quiet machine): 3.21M tokens
sampled at 4,323 tokens/s, 39,609 programs run alongside in 6.6 s, 2.11 GB peak memory.
With `--config.sampling.max_new_tokens=256`: 8 min 46 s (5,718 tokens/s), where the engine
before it took 7 min 02 s on the same machine (2026-12-07; 335 s on 2026-12-02's); the
pretrained-only model never writes [DONE] (10.2M tokens then: 25.1 min). benchmarks/RESULTS.md
has both.
Writes samples.jsonl, results.json (pass@1/10/80, per-problem n/c, status counts, challenge
tests separately) and report.md with plots; restarting resumes. A tiny CPU model solves
almost nothing: the point there is the pipeline; pass@k needs real model sizes (or imported
weights).
"""
from configs import eval_base


def get_config():
  config = eval_base.get_config()
  config.task = "mbpp_synthesis"
  config.prompt.num_tests_shown = 3
  return config
