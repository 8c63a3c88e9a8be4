"""The paper's objective comparison: pretrain per model size, finetune each base on MBPP
synthesis and on execution prediction, then evaluate the synthesis finetunes (pass@k).

    python scripts/launch.py configs/sweeps/objectives.py --dry-run
    python scripts/launch.py configs/sweeps/objectives.py --slurm runs/slurm/objectives
    bash runs/slurm/objectives/submit.sh

Three stages, each a SLURM array job that waits for the one it starts from:
  pretrain   runs/objectives/pretrain/model=M          2 nodes each (jax.distributed)
  finetune   runs/objectives/finetune/config=synthesis|execution,model=M  (init_from pretrain)
  eval       runs/objectives/eval/model=M               (checkpoint = the synthesis finetune)
Then `python scripts/compare.py runs/objectives/eval` tabulates pass@k by model size. Adjust
the SLURM resources (`slurm=`) to your cluster. On one machine, drop nodes= and use --local 1.
"""
from sweeps import Sweep, WorkdirOf

MODELS = ["244m", "1b"]
MBPP = "../shared/data/mbpp"


def get_sweep():
  pretrain = Sweep(name="pretrain", script="train.py", config="configs/pretrain.py",
                   base={"mesh.fsdp": -1, "mesh.data": 1}, nodes=2,
                   slurm={"time": "24:00:00"})
  pretrain.product(model=MODELS)

  finetune = Sweep(name="finetune", script="train.py", config="configs/synthesis.py",
                   base={"init_from": WorkdirOf(pretrain, match=("model",)),
                         "data.manual_dir": MBPP})
  finetune.product(config=["configs/synthesis.py", "configs/execution.py"], model=MODELS)

  evaluate = Sweep(name="eval", script="eval.py", config="configs/eval_synthesis.py",
                   base={"checkpoint": WorkdirOf(finetune, match={"model": "meta.model"},
                                                 where={"config": "configs/synthesis.py"}),
                         "prompt.num_shots": 0, "meta.objective": "finetuned-synthesis",
                         "data.manual_dir": MBPP})
  evaluate.product({"meta.model": MODELS})
  return [pretrain, finetune, evaluate]
