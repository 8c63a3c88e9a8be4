"""How an evaluation's problems become sampling calls (evaluation/call_schedule.py): by prompt
length, fixed by the full list, as many problems as the memory budget allows, padded to no
more than the largest call of their shape."""
import jax
import numpy as np
import pytest

from data import prompt_fit
from evaluation import call_schedule
from evaluation import sampler as sampler_lib
from decode import budget as decode_budget
from model.config import ModelConfig
from model.decoder import abstract_model
from decode.prompt_rows import bucket_length, split_shared_prefix
from decode.token_choice import SamplingConfig
from model.sharding import make_mesh
from decode.engine import problem_rows
from tests.scripted_sampler import ScriptedSampler
from tests.test_draws import char_sampler


def _examples(lengths):
  return [{"id": f"p{i}", "prompt": "x" * n} for i, n in enumerate(lengths)]


def test_calls_take_problems_shortest_prompt_first_ties_in_list_order():
  examples = _examples([5, 3, 9, 3, 1, 7, 5, 12, 10])
  lengths = [len(e["prompt"]) for e in examples]
  ids = lambda chunks: [[e["id"] for e in c] for c in chunks]
  assert ids(call_schedule.chunks_of_problems(examples, 3, lengths)) == [
      ["p4", "p1", "p3"], ["p0", "p6", "p5"], ["p2", "p8", "p7"]]
  # A limit by the call's longest prompt: a call closes before a prompt it cannot hold.
  by_length = lambda n: 3 if n < 8 else 1
  assert ids(call_schedule.chunks_of_problems(examples, by_length, lengths)) == [
      ["p4", "p1", "p3"], ["p0", "p6", "p5"], ["p2"], ["p8"], ["p7"]]


def test_calls_are_padded_to_the_largest_call_of_their_shape_only():
  chunks = [[1, 2, 3], [4, 5], [6], [7, 8], [9]]
  assert call_schedule.padded_problems(chunks, ["a", "a", "b", "b", "c"]) == [3, 3, 2, 2, 1]


def test_a_resumed_evaluation_makes_the_same_calls_and_every_call_one_shape(monkeypatch):
  monkeypatch.setattr(decode_budget, "SAMPLES_PER_SLOT", 16)
  examples = _examples([5, 3, 9, 3, 1, 7, 5])
  calls = []

  class Recording(ScriptedSampler):
    def call_plan(self, prompts):
      return super().call_plan(prompts)[0], 640

    def dispatch(self, prompts, problem_keys, num_samples, max_prefix=None, min_problems=0):
      calls.append((tuple(problem_keys), max_prefix, min_problems))
      return super().dispatch(prompts, problem_keys, num_samples)

  # 3 slots x 16 samples per slot (decode_budget.SAMPLES_PER_SLOT) / 16 samples a problem:
  # 3 problems a call.
  sampler = Recording(lambda p, s: "x = 1\n", slots_per_call=3)
  written = {}
  on_chunk = lambda todo, completions: written.update(completions)
  call_schedule.sample_problems(sampler, examples, 16, set(), on_chunk)
  key = sampler_lib.problem_draw_key
  assert [c[0] for c in calls] == [tuple(key(f"p{i}") for i in ids)
                                   for ids in ((4, 1, 3), (0, 6, 5), (2,))]
  # Every call padded to 3 problems (its shape's largest call) and capped at the
  # evaluation's shared prefix.
  assert {c[1:] for c in calls} == {(640, 3)}
  assert sorted(written) == sorted(e["id"] for e in examples)
  # Resumed after p4, p1 and p6 were written: the remaining problems of the same calls.
  calls.clear()
  call_schedule.sample_problems(sampler, examples, 16, {"p4", "p1", "p6"}, on_chunk)
  assert [c[0] for c in calls] == [(key("p3"),), (key("p0"), key("p5")), (key("p2"),)]


def test_prompts_that_lost_shots_make_calls_of_their_own_with_their_own_prefix(monkeypatch):
  """A prompt that dropped shots to fit shares only the shots it kept with the others: in
  their calls it would cut every prompt's shared prefix to those."""
  monkeypatch.setattr(decode_budget, "SAMPLES_PER_SLOT", 16)
  template = "S" * 600  # the shots every full prompt starts with
  examples = [{"id": f"p{i}", "prompt": template + "q" * (10 + i)} for i in range(5)]
  examples[1] = {"id": "p1", "prompt": "S" * 200 + "q" * 11, prompt_fit.SHOTS_DROPPED: 2}
  examples[3] = {"id": "p3", "prompt": "S" * 400 + "q" * 13, prompt_fit.SHOTS_DROPPED: 1}
  calls = []

  class Recording(ScriptedSampler):
    def call_plan(self, prompts):  # characters as tokens; the prefix all of them share
      common = min(len(p) - len(p.lstrip("S")) for p in prompts)
      return [len(p) for p in prompts], common

    def dispatch(self, prompts, problem_keys, num_samples, max_prefix=None, min_problems=0):
      calls.append((sorted(problem_keys), max_prefix))
      return super().dispatch(prompts, problem_keys, num_samples)

  sampler = Recording(lambda p, s: "x = 1\n", slots_per_call=16)  # 16 problems a call
  call_schedule.sample_problems(sampler, examples, 16, set(), lambda todo, c: None)
  key = sampler_lib.problem_draw_key
  assert sorted(calls) == sorted([(sorted(key(f"p{i}") for i in (0, 2, 4)), 600),
                                  ([key("p3")], 400), ([key("p1")], 200)])


