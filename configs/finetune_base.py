"""Shared defaults of the finetuning configs (synthesis.py, execution.py, mathqa.py)."""
from configs import base


def get_config(task: str, num_train_steps: int, eval_every: int):
  """A finetuning run of `task` from the base model in runs/pretrain (override init_from)."""
  config = base.get_config()
  config.init_from = "runs/pretrain"
  config.data.task = task
  config.batch_size = 16
  config.seq_len = 512
  config.num_train_steps = num_train_steps
  config.optimizer.learning_rate = 3e-4
  config.optimizer.warmup_steps = max(num_train_steps // 20, 1)
  config.optimizer.weight_decay = 0.0
  config.log_every = 10
  config.eval_every = eval_every
  config.eval_batches = 4
  config.checkpoint_every = eval_every
  return config
