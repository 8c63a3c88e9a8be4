"""The training loop: config -> mesh -> state -> steps, with logging, eval and checkpoints.

`train(config, workdir)` is everything train.py does; tests call it directly. Restarting with
the same workdir resumes from the latest checkpoint (parameters, optimizer, data position), and
the continued run is bit-identical to one that never stopped.
"""
from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from model.presets import get_model_config
from data.pipeline import BATCH_KEYS
from model import run_dir, run_identity
from model.config import ModelConfig
from model.sharding import batch_sharding, make_mesh, resolve_mesh_sizes
from rundir import multihost
from training import aot, checkpointing, inputs, preemption
from training.identity import train_identity
from training.metrics import MetricsWriter, Progress, log_progress
from training.optimizer import make_optimizer
from training.state import init_state, make_layout
from training.step import make_eval_step

def resolve_model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """The preset `config.model` with `config.model_overrides`; `model="init_from"` takes the
  model of the checkpoint in config.init_from (e.g. an imported Llama/Gemma)."""
  overrides = config.model_overrides.to_dict() if "model_overrides" in config else {}
  if config.model == "init_from":
    if not config.init_from:
      raise ValueError('config.model="init_from" needs config.init_from')
    base = run_dir.load_model_config(config.init_from)
    return base.replace(**{k: v for k, v in overrides.items() if v is not None})
  return get_model_config(config.model, overrides)


class InvalidConfig(ValueError):
  """Settings that cannot work together here; train.py reports it as one line (exit 2)."""


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Fails fast, before any expensive work, on settings that cannot work together."""
  problems = []
  for key in ("num_train_steps", "batch_size", "seq_len", "grad_accum_steps", "log_every",
              "checkpoint_every", "keep_checkpoints"):
    if not isinstance(config[key], int) or config[key] <= 0:
      problems.append(f"config.{key} must be a positive integer, got {config[key]!r}")
  if config.eval_every < 0 or config.eval_batches < 0:
    problems.append("config.eval_every and config.eval_batches must be >= 0")
  if not problems:
    if config.batch_size % config.grad_accum_steps:
      problems.append(f"config.batch_size={config.batch_size} is not divisible by "
                      f"config.grad_accum_steps={config.grad_accum_steps}")
    try:
      data, fsdp, _ = resolve_mesh_sizes(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                                         num_devices)
    except ValueError as e:
      problems.append(str(e))
    else:
      micro = config.batch_size // config.grad_accum_steps
      if micro % (data * fsdp):
        problems.append(f"each microbatch has {micro} rows (batch_size / grad_accum_steps), "
                        f"which must be divisible by mesh.data x mesh.fsdp = {data * fsdp}")
  if config.data.task not in inputs.TASKS:
    problems.append(f"config.data.task={config.data.task!r} is unknown; choose one of "
                    f"{inputs.TASKS}")
  if problems:
    raise InvalidConfig("invalid config: " + "; ".join(problems))


def _global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(local[k]))
          for k in BATCH_KEYS}


def _tokenizer_source(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Finetuning from another run: use that run's tokenizer unless one is given explicitly."""
  if config.tokenizer.path or not config.init_from:
    return config
  candidate = run_dir.tokenizer_path(config.init_from)
  if candidate:
    config = ml_collections.ConfigDict(config.to_dict())
    config.tokenizer.path = candidate
  return config


