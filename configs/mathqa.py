"""Finetune a base model on MathQA-Python (problem text with numbers -> straight-line program).

    python train.py --config=configs/mathqa.py --workdir=runs/ft-mathqa \
        --config.init_from=runs/pretrain --config.data.manual_dir=DIR_WITH_MathQA_FILES

MathQA's train.json (29,837 problems) is needed for the train split: it is downloaded when
online; offline, put the official MathQA files (train.json, dev.json, test.json,
challenge_test.json, constant_list.txt, operation_list.txt) in `data.manual_dir`. The shared
copy in ../shared/data/mathqa/raw lacks train.json, so this config fails there with a message
saying so (dev/test conversion works; see README "Datasets").

Cost: not run here (no train.json on these machines); a step has the shape of the MBPP
finetunes (16 x 512 tokens), which run at ~0.5 steps/s on the 2-core CPU, so expect about 35
minutes for the 1,000 steps.

Data: `data.mathqa_compat="trax"` (the default) converts MathQA as the paper's own code did
(data/mathqa_trax.py): the paper's split, dev 2,822 / test 1,883 problems. `"faithful"` reads the
operations as MathQA defines them and keeps more problems (dev 2,839 / test 1,893); its numbers
are not comparable with the paper's (README "Datasets").

What to expect: the paper finetunes its models on ~19k converted training problems; a tiny model
learns the program format quickly (validation loss well below the base model's) but solves
few problems.
"""
from configs import finetune_base


def get_config():
  config = finetune_base.get_config("mathqa", num_train_steps=1000, eval_every=200)
  config.data.mathqa_compat = "trax"  # the paper's data; or "faithful" (see the docstring)
  return config
