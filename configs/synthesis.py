"""Finetune a base model on MBPP program synthesis (the paper's Section 4.3 objective).

    python train.py --config=configs/synthesis.py --workdir=runs/ft-synthesis \
        --config.init_from=runs/pretrain --config.data.manual_dir=../shared/data/mbpp

Inputs are the train split (task ids 601-974, 374 problems) rendered in the paper's format:
`You are an expert Python programmer, and here is your task: {text} Your code should pass these
tests:\n\n{tests}\n[BEGIN]\n` with no few-shot examples (data/tasks.py FINETUNING_NUM_SHOTS);
the loss covers only the target `{code}\n[DONE]` and the end-of-sequence token. Validation
loss is on task ids 511-600. `init_from` gives the base model and its tokenizer; without
`data.manual_dir` the official MBPP files are downloaded (and their checksums verified).

Cost, measured on the 2-core CPU these configs are developed on (2026-12-01): 16 x 512
tokens a step at about 4,300 tokens/s, i.e. ~0.5 steps/s; 100 steps of it (the reproduce run's
finetune, compile, evals and checkpoints included) took 221 s, so these 300 steps take
about 11 minutes. After those 100 steps from the 600-step tiny base, validation loss was 3.81.

What to expect: with the tiny preset pretrained by configs/pretrain.py, validation loss falls
for the first few hundred steps (374 short problems: a few epochs) and then rises as the model
memorises the train split; keep the checkpoint with the lowest eval_loss in metrics.jsonl.
Evaluate with eval.py (pass@k on the test split).
"""
from configs import finetune_base


def get_config():
  return finetune_base.get_config("mbpp_synthesis", num_train_steps=300, eval_every=50)
