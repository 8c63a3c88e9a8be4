"""Pretrain a base model on Python source, with no downloads.

    python train.py --config=configs/pretrain.py --workdir=runs/pretrain

The corpus is the running interpreter's standard library (every machine has one; see
data/code_corpus.py), split 98/2 into train/validation by a hash of each file's path. The first
run trains a sentencepiece tokenizer (vocabulary = the model's) on the train split and stores it
in WORKDIR/tokenizer.model; restarts reuse it and continue from the last checkpoint.

Cost, measured on the 2-core CPU these configs are developed on (2026-12-01): about 1 step/s
(4,100 tokens/s of 16 x 256), so the 2,000 steps take about 33 minutes; the reproduce run's
600 steps of the same shape took 596 s. What to expect: validation loss 8.4 at the start,
4.16 after 600 steps, 3.49 after 2,000 (README.md "What pretraining reaches" has the
curve). Larger presets: `--config.model=244m --config.batch_size=256
--config.seq_len=1024` on an accelerator, with `--config.mesh.fsdp=-1 --config.mesh.data=1` to
shard the weights.
"""
from configs import base


def get_config():
  config = base.get_config()
  config.model = "tiny"
  config.data.task = "python_code"
  config.batch_size = 16
  config.seq_len = 256
  config.num_train_steps = 2000
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps = 100
  config.log_every = 20
  config.eval_every = 250
  config.checkpoint_every = 250
  return config
