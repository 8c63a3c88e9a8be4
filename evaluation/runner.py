"""eval.py's logic: config -> examples -> (samples file | model sampling) -> scores -> report.

Everything that can fail on bad input (unknown task or split, malformed samples file, missing
or mismatched checkpoint, a tokenizer that does not fit the model) fails before sampling or
execution starts.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections
from absl import logging

from data.tasks import PROMPT_OPTIONS_TYPES, TASK_NAMES, load_task_examples
from evaluation.evaluate import evaluate_samples_file, finish
from evaluation.results import PAPER_KS
from evaluation.sampler import PhaseTimes, Sampler, sample_problems
from evaluation.process_zero_scorer import ProcessZeroScorer
from execution import SandboxConfig
from model import distributed, run_dir
from model.decoder import sharded_abstract_params
from model.sampling import SamplingConfig
from model.sharding import make_mesh


def prompt_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields of `config.prompt` that are set (not None), each one the task's to take."""
  if config.task not in PROMPT_OPTIONS_TYPES:
    raise ValueError(f"unknown task {config.task!r}; expected one of {TASK_NAMES}")
  names = sorted(f.name for f in dataclasses.fields(PROMPT_OPTIONS_TYPES[config.task]))
  options = {}
  for name, value in config.prompt.to_dict().items():
    if value is None:
      continue
    if name not in names:  # Set but meaningless for this task: refused, not ignored.
      raise ValueError(f"task {config.task!r} has no 'prompt.{name}' option (it takes "
                       f"{', '.join(names)}); leave --config.prompt.{name} unset")
    options[name] = tuple(value) if isinstance(value, list) else value
  return options


