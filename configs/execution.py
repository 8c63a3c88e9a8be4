"""Finetune a base model on MBPP execution prediction (program + input -> output).

    python train.py --config=configs/execution.py --workdir=runs/ft-execution \
        --config.init_from=runs/pretrain --config.data.manual_dir=../shared/data/mbpp

One example per parseable test assert of the train split (task ids 601-974): the prompt shows
the problem's code and the call, the target is the expected value's source text followed by
`[DONE]` (data/execution_examples.py; the variant with description and example tests is chosen
with the prompt options in data/tasks.py). Loss on the target only; validation on 511-600.

Cost, measured on the 2-core CPU these configs are developed on (2026-12-01): 16 x 512
tokens a step at about 4,300 tokens/s, i.e. ~0.5 steps/s; 100 steps of it (the reproduce run's
finetune, compile, evals and checkpoints included) took 216 s, so these 300 steps take
about 11 minutes. After 100 steps from the 600-step tiny base, validation loss was 2.18, and
greedy answers were right for 2 of 40 test asserts (5%, both the value 1).

What to expect: execution targets are short (a few tokens), so each packed batch holds many
examples; validation loss drops quickly and then flattens. Compare against configs/synthesis.py
with eval.py to reproduce the paper's objective comparison.
"""
from configs import finetune_base


def get_config():
  return finetune_base.get_config("mbpp_execution", num_train_steps=300, eval_every=50)
