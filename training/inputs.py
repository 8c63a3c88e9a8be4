"""From config.data to per-process grain iterators, and the tokenizer a run uses.

Tasks (config.data.task):
  python_code      pretraining on Python source files (data/code_corpus.py); loss on all tokens
  mbpp_synthesis   MBPP text + tests -> program (data/tasks.py); loss on the program only
  mbpp_execution   MBPP program + input -> output (data/tasks.py); loss on the output only
  mathqa           MathQA-Python problem -> program (data/tasks.py)
Each returns records {"prompt", "target"}; data/pipeline.py turns them into batches.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
from absl import logging

from data import pipeline
from data.tokenizer import Tokenizer, train_tokenizer
from model import run_dir
from training.data_checkpoint import ShardedIterator

PRETRAIN_TASKS = ("python_code",)
TASKS = PRETRAIN_TASKS + ("mbpp_synthesis", "mbpp_execution", "mathqa")
# Split names per task family: (train split, validation split).
_SPLITS = {"python_code": ("train", "validation"), "mbpp_synthesis": ("train", "validation"),
           "mbpp_execution": ("train", "validation"), "mathqa": ("train", "validation")}


def load_records(data_cfg: ml_collections.ConfigDict, split: str) -> Any:
  """A random-access sequence of {"prompt", "target"} records for one split."""
  task = data_cfg.task
  if task not in TASKS:
    raise ValueError(f"config.data.task={task!r} is not a known task; choose one of {TASKS}")
  data_dir = data_cfg.data_dir or None
  if task == "python_code":
    from data.code_corpus import load_code_corpus  # pylint: disable=g-import-not-at-top
    return load_code_corpus(split, data_dir=data_dir, source_dir=data_cfg.source_dir or None)
  from data import tasks  # pylint: disable=g-import-not-at-top
  # Train and validation use the same format (the finetuning one: bare query, no shots), so
  # the validation loss measures what training optimises.
  options = ({"mathqa_compat": data_cfg.get("mathqa_compat", "faithful")} if task == "mathqa"
             else {"num_shots": tasks.FINETUNING_NUM_SHOTS})
  return tasks.load_task_examples(task, split, data_dir=data_dir,
                                  manual_dir=data_cfg.manual_dir or None, **options)


def split_names(task: str) -> tuple[str, str]:
  return _SPLITS[task]


def shards_of_this_process(num_shards: int) -> list[int]:
  """The logical data shards this process reads: a contiguous block, in process order."""
  process_count = jax.process_count()
  num_shards = num_shards or process_count
  if num_shards % process_count:
    raise ValueError(f"config.data.num_shards={num_shards} must be a multiple of the number "
                     f"of processes ({process_count})")
  per_process = num_shards // process_count
  first = jax.process_index() * per_process
  return list(range(first, first + per_process))


def make_iterators(config: ml_collections.ConfigDict, tokenizer: Tokenizer
                   ) -> tuple[Any, Any]:
  """(train iterator, a function returning a fresh validation iterator), per process."""
  process_count = jax.process_count()
  if config.batch_size % process_count:
    raise ValueError(f"config.batch_size={config.batch_size} must be divisible by the number "
                     f"of processes ({process_count})")
  local_batch = config.batch_size // process_count
  shard_indices = shards_of_this_process(config.data.num_shards)
  train_split, eval_split = split_names(config.data.task)
  common = dict(tokenizer=tokenizer, seq_len=config.seq_len, batch_size=local_batch,
                shard_indices=shard_indices,
                shard_count=config.data.num_shards or process_count,
                packing=config.data.packing)
  train_iter = ShardedIterator(
      iter(pipeline.make_multi_shard_dataset(
          load_records(config.data, train_split), seed=config.data.shuffle_seed, shuffle=True,
          num_epochs=None, **common)),
      shard_indices, common["shard_count"])
  eval_records = load_records(config.data, eval_split)

  def make_eval_iter():
    return iter(pipeline.make_multi_shard_dataset(eval_records, seed=0, shuffle=False,
                                                  num_epochs=None, **common))
  return train_iter, make_eval_iter


def prepare_tokenizer(config: ml_collections.ConfigDict, workdir: str,
                      vocab_size: int) -> Tokenizer:
  """The run's tokenizer, copied into WORKDIR/tokenizer.model so later stages find it.

  With no config.tokenizer.path, a pretraining run trains one (deterministically) on its own
  train split the first time, and reuses WORKDIR/tokenizer.model on restart.
  """
  local_path = os.path.join(workdir, run_dir.TOKENIZER_FILE)
  if config.tokenizer.path:
    if not os.path.exists(config.tokenizer.path):
      raise FileNotFoundError(f"config.tokenizer.path={config.tokenizer.path} does not exist")
    if jax.process_index() == 0 and not os.path.exists(local_path):
      # An imported tokenizer's import.json (special ids, BOS policy) travels with it.
      run_dir.install_tokenizer(config.tokenizer.path, workdir)
    tokenizer = run_dir.load_tokenizer(config.tokenizer.path)
  elif os.path.exists(local_path):
    tokenizer = run_dir.load_tokenizer(local_path)
  elif config.data.task in PRETRAIN_TASKS:
    records = load_records(config.data, split_names(config.data.task)[0])
    count = min(len(records), config.tokenizer.train_max_files)
    logging.info("Training a %d-piece tokenizer on %d files -> %s", vocab_size, count,
                 local_path)
    texts = (records[i]["target"] for i in range(count))
    prefix = os.path.join(workdir, f"tokenizer.process{jax.process_index()}")
    tokenizer = train_tokenizer(texts, prefix, vocab_size=vocab_size)
    if jax.process_index() == 0:
      run_dir.install_tokenizer(prefix + ".model", workdir)
  else:
    raise ValueError(f"config.data.task={config.data.task!r} needs a tokenizer: set "
                     "config.tokenizer.path, or config.init_from a run whose workdir has "
                     f"{run_dir.TOKENIZER_FILE}")
  if tokenizer.vocab_size != vocab_size:
    raise ValueError(f"tokenizer {local_path} has {tokenizer.vocab_size} pieces but the model's "
                     f"vocab_size is {vocab_size}; use the tokenizer the model was trained with "
                     "or set config.model_overrides.vocab_size")
  return tokenizer
