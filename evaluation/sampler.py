"""Turns prompts into completions with a checkpointed model: tokenise, bucket, sample, detokenise.

A call samples whole problems through the decode engine (decode/engine.py): each problem's
prompt is prefilled once into pages its n samples share, and the samples run through a fixed
number of slots refilled on device. The tokens all of a call's prompts start with (a few-shot
template's examples; decode/prompt_rows.py shared_prefix_length, to a multiple of 64) are
prefilled and held once for the call.

A sample's random draws are keyed by (seed, the draw variant, the problem's id, its sample
index), so a resumed evaluation draws the samples an uninterrupted one would have, whatever
went into each call (the logits themselves can differ in their last bits where a call's
padding or shared prefix differs, which can flip a draw that sits on a tie), and a study's
prompt variants draw independently of each other (evaluation/draws.py).

The calls of an evaluation (which problems go in each, dispatched ahead of the sandbox):
evaluation/call_schedule.py.
"""
from __future__ import annotations

import collections
import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data import prompt_fit
from data.prompts import DONE, cut_at_done
from data.tokenizer import Tokenizer, token_texts
from decode import budget as decode_budget
from decode.engine import loop_shards, make_sample_fn, problem_rows
from decode.host_devices import available_memory_bytes
from decode.prompt_rows import (bucket_length, right_pad, shared_prefix_length,
                                split_shared_prefix)
from decode.stop_matcher import build_stop_table
from decode.token_choice import SamplingConfig
from model.sharding import batch_shard_count, batch_sharding, device_memory_bytes
from rundir import multihost


def problem_draw_key(problem_id: Any) -> int:
  """The key a problem's samples are drawn under: from its id, so not from its place."""
  return zlib.crc32(str(problem_id).encode()) & 0x7FFFFFFF


def draw_key(seed: int, variant: int) -> jax.Array:
  """The key every draw of a run derives from: the seed's, with the draw variant
  (evaluation/draws.py) folded in; variant 0 folds nothing in (the draws of a plain eval)."""
  key = jax.random.key(seed)
  return jax.random.fold_in(key, variant) if variant else key


CALLS_IN_FLIGHT = decode_budget.CALLS_IN_FLIGHT
# Compiled call shapes a Sampler keeps (Sampler._compiled_call): the calls in flight, the one
# collected, and one more.
MAX_COMPILED_CALLS = CALLS_IN_FLIGHT + 2