def evaluate(eval_step, params, make_eval_iter, num_batches: int, sharding) -> float:
  nll_total, token_total = 0.0, 0.0
  eval_iter = make_eval_iter()
  for _ in range(num_batches):
    nll, tokens = eval_step(params, _global_batch(next(eval_iter), sharding))
    nll_total += float(nll)
    token_total += float(tokens)
  return nll_total / max(token_total, 1.0)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) a run in `workdir`; returns the last logged metrics record.

  Holds the workdir for the whole run (a second run on it is refused at once: WorkdirLocked).
  On SIGTERM / SIGINT it finishes the step in flight, saves a checkpoint of it and raises
  preemption.Preempted (train.py exits with preemption.EXIT_PREEMPTED).
  """
  with multihost.workdir_held(workdir), preemption.StopSignals() as stop:
    return _train(config, workdir, stop)


def _train(config: ml_collections.ConfigDict, workdir: str,
           stop: preemption.StopSignals) -> dict[str, Any]:
  validate_config(config, jax.device_count())
  model_cfg = resolve_model_config(config)
  # A resume must be the run its workdir holds (model/run_identity.py): checked before any
  # expensive work, recorded only once the restore below has succeeded.
  identity = train_identity(config)
  identity_changes = run_identity.check(
      workdir, "train", identity, run_identity.mismatch_policy(config)
  ) if run_dir.checkpoint_steps(workdir) else {}
  mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  is_chief = jax.process_index() == 0
  logging.info("Mesh %s over %d devices (%d processes); model %s", dict(mesh.shape),
               jax.device_count(), jax.process_count(), config.model)

  tokenizer = inputs.prepare_tokenizer(_tokenizer_source(config), workdir, model_cfg.vocab_size)
  tx, schedule = make_optimizer(config.optimizer, config.num_train_steps)
  layout = make_layout(model_cfg, tx, mesh)
  train_iter, make_eval_iter = inputs.make_iterators(config, tokenizer)
  data_sharding = batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  if stop.requested:  # a signal during setup: stop before the compile and the restore
    raise preemption.Preempted(None, stop.signal_name, False, 0.0, stop.seconds_since_signal())
  # The step as it will run, compiled now from abstract arrays: a run whose step cannot fit
  # in device memory is refused before any state is allocated (training/aot.py).
  train_step = aot.jit_train_step(layout, schedule, config.grad_accum_steps, data_sharding)
  aot.check_fits(train_step, layout, config.batch_size, config.seq_len, data_sharding,
                  config.get("device_memory_gib", 0.0))

  manager = checkpointing.make_manager(workdir, config.keep_checkpoints,
                                       config.async_checkpointing)
  # The newest checkpoint that restores (verified as it is read; corrupt ones are set aside).
  state = checkpointing.restore_latest(manager, layout.abstract_state, train_iter)
  restored = state is not None
  if state is None and config.init_from:
    logging.info("Initialising parameters from %s", config.init_from)
    params = run_dir.load_params(config.init_from, layout.abstract_state["params"])
    state = init_state(layout, config.seed, params)
  elif state is None:
    state = init_state(layout, config.seed)
  start_step = int(state["step"])
  if is_chief:  # only now: a restart refused above must leave the run's metadata as it was
    run_identity.record(workdir, "train", identity,
                        config.to_json_best_effort(indent=2, sort_keys=True),
                        resuming=restored, step=start_step, identity_changes=identity_changes)
    run_dir.write_text(workdir, run_dir.MODEL_CONFIG_FILE, model_cfg.to_json())

  with jax.set_mesh(mesh):
    eval_step = jax.jit(make_eval_step(layout.graphdef),
                        in_shardings=(layout.param_shardings, data_sharding),
                        out_shardings=replicated)

  writer = MetricsWriter(os.path.join(workdir, run_dir.METRICS_FILE), start_step,
                         enabled=is_chief, config=config)
  progress = Progress(start_step, config.num_train_steps)
  tokens_per_step = config.batch_size * config.seq_len
  flops_per_token = model_cfg.flops_per_token(config.seq_len)
  stop_at = config.stop_at_step or config.num_train_steps
  record: dict[str, Any] = {}
  step = start_step
  if stop.requested:  # the signal came before any step ran: nothing new to save
    manager.close()
    raise preemption.Preempted(step, stop.signal_name, False, 0.0, stop.seconds_since_signal())
  in_flight = None  # the previous step's metrics, until that step has finished
  with jax.set_mesh(mesh):
    while step < min(config.num_train_steps, stop_at):
      batch = _global_batch(next(train_iter), data_sharding)
      state, metrics = train_step(state, batch)
      # At most one step queued behind the running one: without this wait the loop runs up to
      # log_every steps ahead of the device, and a SIGTERM would wait for all of them.
      if in_flight is not None:
        jax.block_until_ready(in_flight)
      in_flight = metrics
      step += 1
      progress.add_tokens(tokens_per_step)
      is_last = step == config.num_train_steps
      if step % config.log_every == 0 or is_last:
        record = {k: float(v) for k, v in jax.device_get(metrics).items()}
        record.update(step=step, total_steps=config.num_train_steps, **progress.report(step))
        if config.peak_flops_per_device:
          record["mfu"] = (record["tokens_per_sec"] * flops_per_token /
                           (config.peak_flops_per_device * jax.device_count()))
        if config.eval_batches and ((config.eval_every and step % config.eval_every == 0)
                                    or is_last):
          started = time.perf_counter()
          record["eval_loss"] = evaluate(eval_step, state["params"], make_eval_iter,
                                         config.eval_batches, data_sharding)
          progress.pause(time.perf_counter() - started)
        writer.write(record)
        log_progress(record)
      elif (config.eval_batches and config.eval_every and step % config.eval_every == 0):
        started = time.perf_counter()
        writer.write({"step": step, "eval_loss": evaluate(
            eval_step, state["params"], make_eval_iter, config.eval_batches, data_sharding)})
        progress.pause(time.perf_counter() - started)
      saved = step % config.checkpoint_every == 0 or is_last or step == stop_at
      if saved:
        checkpointing.save(manager, step, state, train_iter, model_cfg, force=True)
      # Asked after every step by every process (the multi-host protocol needs each step).
      if not is_last and stop.should_stop(step):
        started = time.perf_counter()
        if not saved:
          checkpointing.save(manager, step, state, train_iter, model_cfg, force=True)
        manager.wait_until_finished()
        manager.close()
        raise preemption.Preempted(step, stop.signal_name, True, time.perf_counter() - started,
                                   stop.seconds_since_signal())
  manager.wait_until_finished()
  manager.close()
  writer.close()
  if step >= config.num_train_steps:
    logging.info("Finished %d steps in %s", step, workdir)
  return record
