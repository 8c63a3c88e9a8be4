"""MathQA-Python: programs for the 1,883 test problems of the paper's split, right when `answer`
is within 1% (relative) of the annotated answer.

    python eval.py --config=configs/eval_mathqa.py --workdir=runs/eval-mathqa \
        --config.checkpoint=runs/ft-mathqa --config.data.manual_dir=../shared/data/mathqa/raw

Data: `data.mathqa_compat="trax"` (the default) is the paper's conversion (data/mathqa_trax.py):
dev 2,822 / test 1,883 problems, the numbers the paper reports on. `"faithful"` reads MathQA's
operations as MathQA defines them and keeps dev 2,839 / test 1,893 problems; its scores are
not comparable with the paper's.

Defaults: 0-shot (the finetuned setting), 80 samples at temperature 0.5; few-shot with
`--config.prompt.num_shots=4` (and `--config.prompt.shot_indices`, `shot_seed`,
`shot_separator`: the fields of data/prompts.py's MathqaPromptOptions). Writes the same files
as eval_synthesis.py. Cost: sampling is as for eval_synthesis.py (same model, similar lengths);
scoring a MathQA program is a few arithmetic lines (all 1,883 trax-mode test programs pass in
the sandbox).
"""
from configs import eval_base


def get_config():
  config = eval_base.get_config()
  config.task = "mathqa"
  config.data.mathqa_compat = "trax"  # the paper's split (test 1,883); or "faithful" (1,893)
  config.prompt.num_shots = 0
  return config