@dataclasses.dataclass
class Sampler:
  """Completions for problems' prompts on a mesh, `slots(n)` rows decoded together.

  slots_per_call: rows decoded per call; 0 = decode/budget.py's rule (model size,
    device memory).
  max_prompt_len: the most tokens a prompt may have; `fit_prompts` makes them fit
    (data/prompt_fit.py: whole shots dropped, or the problem failed, as prompt_overflow says).
  cpu_memory_mb: on a CPU, the memory its calls may take (all its devices together);
    0 = decode/budget.py's share of the host's available memory.
  task_stops: the task's stop strings (data/tasks.py stop_strings): a sample stops on device
    once the cut of its completion at `[DONE]` or these is fixed (decode/stop_matcher.py),
    never earlier, so its scored text is that of a sample run to max_new_tokens. The
    completions come back cut at `[DONE]` only; the task's scoring cuts at the rest.
  """
  graphdef: Any
  params: Any
  tokenizer: Tokenizer
  mesh: Mesh
  sampling: SamplingConfig
  slots_per_call: int
  max_prompt_len: int
  seed: int = 0
  variant: int = 0  # evaluation/draws.py: folded into the seed's key unless 0
  prompt_overflow: str = "drop_shots"  # data/prompt_fit.OVERFLOW_MODES
  context_len: int | None = None  # the model's, where it declares one (evaluation/runner.py)
  cpu_memory_mb: int = 0   # sampling's memory on a CPU host; 0 = decode_budget's share
  task_stops: tuple[str, ...] = ()  # besides [DONE]; data/tasks.py stop_strings

  def __post_init__(self):
    self._token_texts = token_texts(self.tokenizer)
    # By stop strings; shared with the copies runner.sampler_for makes for other tasks.
    self._stop_tables: dict[tuple[str, ...], tuple[jax.Array, jax.Array]] = {}
    # One jitted call per compiled shape, least recently used first (_compiled_call).
    self._sample_fns: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()
    self._model_cfg = nnx.merge(self.graphdef, self.params).cfg
    self._param_bytes = decode_budget.param_bytes_per_device(self.params, self.mesh)
    # One call's memory per device (decode/budget.py); a CPU's is shared by the host's
    # devices and the CALLS_IN_FLIGHT calls that XLA:CPU runs at once. Process 0's, so that
    # every process plans the same calls (a host's available memory differs by the moment).
    self.budget_bytes = int(multihost.broadcast_json(decode_budget.call_budget_bytes(
        device_memory_bytes(), host_available_bytes=available_memory_bytes(),
        host_budget_bytes=self.cpu_memory_mb << 20, local_devices=len(jax.local_devices()),
        calls_at_once=CALLS_IN_FLIGHT)))
    self.tokens_generated = 0

  @property
  def batch_shards(self) -> int:
    return batch_shard_count(self.mesh)

  @property
  def stop_strings(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys((DONE, *self.task_stops)))

  def _stop(self) -> tuple[jax.Array, jax.Array]:
    """The stop strings' automaton tables on the devices: arguments of the compiled loop
    (jit compiles it again only for tables of another size)."""
    stops = self.stop_strings
    if stops not in self._stop_tables:
      replicated = NamedSharding(self.mesh, PartitionSpec())
      self._stop_tables[stops] = tuple(
          jax.device_put(table, replicated)
          for table in build_stop_table(self._token_texts, stops))
    return self._stop_tables[stops]

  def slots(self, num_samples: int) -> int:
    """Rows decoded together: slots_per_call if set, else the memory rule (same on every host)."""
    shards = self.batch_shards
    if self.slots_per_call:
      return max(shards, -(-self.slots_per_call // shards) * shards)
    return decode_budget.slots_per_call(
        self._model_cfg, max_new_tokens=self.sampling.max_new_tokens,
        prompt_len=bucket_length(self.max_prompt_len), num_samples=num_samples,
        batch_shards=shards, param_bytes_per_device=self._param_bytes,
        budget_bytes=self.budget_bytes, cpu=device_memory_bytes() is None)

  def call_limit(self, num_samples: int, prompt_tokens: int, max_prefix: int
                 ) -> tuple[tuple[int, int], int]:
    """(the compiled shape, the most problems) of a call whose longest prompt has
    prompt_tokens tokens, after the evaluation's shared prefix of max_prefix (call_plan):
    decode_budget.problems_per_call with that call's prefill. The same on every host."""
    prefix = max_prefix // 64 * 64  # split_shared_prefix's cap
    suffix = prompt_tokens - prefix
    length = bucket_length(suffix, half_octaves=True)  # dispatch's padded length
    slots = self.slots(num_samples)
    return (length, prefix), decode_budget.problems_per_call(
        self._model_cfg, max_new_tokens=self.sampling.max_new_tokens, prompt_len=length,
        prefix_len=prefix, num_samples=num_samples, slots=slots,
        batch_shards=self.batch_shards, param_bytes_per_device=self._param_bytes,
        budget_bytes=self.budget_bytes)

  def prompt_tokens(self, prompt: str) -> int:
    return len(self.tokenizer.encode_prompt(prompt))

  def completion_tokens(self, completion: str) -> int:
    """Tokens the model writes to produce `completion` after a prompt."""
    return len(self.tokenizer.encode_continuation(completion))

  def fit_prompts(self, examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The examples with prompts of at most max_prompt_len tokens (data/prompt_fit.py)."""
    return prompt_fit.fit_examples(examples, self.prompt_tokens, self.max_prompt_len,
                                   self.prompt_overflow)

  def encode_prompt(self, prompt: str) -> list[int]:
    tokens = self.tokenizer.encode_prompt(prompt)  # BOS first for models that expect it
    if len(tokens) > self.max_prompt_len:
      # Never cut: a cut prompt starts inside a shot and loses its BOS.
      raise ValueError(f"a prompt of {len(tokens)} tokens exceeds max_prompt_len="
                       f"{self.max_prompt_len}; fit the prompts first (Sampler.fit_prompts)")
    return tokens

  def sample(self, prompts: Sequence[str], problem_keys: Sequence[int],
             num_samples: int) -> list[list[str]]:
    """num_samples completions (cut at [DONE]; stopped early at the task's stop strings)
    of each prompt, in one call."""
    return self.collect(self.dispatch(prompts, problem_keys, num_samples))

  def call_plan(self, prompts: Sequence[str]) -> tuple[list[int], int]:
    """(each prompt's tokens, the tokens all prompts share; prompts are fitted to
    max_prompt_len first, fit_prompts): call_schedule.plan_calls orders its calls by the
    first and caps each call's shared prefix at the second, so the calls it plans from these
    prompts (those that kept the same number of shots) share one prefix length."""
    encoded = [self.encode_prompt(p) for p in prompts]
    return [len(e) for e in encoded], shared_prefix_length(encoded)

  def dispatch(self, prompts: Sequence[str], problem_keys: Sequence[int],
               num_samples: int, max_prefix: int | None = None,
               min_problems: int = 0) -> tuple[Any, ...]:
    """Starts one sampling call and returns at once (JAX dispatches asynchronously); the
    host is free until `collect`, e.g. to execute the previous call's programs.

    max_prefix: at most this many shared-prefix tokens (call_plan);
    min_problems: pad the call to this many problems (a last, smaller call of an evaluation
    then reuses its calls' compiled shape; padding problems cost a prefill row, no samples).
    """
    encoded = [self.encode_prompt(p) for p in prompts]
    shards = self.batch_shards
    # The prompts' common start (a few-shot template's examples) is prefilled and held once;
    # the problems' rows hold the rest.
    prefix, encoded = split_shared_prefix(encoded, at_most=max_prefix)
    # Problems padded to a multiple of the batch shards (the prefill splits them); the
    # padding problems are not sampled.
    padded = -(-max(len(encoded), min_problems) // shards) * shards
    # Each loop shard samples its own rows: an even share of the real problems each.
    rows = problem_rows(len(encoded), padded, loop_shards(self.mesh))
    placed = [[0] for _ in range(padded)]  # padding problems: one token, never sampled
    for row, tokens in zip(rows, encoded):
      placed[row] = tokens
    length = bucket_length(max(len(r) for r in encoded), half_octaves=True)
    tokens, lengths = right_pad(placed, length)
    keys = np.zeros((padded,), np.int32)
    keys[rows] = problem_keys
    slots = min(self.slots(num_samples), -(-len(encoded) * num_samples // shards) * shards)
    stop = self._stop()
    # The stop tables are arguments whose size is part of the compiled shape too.
    fn = self._compiled_call(num_samples, slots, tokens.shape,
                             None if prefix is None else len(prefix), stop[0].shape)
    replicated = NamedSharding(self.mesh, PartitionSpec())
    with jax.set_mesh(self.mesh):
      out, out_lengths = fn(
          self.params, jax.device_put(tokens, batch_sharding(self.mesh)),
          jax.device_put(lengths, batch_sharding(self.mesh, 1)),
          jax.device_put(keys, replicated), jax.device_put(np.int32(len(encoded)), replicated),
          draw_key(self.seed, self.variant), *stop,
          None if prefix is None else jax.device_put(prefix, replicated))
    return rows, num_samples, out, out_lengths

  def _compiled_call(self, num_samples: int, slots: int, *shape: Any):
    """The jitted call of this shape. Only the MAX_COMPILED_CALLS most recently used are
    kept: a compiled decode loop holds tens of MB of host memory (~40 MB each, the tiny
    model on XLA:CPU), and a study's rounds (longer prompts each round, fewer problems) would
    otherwise hold every shape they ever used. Calls come sorted by prompt length, so an
    evaluation rarely needs a shape again once it has moved past it."""
    key = (num_samples, slots, *shape)
    fn = self._sample_fns.pop(key, None)
    if fn is None:
      fn = make_sample_fn(self.graphdef, self.sampling, self.tokenizer.eos_id, num_samples,
                          slots)
    self._sample_fns[key] = fn
    while len(self._sample_fns) > MAX_COMPILED_CALLS:
      # Never a call in flight's: theirs are the CALLS_IN_FLIGHT + 1 most recently used.
      self._sample_fns.popitem(last=False)[1].clear_cache()
    return fn

  def wait(self, call: tuple[Any, ...]) -> None:
    """Blocks until a dispatched call's samples are on the device."""
    jax.block_until_ready(call[2:])

  def collect(self, call: tuple[Any, ...]) -> list[list[str]]:
    """The completions of a dispatched call (waits for it)."""
    rows, num_samples, out, out_lengths = call
    # Every process gets every sample (the output spans all hosts under jax.distributed).
    out, out_lengths = multihost.to_host(out), multihost.to_host(out_lengths)
    completions = []
    for problem in rows:
      texts = []
      for index in range(num_samples):
        n = int(out_lengths[problem, index])
        ids = [int(t) for t in out[problem, index, :n] if t != self.tokenizer.eos_id]
        self.tokens_generated += n
        texts.append(cut_at_done(self.tokenizer.decode(ids)))
      completions.append(texts)
    return completions
