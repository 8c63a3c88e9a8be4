"""The draw variant (evaluation/draws.py): what a study varies goes into the draws' key, the
defaults fold nothing in, and a variant's sampler keeps the compiled functions."""
import json
import math

import jax
import pytest
from flax import nnx

from configs import eval_execution, eval_mathqa, eval_synthesis
from evaluation import runner, studies
from evaluation.sampler import Sampler, problem_draw_key
from model.config import ModelConfig
from model.decoder import Decoder
from model.sharding import make_mesh
from tests.scripted_sampler import ScriptedSampler


@pytest.mark.parametrize("module", [eval_synthesis, eval_execution, eval_mathqa])
def test_the_default_configs_fold_nothing_in(module):
  config = module.get_config()
  assert runner.draws_of(config) == {"seed": 0, "draw_variant": 0, "draw_variant_of": {}}
  # Neither the token budget nor the number of samples: more of either extends the samples.
  config.sampling.max_new_tokens += 1
  config.num_samples += 1
  config.seed = 5
  assert runner.draws_of(config) == {"seed": 5, "draw_variant": 0, "draw_variant_of": {}}


def test_every_variant_of_a_study_draws_its_own():
  config = eval_synthesis.get_config()
  for name, study in studies.STUDIES.items():
    variants = [runner.draws_of(studies.variant_config(config, study.key, value))
                for value in study.values]
    numbers = [v["draw_variant"] for v in variants]
    # A value equal to the default (3 tests shown, T = 0.5) draws what the default does.
    section, field = study.key.split(".")
    assert [n == 0 for n in numbers] == [v == config[section][field] for v in study.values]
    assert len(set(numbers)) == len(numbers), name
  shot_seed_3 = studies.variant_config(config, "prompt.shot_seed", 3)
  assert runner.draws_of(shot_seed_3)["draw_variant_of"] == {"prompt.shot_seed": 3}
  # The same config, the same variant (a rerun, or eval.py with the variant's config).
  assert runner.draws_of(shot_seed_3) == runner.draws_of(
      studies.variant_config(eval_synthesis.get_config(), "prompt.shot_seed", 3))
  # Greedy decoding draws nothing: its sampling settings make no variant.
  greedy = studies.variant_config(config, "sampling.temperature", 0.0)
  greedy.sampling.top_k = 40
  assert runner.draws_of(greedy)["draw_variant"] == 0


def test_a_variant_config_gets_the_same_sampler_with_its_own_draws():
  config = eval_synthesis.get_config()
  sampler = runner.sampler_for(config, ScriptedSampler(lambda p, s: ""), [])
  assert runner.sampler_for(config, sampler, []) is sampler
  variant = runner.sampler_for(
      studies.variant_config(config, "prompt.shot_seed", 3), sampler, [])
  assert variant is not sampler and sampler.variant == 0
  assert variant.variant == runner.draws_of(
      studies.variant_config(config, "prompt.shot_seed", 3))["draw_variant"] != 0
  assert variant.calls is sampler.calls  # a shallow copy: what it compiled is shared


class _CharTokenizer:
  """A character per token in; token ids out, so a completion spells the tokens drawn."""
  vocab_size, eos_id = 64, 1

  def encode_prompt(self, text):
    return [2 + ord(c) % 62 for c in text]

  def encode_continuation(self, text):
    return [2 + ord(c) % 62 for c in text]

  def decode(self, ids):
    return " ".join(map(str, ids))


def char_sampler(sampling, slots_per_call, max_prompt_len):
  """A Sampler of a small random model on one device, a character per token (_CharTokenizer)."""
  cfg = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, d_ff=64)
  graphdef, state = nnx.split(Decoder(cfg, nnx.Rngs(0)))
  return Sampler(graphdef, nnx.to_pure_dict(state), _CharTokenizer(),
                 make_mesh(devices=jax.devices()[:1]), sampling, slots_per_call, max_prompt_len)


def _agreement(first, second, k):
  """Of the pairs of samples of a problem, one from each dict ({(id, index): completion}),
  the shares whose first k tokens agree: (same sample index, other indices)."""
  counts = {True: [0, 0], False: [0, 0]}
  for (problem, i), one in first.items():
    for (problem2, j), two in second.items():
      if problem == problem2:
        counts[i == j][0] += one.split()[:k] == two.split()[:k]
        counts[i == j][1] += 1
  return counts[True][0] / counts[True][1], counts[False][0] / counts[False][1], counts[True][1]


def test_prompt_variants_share_no_draws(mbpp_dirs):
  """Two of the prompt-ensemble study's prompts, sampled by a tiny random model as the study
  samples them: sample i of one prompt agrees with sample i of the other no more often than
  with its other samples, which are independent draws. Under one key for both, sample i of
  each consumed the same uniforms and nearly every such pair started with the same token."""
  config = eval_synthesis.get_config()
  config.data.manual_dir, config.data.data_dir = mbpp_dirs["manual_dir"], mbpp_dirs["data_dir"]
  config.update({"max_problems": 4, "num_samples": 10, "slots_per_call": 8,
                 "max_prompt_len": 4096})  # a character per token: 3-shot prompts are long
  # T = 1 on a random model: nearly uniform draws, so the same uniform gives the same token
  # even where the prompts differ, and two independent draws rarely agree.
  config.sampling.max_new_tokens, config.sampling.temperature = 5, 1.0
  sampler = char_sampler(runner.sampling_config(config, 5), config.slots_per_call,
                         config.max_prompt_len)
  variants = [studies.variant_config(config, "prompt.shot_seed", s) for s in (0, 1)]
  prompts = [runner.load_examples(v) for v in variants]

  def samples(examples, variant):
    completions = runner.sampler_for(variant, sampler, examples).sample(
        [e["prompt"] for e in examples], [problem_draw_key(e["id"]) for e in examples],
        config.num_samples)
    return {(e["id"], i): c for e, texts in zip(examples, completions)
            for i, c in enumerate(texts)}

  first, second = samples(prompts[0], variants[0]), samples(prompts[1], variants[1])
  for k in (1, 3):
    same, other, pairs = _agreement(first, second, k)
    # What independent pairs give, with room for chance (a binomial's 3 sigma, and one pair).
    assert same <= other + 3 * math.sqrt(other / pairs) + 1 / pairs, (k, same, other)
  # The measure sees shared draws: the second prompts under the first variant's key.
  same, other, _ = _agreement(first, samples(prompts[1], variants[0]), 1)
  assert same > 0.5 > other, (same, other)
