"""Defaults for eval.py; the eval_*.py configs start from these. See README "Evaluation"."""
import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "mbpp_synthesis"       # mbpp_synthesis | mbpp_execution | mathqa
  config.split = "test"                # MBPP test = task ids 11-510 (the paper's 500)
  config.checkpoint = ""               # a train.py workdir, its checkpoints/ or a step folder
  config.tokenizer_path = ""           # default: tokenizer.model of the checkpoint's run
  config.samples_path = ""             # score {"task_id", "completion"} lines; no model
  config.max_problems = 0              # 0 = all; >0 for quick looks
  config.num_samples = 80              # per problem (the paper: 80)
  config.batch_size = 16               # rows (problem x sample) per generate call
  config.max_prompt_len = 1024         # longer prompts keep their end
  config.seed = 0
  config.sampling = ml_collections.ConfigDict()
  config.sampling.temperature = 0.5    # the paper's; 0 = greedy
  config.sampling.top_k = 0
  config.sampling.top_p = 1.0
  config.sampling.max_new_tokens = 256
  config.prompt = ml_collections.ConfigDict()   # fields of data/prompts.py *PromptOptions
  config.prompt.num_shots = 3
  config.prompt.shot_seed = config_dict.placeholder(int)
  config.prompt.normalize_line_endings = False
  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ""
  config.data.manual_dir = ""          # e.g. ../shared/data/mbpp (offline)
  config.data.mbpp_config = "full"     # or "sanitized"
  config.sandbox = ml_collections.ConfigDict()
  config.sandbox.timeout_s = 10.0
  config.sandbox.memory_mb = 1024
  config.sandbox.workers = 0           # 0 = one per core
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  config.mesh.tensor = 1
  config.meta = ml_collections.ConfigDict()     # recorded in results.json for compare.py
  config.meta.model = ""
  config.meta.objective = "few-shot"
  return config
