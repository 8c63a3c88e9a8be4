"""MathQA-Python: programs for the 1,893 converted test problems, right when `answer` is within
1% (relative) of the annotated answer.

    python eval.py --config=configs/eval_mathqa.py --workdir=runs/eval-mathqa \
        --config.checkpoint=runs/ft-mathqa --config.data.manual_dir=../shared/data/mathqa/raw

Defaults: 0-shot (the finetuned setting), 80 samples at temperature 0.5; few-shot with
`--config.prompt.num_shots=4`. Writes the same files as eval_synthesis.py.
"""
from configs import eval_base


def get_config():
  config = eval_base.get_config()
  config.task = "mathqa"
  config.prompt.num_shots = 0
  del config.prompt.normalize_line_endings  # MathQA text has no \r\n to normalise
  config.sampling.max_new_tokens = 256
  return config
