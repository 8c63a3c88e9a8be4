"""Turns prompts into completions with a checkpointed model: tokenise, bucket, sample, detokenise.

Rows are (problem, sample index) pairs. Problems are cut into fixed chunks from the full,
ordered problem list, and each chunk's random key depends only on its index, so a resumed
evaluation draws exactly the samples an uninterrupted one would have.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data.prompts import DONE, cut_at_done
from data.tokenizer import Tokenizer
from execution.progress import progress_line
from model import distributed
from model.sampling import SamplingConfig, bucket_length, left_pad, make_generate_fn
from model.sharding import batch_sharding
from model.stop_matcher import build_stop_table

@dataclasses.dataclass
class Sampler:
  """Completions for prompts, `batch_size` rows at a time, on a mesh."""
  graphdef: Any
  params: Any
  tokenizer: Tokenizer
  mesh: Mesh
  sampling: SamplingConfig
  batch_size: int
  max_prompt_len: int
  seed: int = 0

  def __post_init__(self):
    texts = [self.tokenizer.decode([i]) for i in range(self.tokenizer.vocab_size)]
    stop_next, stop_completes = build_stop_table(texts, DONE)
    replicated = NamedSharding(self.mesh, PartitionSpec())
    self._stop = (jax.device_put(stop_next, replicated),
                  jax.device_put(stop_completes, replicated))
    self._generate = make_generate_fn(self.graphdef, self.sampling, self.tokenizer.eos_id)
    self.truncated_prompts = 0
    self.tokens_generated = 0

  def encode_prompt(self, prompt: str) -> list[int]:
    tokens = self.tokenizer.encode_prompt(prompt)  # BOS first for models that expect it
    if len(tokens) > self.max_prompt_len:
      # Keep the end: the query and its [BEGIN] matter more than the first shot.
      self.truncated_prompts += 1
      tokens = tokens[-self.max_prompt_len:]
    return tokens

  def complete(self, prompts: Sequence[str], key_index: int) -> list[str]:
    """One completion per prompt (cut at [DONE]); rows beyond batch_size go in more batches."""
    encoded = [self.encode_prompt(p) for p in prompts]
    completions: list[str] = []
    for start in range(0, len(encoded), self.batch_size):
      rows = encoded[start:start + self.batch_size]
      padded_rows = rows + [[]] * (self.batch_size - len(rows))
      length = min(bucket_length(max(len(r) for r in rows)),
                   bucket_length(self.max_prompt_len))
      tokens, lengths = left_pad(padded_rows, length)
      rng = jax.random.fold_in(jax.random.key(self.seed), key_index * 100_003 + start)
      with jax.set_mesh(self.mesh):
        out, out_lengths = self._generate(
            self.params, jax.device_put(tokens, batch_sharding(self.mesh)),
            jax.device_put(lengths, batch_sharding(self.mesh, 1)), rng, *self._stop)
      # Every process gets every row (the output spans all hosts under jax.distributed).
      out, out_lengths = distributed.to_host(out), distributed.to_host(out_lengths)
      for row in range(len(rows)):
        ids = [int(t) for t in out[row, :out_lengths[row]] if t != self.tokenizer.eos_id]
        self.tokens_generated += int(out_lengths[row])
        completions.append(cut_at_done(self.tokenizer.decode(ids)))
    return completions


def chunks_of_problems(examples: Sequence[dict[str, Any]], num_samples: int,
                       rows_per_chunk: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
  """(chunk index, problems) with about rows_per_chunk rows each, fixed by the full list."""
  per_chunk = max(1, rows_per_chunk // num_samples)
  for index, start in enumerate(range(0, len(examples), per_chunk)):
    yield index, list(examples[start:start + per_chunk])


def sample_problems(sampler: Sampler, examples: Sequence[dict[str, Any]], num_samples: int,
                    done_ids: set[str], on_chunk) -> None:
  """Samples every problem not in done_ids and hands each finished chunk to on_chunk."""
  todo_total = sum(e["id"] not in done_ids for e in examples)
  started, finished = time.perf_counter(), 0
  for index, chunk in chunks_of_problems(examples, num_samples, 4 * sampler.batch_size):
    todo = [e for e in chunk if e["id"] not in done_ids]
    if not todo:
      continue
    # The whole chunk is sampled (same rows, same keys as an uninterrupted run); only the
    # unfinished problems are kept.
    prompts = [e["prompt"] for e in chunk for _ in range(num_samples)]
    completions = sampler.complete(prompts, index)
    by_id = {e["id"]: completions[i * num_samples:(i + 1) * num_samples]
             for i, e in enumerate(chunk)}
    on_chunk(todo, {e["id"]: by_id[e["id"]] for e in todo})
    finished += len(todo)
    elapsed = max(time.perf_counter() - started, 1e-9)
    logging.info(progress_line("sampled", finished, todo_total, "problems", finished / elapsed,
                               [f"{num_samples} samples each",
                                f"{sampler.tokens_generated / elapsed:.0f} tokens/s"]))
