"""eval.py's logic: config -> examples -> (samples file | model sampling) -> scores -> report.

Everything that can fail on bad input (unknown task or split, malformed samples file, missing
or mismatched checkpoint, a tokenizer that does not fit the model) fails before sampling or
execution starts.

Scoring a samples file needs no JAX: the sampling side (the sampler, the model, orbax) is
imported inside the functions that sample, so `eval.py --config.samples_path=...` runs where
JAX is not installed (tests/test_jax_free.py).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from typing import TYPE_CHECKING, Any

import ml_collections
from absl import logging

from data import prompt_fit
from data.tasks import PROMPT_OPTIONS_TYPES, TASK_NAMES, load_task_examples, stop_strings
from evaluation import token_budgets
from evaluation.evaluate import evaluate_samples_file, finish
from evaluation.identity import eval_identity
from evaluation.results import PAPER_KS
from evaluation.process_zero_scorer import ProcessZeroScorer
from evaluation.throughput_ledger import ThroughputLedger
from execution import SandboxConfig
from model import run_identity
from rundir import layout, multihost

if TYPE_CHECKING:
  from evaluation.sampler import Sampler
  from decode.token_choice import SamplingConfig


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
  if config.task in ("mbpp_synthesis", "mbpp_execution"):
    options["mbpp_config"] = config.data.mbpp_config
  elif config.task == "mathqa":  # configs/eval_mathqa.py: "faithful" or "trax" (the paper's split).
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


def draws_of(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What the samples are drawn with besides the model: {seed, draw_variant,
  draw_variant_of} (evaluation/draws.py), for the sampler and results.json's meta."""
  from evaluation.draws import draw_variant, draw_variant_of  # pylint: disable=g-import-not-at-top
  # The token budget is no part of a draw variant (evaluation/draws.py): any will do here.
  token_rule = sampling_config(config, max(config.sampling.max_new_tokens, 1))
  variant_of = draw_variant_of(config.task, prompt_options(config), token_rule)
  return {"seed": config.seed, "draw_variant": draw_variant(variant_of),
          "draw_variant_of": variant_of}


def _meta(config: ml_collections.ConfigDict, examples) -> dict[str, Any]:
  meta = {"task": config.task, "split": config.split, "model": config.meta.model,
          "objective": config.meta.objective, "num_samples": config.num_samples,
          "prompt_template_sha256": examples[0]["prompt_template_sha256"] if examples else "",
          "config": json.loads(config.to_json_best_effort())}
  return meta


def _tokenizer_path(config: ml_collections.ConfigDict) -> str:
  if config.tokenizer_path:
    return config.tokenizer_path
  candidate = layout.tokenizer_path(config.checkpoint)
  if not candidate:
    raise FileNotFoundError(f"no {layout.TOKENIZER_FILE} in the run of {config.checkpoint}; set "
                            "--config.tokenizer_path")
  return candidate


def context_len(checkpoint: str) -> int | None:
  """The model's context length where it declares one: an imported checkpoint's
  max_position_embeddings (our own RoPE models have no position table, so none)."""
  metadata = layout.import_metadata(layout.run_of(checkpoint))
  length = (metadata or {}).get("max_position_embeddings")
  return int(length) if length else None


def prompt_overflow(config: ml_collections.ConfigDict) -> str:
  overflow = config.get("prompt_overflow", "drop_shots")
  prompt_fit.check_overflow(overflow)
  return overflow


def budgets(config: ml_collections.ConfigDict, examples: list[dict[str, Any]],
            completion_tokens, model_context_len: int | None) -> token_budgets.TokenBudgets:
  """max_new_tokens and max_prompt_len for `examples` (evaluation/token_budgets.py)."""
  return token_budgets.resolve(
      max_new_tokens=config.sampling.max_new_tokens, max_prompt_len=config.max_prompt_len,
      examples=examples, completion_tokens=completion_tokens, context_len=model_context_len)


def make_sampler(config: ml_collections.ConfigDict,
                 examples: list[dict[str, Any]] | None = None) -> Sampler:
  """Loads the checkpoint's model, sharded on the configured mesh, and checks the tokenizer.

  Its token budgets are those of `examples` (default: load_examples(config)); run_eval sets
  them for the examples it evaluates (sampler_for)."""
  if not config.checkpoint:
    raise ValueError("set --config.checkpoint=RUN_DIR (or --config.samples_path=FILE to score "
                     "completions made elsewhere)")
  # pylint: disable=g-import-not-at-top  (the sampling side: JAX, the model, orbax)
  from evaluation.sampler import Sampler
  from model import run_dir
  from model.decoder import sharded_abstract_params
  from model.sharding import make_mesh
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
  model_context_len = context_len(config.checkpoint)
  limits = budgets(config, load_examples(config) if examples is None else examples,
                   lambda text: len(tokenizer.encode_continuation(text)), model_context_len)
  graphdef, abstract = sharded_abstract_params(model_cfg, mesh)
  params = run_dir.load_params(config.checkpoint, abstract)
  return Sampler(graphdef, params, tokenizer, mesh,
                 sampling_config(config, limits.max_new_tokens), slots_per_call(config),
                 limits.max_prompt_len, config.seed, draws_of(config)["draw_variant"],
                 prompt_overflow(config), model_context_len,
                 cpu_memory_mb=config.get("cpu_sampling_memory_mb", 0),
                 task_stops=stop_strings(config.task))


