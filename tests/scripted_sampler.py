"""A stand-in for evaluation.sampler.Sampler whose answers a test scripts, so the study and
repair loops can be checked against outcomes known in advance (a tiny random model solves
nothing). It has the fields that evaluation.runner.sampler_for compares and replaces."""
import dataclasses
from typing import Any, Callable

from data import prompt_fit
from decode import budget as decode_budget
from decode.token_choice import SamplingConfig


@dataclasses.dataclass
class ScriptedSampler:
  """`answer(prompt, sampler)` gives the completion; every call is logged in `calls`."""
  answer: Callable[[str, Any], str]
  sampling: SamplingConfig = SamplingConfig()
  seed: int = 0
  variant: int = 0
  slots_per_call: int = 8
  max_prompt_len: int = 4096
  prompt_overflow: str = "drop_shots"
  # A scripted model reads any prompt whole: a context no prompt reaches (in characters).
  context_len: int | None = 10**9
  cpu_memory_mb: int = 0
  task_stops: tuple = ()
  tokens_generated: int = 0
  calls: list = dataclasses.field(default_factory=list)

  def slots(self, num_samples):
    del num_samples
    return self.slots_per_call

  # Characters stand in for tokens.
  def prompt_tokens(self, prompt):
    return len(prompt)

  def completion_tokens(self, completion):
    return len(completion)

  def fit_prompts(self, examples):
    return prompt_fit.fit_examples(examples, self.prompt_tokens, self.max_prompt_len,
                                   self.prompt_overflow)

  def call_limit(self, num_samples, prompt_tokens, max_prefix):
    """One compiled shape; as many problems as the slots' samples (no memory here)."""
    del prompt_tokens, max_prefix
    return 0, max(1, decode_budget.SAMPLES_PER_SLOT * self.slots_per_call // num_samples)

  def sample(self, prompts, problem_keys, num_samples):
    self.calls.append((tuple(problem_keys), self.seed, self.sampling.temperature,
                       len(prompts) * num_samples))
    return [[self.answer(p, self) for _ in range(num_samples)] for p in prompts]

  def call_plan(self, prompts):
    return [len(p) for p in prompts], 0  # characters stand in for tokens

  # The dispatch / wait / collect protocol of evaluation.sampler.Sampler (no device here).
  def dispatch(self, prompts, problem_keys, num_samples, max_prefix=None, min_problems=0):
    del max_prefix, min_problems
    return self.sample(prompts, problem_keys, num_samples)

  def wait(self, call):
    del call

  def collect(self, call):
    return call
