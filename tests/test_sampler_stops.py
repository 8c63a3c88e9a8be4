"""A task's stop strings end its samples on device (evaluation/sampler.py, data/tasks.py
stop_strings) without changing the text its scoring keeps."""
import jax
import numpy as np
from flax import nnx

from configs import eval_humaneval, eval_synthesis
from data import humaneval, prompts, tasks
from decode.token_choice import SamplingConfig
from evaluation import runner
from decode.stop_matcher import build_stop_table
from data.tokenizer import token_texts
from evaluation.sampler import Sampler, problem_draw_key
from model.config import ModelConfig
from model.decoder import Decoder
from model.sharding import make_mesh
from tests.scripted_sampler import ScriptedSampler

# Code-ish pieces, some of them stop strings with more text after them, one holding two,
# then plain words: a sample runs on past most of its stop strings' chances.
TEXTS = ["", "", "x", " ", "\n", "    ", "return", "(", ")", ":", "\ndef f", "\nif",
         "\nif __name__", "[DONE]", "a\n#b\nif", "\nprint", "if", "de", "f "]
TEXTS += [f"w{i}" for i in range(64 - len(TEXTS))]


class _PieceTokenizer:
  vocab_size, eos_id = len(TEXTS), 1

  def encode_prompt(self, text):
    return [TEXTS.index(c) if c in TEXTS else 2 for c in text]

  encode_continuation = encode_prompt

  def decode(self, ids):
    return "".join(TEXTS[i] for i in ids)


def _humaneval_cut(completion):
  """What humaneval's scoring keeps of a completion (data/tasks.py humaneval_program)."""
  return humaneval.cut_at_stop(prompts.cut_at_done(completion), tasks.stop_strings("humaneval"))


def test_every_task_declares_stops_that_leave_the_done_cut_alone():
  for task in tasks.TASK_NAMES:
    stops = tasks.stop_strings(task)
    assert stops and all(stops)
    # No stop string runs into a [DONE] that starts after it: cutting at [DONE] first and
    # then at these (the scoring) is cutting at the earliest of all (the sampler's stop).
    for stop in stops:
      for start in range(1, len(stop)):
        rest = stop[start:]
        assert not (prompts.DONE.startswith(rest) or rest.startswith(prompts.DONE)), (task, stop)
  assert tasks.stop_strings("mbpp_synthesis") == (prompts.DONE,)
  assert prompts.DONE not in tasks.stop_strings("humaneval")


def test_the_sampler_takes_its_config_tasks_stop_strings():
  sampler = runner.sampler_for(eval_synthesis.get_config(), ScriptedSampler(lambda p, s: ""), [])
  assert sampler.task_stops == (prompts.DONE,)
  other = runner.sampler_for(eval_humaneval.get_config(), sampler, [])
  assert other.task_stops == humaneval.STOP_SEQUENCES and sampler.task_stops == (prompts.DONE,)


def test_a_humaneval_sample_stops_at_its_stop_strings_with_the_text_its_scoring_keeps():
  """A tiny random model writes the pieces above at random: sampled with humaneval's stop
  strings, the samples end early, and every one keeps the text that the same draws run to
  max_new_tokens (stopping at [DONE] only, as before) keep after the scoring's cut."""
  cfg = ModelConfig(vocab_size=len(TEXTS), d_model=32, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=8, d_ff=64)
  graphdef, state = nnx.split(Decoder(cfg, nnx.Rngs(0)))
  prompts_ = ["def f(x):\n    return", "def g(x):\n"]
  keys = [problem_draw_key(f"humaneval/{i}") for i in range(len(prompts_))]
  num_samples, max_new_tokens = 8, 48

  # One slot per sample: both runs decode the same rows in the same shapes.
  sampler = Sampler(graphdef, nnx.to_pure_dict(state), _PieceTokenizer(),
                    make_mesh(devices=jax.devices()[:1]),
                    SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0),
                    len(prompts_) * num_samples, 64)

  def run(task_stops):
    sampler.task_stops = task_stops  # as runner.sampler_for sets them
    rows, _, out, lengths = sampler.dispatch(prompts_, keys, num_samples)
    completions = sampler.collect((rows, num_samples, out, lengths))
    return completions, np.asarray(lengths)[rows]

  full, full_lengths = run(())
  stopped, stopped_lengths = run(tasks.stop_strings("humaneval"))
  assert np.all(stopped_lengths <= full_lengths)
  assert np.count_nonzero(stopped_lengths < full_lengths) > num_samples  # most stop early
  assert stopped_lengths.sum() < full_lengths.sum() / 2
  for full_texts, stopped_texts in zip(full, stopped):
    for whole, early in zip(full_texts, stopped_texts):
      assert _humaneval_cut(early) == _humaneval_cut(whole)
      assert whole.startswith(early)
  # Some stop piece carried text past its stop string, and the cut dropped it as before.
  assert any(_humaneval_cut(c) != c for texts in stopped for c in texts)


class _DummyPrefixTokenizer:
  """SentencePiece with a dummy prefix, as Llama's: a text's first piece loses its `▁`."""
  PIECES = ["<pad>", "</s>", "\n", "▁", "▁if", "if", "x", "▁x"]
  vocab_size, eos_id = len(PIECES), 1

  def encode_continuation(self, text):
    return [self.PIECES.index(text)]

  def decode(self, ids):
    text = "".join("" if i < 2 else self.PIECES[i] for i in ids).replace("▁", " ")
    return text[1:] if text.startswith(" ") else text


def test_token_texts_keep_the_space_a_dummy_prefix_strips_from_a_lone_piece():
  texts = token_texts(_DummyPrefixTokenizer())
  assert texts == ["", "", "\n", " ", " if", "if", "x", " x"]
  # "\n" then "▁if" reads "\n if": no stop; "\n" then "if" is one.
  table, completes = build_stop_table(texts, tasks.stop_strings("humaneval"))
  assert not completes[table[0, 2], 4] and not completes[table[table[0, 2], 3], 5]
  assert completes[table[0, 2], 5]