def slots_per_call(config: ml_collections.ConfigDict) -> int:
  """config.slots_per_call, or the value of its old name, batch_size, with a warning (in a
  training config batch_size is the global batch: one name, one meaning)."""
  old = config.get("batch_size")
  if old is None:
    return config.slots_per_call
  if config.slots_per_call and config.slots_per_call != old:
    raise ValueError(f"--config.batch_size={old} and --config.slots_per_call="
                     f"{config.slots_per_call} disagree; set slots_per_call alone")
  logging.warning("eval config key batch_size is deprecated: it is slots_per_call now "
                  "(--config.slots_per_call=%d)", old)
  return old


def sampling_config(config: ml_collections.ConfigDict, max_new_tokens: int) -> SamplingConfig:
  from decode.token_choice import SamplingConfig  # pylint: disable=g-import-not-at-top
  return SamplingConfig(max_new_tokens=max_new_tokens,
                        temperature=config.sampling.temperature, top_k=config.sampling.top_k,
                        top_p=config.sampling.top_p)


def sampler_for(config: ml_collections.ConfigDict, sampler: Sampler,
                examples: list[dict[str, Any]]) -> Sampler:
  """`sampler` (its loaded params) with `config`'s sampling settings, draws, batching, stop
  strings and the token budgets of `examples`.

  Studies load a checkpoint once and run many eval configs against it; only a change of the
  sampling settings or batching builds a new generate function. A change of the draws or the
  stop strings alone (arguments of the compiled loop) keeps the compiled ones.
  """
  draws = draws_of(config)
  limits = budgets(config, examples, sampler.completion_tokens, sampler.context_len)
  changes = {"sampling": sampling_config(config, limits.max_new_tokens),
             "slots_per_call": slots_per_call(config), "max_prompt_len": limits.max_prompt_len,
             "cpu_memory_mb": config.get("cpu_sampling_memory_mb", 0)}
  # Neither the draws nor the overflow mode nor the stop strings are in the compiled
  # functions (the stop tables are arguments; one of another size compiles the loop again).
  keys = {"seed": draws["seed"], "variant": draws["draw_variant"],
          "prompt_overflow": prompt_overflow(config), "task_stops": stop_strings(config.task)}
  if any(getattr(sampler, k) != v for k, v in changes.items()):
    return dataclasses.replace(sampler, **changes, **keys)
  if all(getattr(sampler, k) == v for k, v in keys.items()):
    return sampler
  other = copy.copy(sampler)  # shares the compiled functions; the caller's keeps its draws
  for name, value in keys.items():
    setattr(other, name, value)
  return other


def run_eval(config: ml_collections.ConfigDict, workdir: str, sampler: Sampler | None = None,
             examples: list[dict[str, Any]] | None = None) -> dict[str, Any]:
  """Samples (or reads), scores and reports one eval config in `workdir`; resumes there.

  `sampler`: an already loaded model to use instead of loading `config.checkpoint`;
  `examples`: load_examples(config), when the caller has them already (the studies in
  evaluation/studies.py check every variant's examples, then evaluate them with one model).
  Holds the workdir while it works (another eval there is refused at once: WorkdirLocked).
  """
  # Process 0 takes the lock; under jax.distributed every process stops if it cannot.
  with multihost.workdir_held(workdir):
    return _run_eval(config, workdir, sampler, examples)


def _continuing(workdir: str) -> bool:
  """Whether this launch goes on with samples an earlier one scored."""
  return any(os.path.isfile(os.path.join(workdir, name)) and
             os.path.getsize(os.path.join(workdir, name)) > 0
             for name in (layout.SAMPLES_FILE, layout.RESULTS_FILE))


def _check_identity(config: ml_collections.ConfigDict, workdir: str
                    ) -> tuple[dict[str, Any], bool, dict[str, list[Any]]]:
  """(this eval's identity, whether it continues earlier work, the identity changes allowed).

  Raises IdentityMismatch (one line) when it continues a run of other settings without
  resume_mismatch=allow (model/run_identity.py); process 0 decides for all."""
  identity = eval_identity(config)
  policy = run_identity.mismatch_policy(config)

  def check() -> tuple[bool, dict[str, list[Any]]]:
    continuing = _continuing(workdir)
    return continuing, (run_identity.check(workdir, "eval", identity, policy)
                        if continuing else {})
  continuing, changes = multihost.broadcast_json(
      multihost.on_process_zero(check, "checking the run's identity"))
  return identity, continuing, changes