def load_examples(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  options = prompt_options(config)
  if config.task != "mathqa":
    options["mbpp_config"] = config.data.mbpp_config
  else:  # configs/eval_mathqa.py: "faithful" or "trax" (the paper's split).
    options["mathqa_compat"] = config.data.get("mathqa_compat", "faithful")
  examples = load_task_examples(config.task, config.split, data_dir=config.data.data_dir or None,
                                manual_dir=config.data.manual_dir or None, **options)
  if config.max_problems:
    examples = examples[:config.max_problems]
  return examples


def sandbox_config(config: ml_collections.ConfigDict) -> SandboxConfig:
  return SandboxConfig(timeout_s=config.sandbox.timeout_s, memory_mb=config.sandbox.memory_mb,
                       workers=config.sandbox.workers,
                       run_as_main=config.sandbox.run_as_main,
                       screen_batch=config.sandbox.screen_batch)


def pass_at_ks(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """config.pass_at_k: the headline ks (each reported where every problem has k samples)."""
  ks = tuple(config.get("pass_at_k", PAPER_KS))
  if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
    raise ValueError(f"config.pass_at_k must be positive integers, e.g. '(1,10,80)'; got {ks}")
  return ks


def _meta(config: ml_collections.ConfigDict, examples) -> dict[str, Any]:
  meta = {"task": config.task, "split": config.split, "model": config.meta.model,
          "objective": config.meta.objective, "num_samples": config.num_samples,
          "prompt_template_sha256": examples[0]["prompt_template_sha256"] if examples else "",
          "config": json.loads(config.to_json_best_effort())}
  return meta


def _tokenizer_path(config: ml_collections.ConfigDict) -> str:
  if config.tokenizer_path:
    return config.tokenizer_path
  candidate = run_dir.tokenizer_path(config.checkpoint)
  if not candidate:
    raise FileNotFoundError(f"no {run_dir.TOKENIZER_FILE} in the run of {config.checkpoint}; set "
                            "--config.tokenizer_path")
  return candidate


def make_sampler(config: ml_collections.ConfigDict) -> Sampler:
  """Loads the checkpoint's model, sharded on the configured mesh, and checks the tokenizer."""
  if not config.checkpoint:
    raise ValueError("set --config.checkpoint=RUN_DIR (or --config.samples_path=FILE to score "
                     "completions made elsewhere)")
  model_cfg = run_dir.load_model_config(config.checkpoint)
  tokenizer = run_dir.load_tokenizer(_tokenizer_path(config))
  if tokenizer.vocab_size != model_cfg.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces but the checkpoint's model "
                     f"has vocab_size {model_cfg.vocab_size}: they do not belong together")
  mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  if mesh.shape["fsdp"] > 1:
    logging.warning("mesh.fsdp=%d: every decode step all-gathers the fsdp-sharded weights; "
                    "to sample with a model that does not fit one device, shard it with "
                    "--config.mesh.tensor instead (README: Evaluation)", mesh.shape["fsdp"])
  graphdef, abstract = sharded_abstract_params(model_cfg, mesh)
  params = run_dir.load_params(config.checkpoint, abstract)
  return Sampler(graphdef, params, tokenizer, mesh, sampling_config(config), config.batch_size,
                 config.max_prompt_len, config.seed,
                 cpu_memory_mb=config.get("cpu_sampling_memory_mb", 0))


def sampling_config(config: ml_collections.ConfigDict) -> SamplingConfig:
  return SamplingConfig(max_new_tokens=config.sampling.max_new_tokens,
                        temperature=config.sampling.temperature, top_k=config.sampling.top_k,
                        top_p=config.sampling.top_p)


def sampler_for(config: ml_collections.ConfigDict, sampler: Sampler) -> Sampler:
  """`sampler` (its loaded params) with `config`'s sampling settings, seed and batching.

  Studies load a checkpoint once and run many eval configs against it; only a change of the
  sampling settings (static in the compiled decode loop) builds a new generate function.
  """
  changes = {"sampling": sampling_config(config), "seed": config.seed,
             "batch_size": config.batch_size, "max_prompt_len": config.max_prompt_len,
             "cpu_memory_mb": config.get("cpu_sampling_memory_mb", 0)}
  if all(getattr(sampler, k) == v for k, v in changes.items()):
    return sampler
  return dataclasses.replace(sampler, **changes)


def throughput(times: PhaseTimes, tokens: int, programs: int, screened: int
               ) -> dict[str, float]:
  """This run's speed by phase, for results.json (a resumed run counts its own part only;
  the phases overlap, see evaluation/sampler.py PhaseTimes)."""
  rate = lambda count, seconds: round(count / seconds, 1) if seconds > 0 else 0.0
  return {"wall_s": round(times.wall_s, 1),
          "sampling_s": round(times.sampling_s, 1), "tokens_generated": tokens,
          "tokens_per_s": rate(tokens, times.sampling_s),
          "execution_s": round(times.execution_s, 1), "programs_executed": programs,
          "programs_screened": screened,
          "programs_per_s": rate(programs, times.execution_s)}


def run_eval(config: ml_collections.ConfigDict, workdir: str, sampler: Sampler | None = None,
             examples: list[dict[str, Any]] | None = None) -> dict[str, Any]:
  """Samples (or reads), scores and reports one eval config in `workdir`; resumes there.

  `sampler`: an already loaded model to use instead of loading `config.checkpoint`;
  `examples`: load_examples(config), when the caller has them already (the studies in
  evaluation/studies.py check every variant's examples, then evaluate them with one model).
  Holds the workdir while it works (another eval there is refused at once: WorkdirLocked).
  """
  # Process 0 takes the lock; under jax.distributed every process stops if it cannot.
  with distributed.workdir_held(workdir):
    return _run_eval(config, workdir, sampler, examples)


def _record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """config.json: what this eval was asked to do (sweeps compare it before reusing a run)."""
  distributed.on_process_zero(lambda: run_dir.write_text(
      workdir, run_dir.CONFIG_FILE, config.to_json_best_effort(indent=2, sort_keys=True)),
      "writing config.json")


def _run_eval(config: ml_collections.ConfigDict, workdir: str, sampler: Sampler | None,
              examples: list[dict[str, Any]] | None) -> dict[str, Any]:
  if examples is None:
    examples = load_examples(config)
  if not examples:
    raise ValueError(f"no examples for task {config.task!r} split {config.split!r}")
  meta = _meta(config, examples)
  sandbox = sandbox_config(config)
  if config.samples_path:
    _record_config(config, workdir)
    return distributed.broadcast_json(distributed.on_process_zero(
        lambda: evaluate_samples_file(config.samples_path, examples, workdir, meta=meta,
                                      sandbox_config=sandbox, ks=pass_at_ks(config),
                                      samples_format=config.get("samples_format", "")),
        "scoring the samples file"))
  sampler = make_sampler(config) if sampler is None else sampler_for(config, sampler)
  _record_config(config, workdir)
  truncated_before, tokens_before = sampler.truncated_prompts, sampler.tokens_generated
  logging.info("Evaluating %d problems x %d samples from %s", len(examples), config.num_samples,
               config.checkpoint)
  with ProcessZeroScorer(workdir, sandbox,
                         expected_programs=len(examples) * config.num_samples) as scorer:
    times = sample_problems(sampler, examples, config.num_samples, scorer.done_ids,
                            scorer.score)
    records = scorer.records
    meta["throughput"] = throughput(times, sampler.tokens_generated - tokens_before,
                                    scorer.programs_executed, scorer.programs_screened)
  truncated = sampler.truncated_prompts - truncated_before
  if truncated:
    logging.warning("%d prompts were longer than max_prompt_len=%d and lost their beginning",
                    truncated, config.max_prompt_len)
  meta["truncated_prompts"] = truncated
  # One writer (process 0); every process returns its results.
  return distributed.broadcast_json(distributed.on_process_zero(
      lambda: finish(workdir, examples, records, meta=meta, sandbox_config=sandbox,
                     ks=pass_at_ks(config)), "writing the results"))
