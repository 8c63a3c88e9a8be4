"""Checks of a resolved train.py or eval.py config, before anything is loaded.

Each check returns None or one line naming the key, its bad value and what is allowed, e.g.
`--config.seq_len=0: must be a positive integer`; launch/commands.py turns it into exit
status 2. What needs the devices (the mesh's divisibility) or the data (a corpus with no
files) is checked where those are known, in training/ and data/.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import ml_collections

from data import prompt_fit, tasks
from model import config as model_config
from model.presets import PRESETS

# training/inputs.py's TASKS (launch/ may not import training/; a test keeps them equal).
TRAIN_TASKS = ("python_code",) + tasks.TRAINABLE_TASK_NAMES
DECAYS = ("cosine", "linear", "constant")  # training/optimizer.py
DTYPES = model_config._DTYPES  # pylint: disable=protected-access
MBPP_SPLITS = ("prompt", "test", "validation", "train")       # data/mbpp.py SPLIT_TASK_IDS
MATHQA_SPLITS = ("train", "validation", "test", "challenge_test")  # data/mathqa.py
HUMANEVAL_SPLITS = ("test",)           # data/humaneval.py, data/evalplus.py SPLITS
MBPP_CONFIGS = ("full", "sanitized")
MATHQA_COMPAT = ("faithful", "trax")
# execution/config.py MIN_MEMORY_MB: below it the interpreter that runs a program cannot start.
SANDBOX_MIN_MEMORY_MB = 64
# Fields of ModelConfig whose values are names from a fixed list.
_MODEL_CHOICES = {"dtype": DTYPES, "remat": model_config.REMAT_POLICIES,
                  "kernels": model_config.KERNELS, "attention_impl": model_config.ATTENTION_IMPLS,
                  "mlp_activation": model_config._ACTIVATIONS}  # pylint: disable=protected-access


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  node: Any = config
  for part in key.split("."):
    node = node[part]
  return node


def _show(value: Any) -> str:
  return repr(value) if isinstance(value, str) else str(value)


def _check(config: ml_collections.ConfigDict,
           rules: list[tuple[str, Callable[[Any], bool], str]]) -> str | None:
  """The first key (present in `config`) whose value fails its rule, as one line."""
  for key, ok, allowed in rules:
    try:
      value = _get(config, key)
    except (KeyError, AttributeError):
      continue  # a config without this key (e.g. an older experiment file) is not checked
    if not ok(value):
      return f"--config.{key}={_show(value)}: {allowed}"
  return None


def _positive_int(value: Any) -> bool:
  return _is_int(value) and value > 0


def _non_negative_int(value: Any) -> bool:
  return _is_int(value) and value >= 0


def _one_of(choices: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
  return (lambda value: value in choices), f"must be one of {', '.join(choices)}"


POSITIVE_INT = "must be a positive integer"
NON_NEGATIVE_INT = "must be an integer >= 0"


def _model_problem(config: ml_collections.ConfigDict) -> str | None:
  overrides = {k: v for k, v in config.model_overrides.to_dict().items() if v is not None} \
      if "model_overrides" in config else {}
  for field, choices in _MODEL_CHOICES.items():
    if field in overrides and overrides[field] not in choices:
      return (f"--config.model_overrides.{field}={_show(overrides[field])}: must be one of "
              f"{', '.join(choices)}")
  if config.model == "init_from":
    if not config.get("init_from"):
      return ('--config.model="init_from" takes the model of config.init_from\'s checkpoint: '
              "set --config.init_from=RUN (or name a preset: " + ", ".join(PRESETS) + ")")
    return None  # the checkpoint's model config is read (and checked) when the run starts
  if config.model not in PRESETS:
    return (f"--config.model={_show(config.model)}: must be a preset ({', '.join(PRESETS)}) "
            "or init_from")
  try:
    PRESETS[config.model].replace(**overrides)
  except (TypeError, ValueError) as e:
    return f"--config.model_overrides on preset {config.model!r}: {e}"
  return None


def train_problem(config: ml_collections.ConfigDict) -> str | None:
  """Why train.py cannot run `config` (one line), or None."""
  decay, decays = _one_of(DECAYS)
  task, task_names = _one_of(TRAIN_TASKS)
  compat, compats = _one_of(MATHQA_COMPAT)
  problem = _check(config, [
      ("num_train_steps", _positive_int, POSITIVE_INT),
      ("batch_size", _positive_int, POSITIVE_INT),
      ("seq_len", _positive_int, POSITIVE_INT),
      ("grad_accum_steps", _positive_int, POSITIVE_INT),
      ("log_every", _positive_int, POSITIVE_INT),
      ("checkpoint_every", _positive_int, POSITIVE_INT),
      ("keep_checkpoints", _positive_int, POSITIVE_INT),
      ("eval_every", _non_negative_int, NON_NEGATIVE_INT + " (0 = no periodic eval)"),
      ("eval_batches", _non_negative_int, NON_NEGATIVE_INT),
      ("stop_at_step", _non_negative_int, NON_NEGATIVE_INT + " (0 = never stop early)"),
      ("seed", _is_int, "must be an integer"),
      ("optimizer.learning_rate", lambda v: _is_number(v) and v > 0,
       "must be a finite number > 0"),
      ("optimizer.warmup_steps", _non_negative_int, NON_NEGATIVE_INT),
      ("optimizer.decay", decay, decays),
      ("optimizer.end_learning_rate_fraction", lambda v: _is_number(v) and 0 <= v <= 1,
       "must be a number in [0, 1]"),
      ("optimizer.weight_decay", lambda v: _is_number(v) and v >= 0,
       "must be a finite number >= 0"),
      ("optimizer.b1", lambda v: _is_number(v) and 0 <= v < 1, "must be a number in [0, 1)"),
      ("optimizer.b2", lambda v: _is_number(v) and 0 <= v < 1, "must be a number in [0, 1)"),
      ("optimizer.eps", lambda v: _is_number(v) and v > 0, "must be a finite number > 0"),
      ("optimizer.grad_clip_norm", lambda v: _is_number(v) and v >= 0,
       "must be a finite number >= 0 (0 = no clipping)"),
      ("data.task", task, task_names),
      ("data.mathqa_compat", compat, compats),
      ("data.num_shards", _non_negative_int, NON_NEGATIVE_INT + " (0 = one per process)"),
      ("tokenizer.train_max_files", _positive_int, POSITIVE_INT),
      ("peak_flops_per_device", lambda v: _is_number(v) and v >= 0,
       "must be a finite number >= 0 (0 = no MFU column)"),
      ("device_memory_gib", lambda v: _is_number(v) and v >= 0,
       "must be a finite number >= 0 (0 = what JAX reports)"),
  ])
  if problem:
    return problem
  if config.batch_size % config.grad_accum_steps:
    return (f"--config.batch_size={config.batch_size} must be a multiple of "
            f"--config.grad_accum_steps={config.grad_accum_steps}")
  return _model_problem(config)


def _ks_ok(value: Any) -> bool:
  return (isinstance(value, (tuple, list)) and len(value) > 0
          and all(_is_int(k) and k >= 1 for k in value))


def eval_problem(config: ml_collections.ConfigDict) -> str | None:
  """Why eval.py cannot run `config` (one line), or None."""
  task, task_names = _one_of(tasks.TASK_NAMES)
  problem = _check(config, [("task", task, task_names)])
  if problem:
    return problem
  splits = {"mathqa": MATHQA_SPLITS, "humaneval": HUMANEVAL_SPLITS,
            "humaneval_plus": HUMANEVAL_SPLITS, "mbpp_plus": HUMANEVAL_SPLITS
            }.get(config.task, MBPP_SPLITS)
  split, split_names = _one_of(splits)
  mbpp_config, mbpp_configs = _one_of(MBPP_CONFIGS)
  compat, compats = _one_of(MATHQA_COMPAT)
  overflow, overflows = _one_of(prompt_fit.OVERFLOW_MODES)
  problem = _check(config, [
      ("split", split, f"{split_names} for task {config.task}"),
      ("num_samples", _positive_int, POSITIVE_INT),
      ("pass_at_k", _ks_ok, "must be positive integers, e.g. '(1,10,80)'"),
      ("max_problems", _non_negative_int, NON_NEGATIVE_INT + " (0 = all)"),
      ("slots_per_call", _non_negative_int, NON_NEGATIVE_INT + " (0 = sized to the device)"),
      ("batch_size", lambda v: v is None or _non_negative_int(v),
       NON_NEGATIVE_INT + " (the old name of slots_per_call; 0 = sized to the device)"),
      ("max_prompt_len", _non_negative_int,
       NON_NEGATIVE_INT + " (0 = computed for the model and task)"),
      ("prompt_overflow", overflow, f"{overflows} (data/prompt_fit.py)"),
      ("seed", _is_int, "must be an integer"),
      ("sampling.temperature", lambda v: _is_number(v) and v >= 0,
       "must be a finite number >= 0 (0 = greedy)"),
      ("sampling.top_k", _non_negative_int, NON_NEGATIVE_INT + " (0 = off)"),
      ("sampling.top_p", lambda v: _is_number(v) and 0 < v <= 1, "must be a number in (0, 1]"),
      ("sampling.max_new_tokens", _non_negative_int,
       NON_NEGATIVE_INT + " (0 = computed for the model and task)"),
      ("data.mbpp_config", mbpp_config, mbpp_configs),
      ("data.mathqa_compat", compat, compats),
      ("sandbox.timeout_s", lambda v: _is_number(v) and v > 0,
       "must be a positive number of seconds"),
      ("sandbox.memory_mb", lambda v: _is_int(v) and v >= SANDBOX_MIN_MEMORY_MB,
       f"must be an integer >= {SANDBOX_MIN_MEMORY_MB} (the interpreter that runs a program "
       "needs that much address space)"),
      ("sandbox.workers", _non_negative_int, NON_NEGATIVE_INT + " (0 = one per CPU core)"),
      ("sandbox.screen_batch", _non_negative_int,
       NON_NEGATIVE_INT + " (0 turns the syntax screen off)"),
      ("cpu_devices", _non_negative_int, NON_NEGATIVE_INT + " (0 = one per CPU core)"),
      ("cpu_sampling_memory_mb", _non_negative_int,
       NON_NEGATIVE_INT + " (0 = a share of the host's available memory)"),
  ])
  if problem:
    return problem
  old_slots = config.get("batch_size")
  if old_slots is not None and config.slots_per_call not in (0, old_slots):
    return (f"--config.batch_size={old_slots} (the old name of slots_per_call) and "
            f"--config.slots_per_call={config.slots_per_call} disagree; set slots_per_call "
            "alone")
  if "prompt" in config:
    names = [f.name for f in dataclasses.fields(tasks.PROMPT_OPTIONS_TYPES[config.task])]
    for name, value in config.prompt.to_dict().items():
      if value is not None and name not in names:  # set but meaningless for this task
        return (f"--config.prompt.{name}={_show(value)}: task {config.task} has no such prompt "
                f"option (it takes {', '.join(sorted(names))}); leave it unset")
  return None