def _record_config(config: ml_collections.ConfigDict, workdir: str,
                   checked: tuple[dict[str, Any], bool, dict[str, list[Any]]]) -> None:
  """config.json (what this launch was asked to do; sweeps compare it before reusing a run),
  identity.json and a config_history.jsonl line for a start or a changed resume."""
  identity, continuing, changes = checked
  multihost.on_process_zero(lambda: run_identity.record(
      workdir, "eval", identity, config.to_json_best_effort(indent=2, sort_keys=True),
      resuming=continuing, step=None, identity_changes=changes), "writing config.json")


def _run_eval(config: ml_collections.ConfigDict, workdir: str, sampler: Sampler | None,
              examples: list[dict[str, Any]] | None) -> dict[str, Any]:
  if examples is None:
    examples = load_examples(config)
  if not examples:
    raise ValueError(f"no examples for task {config.task!r} split {config.split!r}")
  meta = _meta(config, examples)
  sandbox = sandbox_config(config)
  checked = _check_identity(config, workdir)  # before the model is loaded or anything runs
  if config.samples_path:
    _record_config(config, workdir, checked)
    return multihost.broadcast_json(multihost.on_process_zero(
        lambda: evaluate_samples_file(config.samples_path, examples, workdir, meta=meta,
                                      sandbox_config=sandbox, ks=pass_at_ks(config),
                                      samples_format=config.get("samples_format", "")),
        "scoring the samples file"))
  sampler = (make_sampler(config, examples) if sampler is None
             else sampler_for(config, sampler, examples))
  meta.update(draws_of(config))
  meta["token_budgets"] = budgets(config, examples, sampler.completion_tokens,
                                 sampler.context_len).report
  if meta["token_budgets"]["references_over_budget"]:
    logging.warning("max_new_tokens=%d cannot hold the reference answer of %d problems "
                    "(results.json meta.token_budgets.references_over_budget)",
                    sampler.sampling.max_new_tokens,
                    len(meta["token_budgets"]["references_over_budget"]))
  examples = sampler.fit_prompts(examples)
  fitted = prompt_fit.fit_report(examples)
  if fitted["shots_dropped"] or fitted["prompt_too_long"]:
    logging.warning("prompts over max_prompt_len=%d: %d lost whole shots, %d were not sampled "
                    "(prompt_too_long); results.json prompt_fit lists them",
                    sampler.max_prompt_len, len(fitted["shots_dropped"]),
                    len(fitted["prompt_too_long"]))
  _record_config(config, workdir, checked)
  from evaluation.call_schedule import sample_problems  # pylint: disable=g-import-not-at-top
  tokens_before = sampler.tokens_generated
  logging.info("Evaluating %d problems x %d samples from %s", len(examples), config.num_samples,
               config.checkpoint)
  # This launch's totals join the earlier launches' (meta.throughput covers the whole eval).
  ledger = ThroughputLedger(workdir, continuing=checked[1],
                            enabled=multihost.process_index() == 0)
  with ProcessZeroScorer(workdir, sandbox,
                         expected_programs=len(examples) * config.num_samples) as scorer:
    started, executing = time.perf_counter(), [0.0]

    def on_chunk(todo, completions) -> None:
      chunk_started = time.perf_counter()
      scorer.score(todo, completions)
      executing[0] += time.perf_counter() - chunk_started
      wall = time.perf_counter() - started
      ledger.update(False, wall_s=wall, sampling_s=max(wall - executing[0], 0.0),
                    tokens_generated=sampler.tokens_generated - tokens_before,
                    execution_s=executing[0], programs_executed=scorer.programs_executed,
                    programs_screened=scorer.programs_screened)
    times = sample_problems(sampler, examples, config.num_samples, scorer.done_ids, on_chunk)
    records = scorer.records
    ledger.update(True, wall_s=times.wall_s, sampling_s=times.sampling_s,
                  tokens_generated=sampler.tokens_generated - tokens_before,
                  execution_s=times.execution_s, programs_executed=scorer.programs_executed,
                  programs_screened=scorer.programs_screened)
    meta["throughput"] = ledger.combined()
  meta["prompt_overflow"] = sampler.prompt_overflow
  # One writer (process 0); every process returns its results.
  return multihost.broadcast_json(multihost.on_process_zero(
      lambda: finish(workdir, examples, records, meta=meta, sandbox_config=sandbox,
                     ks=pass_at_ks(config)), "writing the results"))