def test_the_shared_prefix_can_be_capped():
  prompts = [list(range(200)) + [7, 8], list(range(200)) + [9]]
  prefix, rests = split_shared_prefix(prompts)
  assert len(prefix) == 192 and rests[1] == list(range(192, 200)) + [9]
  prefix, rests = split_shared_prefix(prompts, at_most=150)  # down to a multiple of 64
  assert len(prefix) == 128 and rests[0] == list(range(128, 200)) + [7, 8]
  assert split_shared_prefix(prompts, at_most=0) == (None, prompts)


def test_each_data_shard_gets_an_even_share_of_a_calls_problems():
  assert list(problem_rows(3, 3, 1)) == [0, 1, 2]
  assert list(problem_rows(3, 4, 1)) == [0, 1, 2]          # padding after
  # 5 problems in 8 rows over 2 shards: 3 in shard 0's rows 0-3, 2 in shard 1's rows 4-7.
  assert list(problem_rows(5, 8, 2)) == [0, 1, 2, 4, 5]
  assert list(problem_rows(2, 8, 4)) == [0, 2]             # shards 2 and 3 sample nothing
  with pytest.raises(ValueError, match="do not fit"):
    problem_rows(9, 8, 2)


class _Characters:
  """A tokenizer of one token per character (the model's 64-entry vocabulary)."""
  vocab_size, eos_id = 64, 2

  def encode_prompt(self, text):
    return [1] + [3 + ord(c) % 61 for c in text]

  def decode(self, ids):
    return "".join(chr(32 + i) for i in ids)


def test_a_calls_padded_prefill_fits_the_memory_budget_at_its_prompt_length():
  """Greedy, one sample a problem, prompts after a shared prefix of 3 to 380 tokens: the
  problems per call follow each call's prefill (attention scores quadratic in its prompt),
  and padding never takes a call past its budget or past the largest call of its shape."""
  cfg = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, d_ff=64)
  graphdef, shapes, _ = abstract_model(cfg)   # nothing runs on the model: zeros will do
  params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
  mesh = make_mesh(data=2, devices=jax.devices()[:2])
  calls = []

  class Recording(sampler_lib.Sampler):
    def dispatch(self, prompts, problem_keys, num_samples, max_prefix=None, min_problems=0):
      calls.append((len(prompts), min_problems, max(len(self.encode_prompt(p)) for p in prompts)))
      return [[""] * num_samples for _ in prompts]

    def wait(self, call):
      del call

    def collect(self, call):
      return call

  sampler = Recording(graphdef, params, _Characters(), mesh,
                      SamplingConfig(max_new_tokens=16, temperature=0.0), slots_per_call=0,
                      max_prompt_len=512, cpu_memory_mb=128)
  suffixes = [3 + 47 * i % 378 for i in range(60)]
  examples = [{"id": f"p{i}", "prompt": "s" * 130 + "x" * n} for i, n in enumerate(suffixes)]
  written = {}
  call_schedule.sample_problems(sampler, examples, 1, set(),
                                lambda todo, completions: written.update(completions))
  assert sorted(written) == sorted(e["id"] for e in examples)
  budget = sampler.budget_bytes                     # per device and call
  assert budget == (128 << 20) // (len(jax.local_devices()) * sampler_lib.CALLS_IN_FLIGHT)
  slots, shards, prefix = sampler.slots(1), 2, 128   # the 131-token common start, to 64s
  sizes = {}
  for problems, padded, longest in calls:
    rows = -(-max(problems, padded) // shards) * shards
    length = bucket_length(longest - prefix, half_octaves=True)
    used = (sampler._param_bytes + slots // shards * decode_budget.bytes_per_slot(cfg, 16)
            + decode_budget.bytes_per_problem(cfg, prefix)
            + rows // shards * (decode_budget.bytes_per_problem(cfg, length, prefix)
                                + decode_budget.bytes_per_sample(16)))
    assert used <= budget, (problems, padded, length)
    assert padded >= problems
    sizes.setdefault(length, []).append((problems, padded))
  for length, of_shape in sizes.items():   # padded to the largest call of the shape, no more
    assert {padded for _, padded in of_shape} == {max(problems for problems, _ in of_shape)}
  # Short prompts share calls that long ones could not: 64 slots would take 2,048 problems.
  shortest, longest = min(sizes), max(sizes)
  assert max(p for p, _ in sizes[shortest]) > 2 * max(p for p, _ in sizes[longest])
  assert len(calls) > 2


def test_a_sampler_keeps_only_its_most_recently_used_compiled_calls():
  """A compiled decode loop holds tens of MB of host memory; a study's rounds bring new
  shapes each round. Without the bound every shape stayed compiled (the repair study grew
  by ~150 MB a round)."""
  sampler = char_sampler(SamplingConfig(max_new_tokens=3, temperature=1.0), 2, 4096)
  client = jax.devices()[0].client
  # Prompts of 7 compiled shapes (prefix and rest bucketed), one call each.
  prompts = ["ab" * n for n in (5, 40, 70, 130, 200, 300, 500)]
  first = sampler.sample(prompts[:1], [0], 2)
  held = len(client.live_executables())
  for prompt in prompts[1:]:
    sampler.sample([prompt], [0], 2)
  assert len(sampler._sample_fns) == sampler_lib.MAX_COMPILED_CALLS
  assert len(client.live_executables()) - held <= sampler_lib.MAX_COMPILED_CALLS - 1
  # The first shape, evicted, compiles again and draws the same samples.
  assert sampler.sample(prompts[:1], [0], 2) == first
