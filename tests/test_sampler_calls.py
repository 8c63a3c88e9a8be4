"""How an evaluation's problems become sampling calls (evaluation/sampler.py): by prompt
length, fixed by the full list, one shape for every call."""
import pytest

from evaluation import sampler as sampler_lib
from model import decode_budget
from model.sampling import split_shared_prefix
from model.slot_sampling import problem_rows
from tests.scripted_sampler import ScriptedSampler


def _examples(lengths):
  return [{"id": f"p{i}", "prompt": "x" * n} for i, n in enumerate(lengths)]


def test_calls_take_problems_shortest_prompt_first_ties_in_list_order():
  examples = _examples([5, 3, 9, 3, 1, 7, 5, 12, 10])
  lengths = [len(e["prompt"]) for e in examples]
  ids = lambda chunks: [[e["id"] for e in c] for c in chunks]
  assert ids(sampler_lib.chunks_of_problems(examples, 3, lengths, 100)) == [
      ["p4", "p1", "p3"], ["p0", "p6", "p5"], ["p2", "p8", "p7"]]
  # Prompts over max_prompt_len lose their start (and the shared prefix): calls of their own.
  assert ids(sampler_lib.chunks_of_problems(examples, 3, lengths, 9)) == [
      ["p4", "p1", "p3"], ["p0", "p6", "p5"], ["p2"], ["p8", "p7"]]


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
  sampler = Recording(lambda p, s: "x = 1\n", batch_size=3)
  written = {}
  on_chunk = lambda todo, completions: written.update(completions)
  sampler_lib.sample_problems(sampler, examples, 16, set(), on_chunk)
  key = sampler_lib.problem_key
  assert [c[0] for c in calls] == [tuple(key(f"p{i}") for i in ids)
                                   for ids in ((4, 1, 3), (0, 6, 5), (2,))]
  # Every call padded to 3 problems and capped at the evaluation's shared prefix.
  assert {c[1:] for c in calls} == {(640, 3)}
  assert sorted(written) == sorted(e["id"] for e in examples)
  # Resumed after p4, p1 and p6 were written: the remaining problems of the same calls.
  calls.clear()
  sampler_lib.sample_problems(sampler, examples, 16, {"p4", "p1", "p6"}, on_chunk)
  assert [c[0] for c in calls] == [(key("p3"),), (key("p0"), key("p5")), (key("p2"),)]


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
