"""Learning rate x seed sweep for MBPP synthesis finetuning of the tiny pretrained model.

    python scripts/launch.py configs/sweeps/lr_seeds.py --dry-run   # the 6 runs and commands
    python scripts/launch.py configs/sweeps/lr_seeds.py --local 2   # 2 at a time, on this machine

Needs runs/pretrain (python train.py --config=configs/pretrain.py --workdir=runs/pretrain).
Three peak learning rates x two seeds, each seed paired with its own data order (zip), so six
runs in runs/lr_seeds/lr=...,seed=...,shuffle_seed=.../. Compare the runs by the lowest
eval_loss in each metrics.jsonl; rerunning the command skips finished runs and resumes the rest.
"""
from sweeps import Sweep


def get_sweep():
  sweep = Sweep(script="train.py", config="configs/synthesis.py",
                base={"init_from": "runs/pretrain", "data.manual_dir": "../shared/data/mbpp",
                      "num_train_steps": 300})
  sweep.product({"optimizer.learning_rate": [1e-4, 3e-4, 1e-3]})
  sweep.zip(seed=[0, 1], **{"data.shuffle_seed": [0, 1]})
  return sweep
