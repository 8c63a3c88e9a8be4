"""The calls of an evaluation: which problems go in each, and the device kept busy.

`plan_calls` plans an evaluation's sampling calls from all of its problems (so a resumed
evaluation makes the same calls): shortest prompt first, as many problems a call as its
memory allows (Sampler.call_limit), each count of kept shots in calls of its own.
`sample_problems` keeps CALLS_IN_FLIGHT of them dispatched (JAX returns at once) while the
host runs the previous call's programs in the sandbox, then collects; a thread notes when each
call became ready, so the phases' times (PhaseTimes) are the device's and the sandbox's own.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from absl import logging

from data import prompt_fit
from decode.budget import CALLS_IN_FLIGHT
from evaluation.sampler import Sampler, problem_draw_key
from rundir.progress import progress_line


def chunks_of_problems(examples: Sequence[dict[str, Any]],
                       problems_per_chunk: int | Callable[[int], int],
                       prompt_lengths: Sequence[int]) -> Iterator[list[dict[str, Any]]]:
  """Problems in calls, fixed by the full list (so a resumed evaluation with the same budget
  makes the same calls): shortest prompt first, ties in list order. `problems_per_chunk`: the
  most problems a call holds, or a function of its longest prompt's length giving that (it
  must not grow with the length: a call's memory does, Sampler.call_limit).

  Why by length: a call pads its prompts (after their shared prefix) to one bucketed length,
  so a call of similar lengths prefills and holds less padding, and holds more problems in
  the same memory.
  """
  limit = problems_per_chunk if callable(problems_per_chunk) else lambda _: problems_per_chunk
  chunk: list[int] = []
  for i in sorted(range(len(examples)), key=lambda i: (prompt_lengths[i], i)):
    if chunk and len(chunk) >= limit(prompt_lengths[i]):  # i: the chunk's longest prompt
      yield [examples[j] for j in chunk]
      chunk = []
    chunk.append(i)
  if chunk:
    yield [examples[j] for j in chunk]


def padded_problems(chunks: Sequence[Sequence[Any]], shapes: Sequence[Any]) -> list[int]:
  """The problems each call is padded to: the largest call of its compiled shape (so the
  calls of a shape compile once), never more than that call, which fits the budget."""
  largest: dict[Any, int] = {}
  for chunk, shape in zip(chunks, shapes):
    largest[shape] = max(largest.get(shape, 0), len(chunk))
  return [largest[shape] for shape in shapes]


@dataclasses.dataclass
class PhaseTimes:
  """Where an evaluation's time went. The phases overlap (the next call samples while the
  last one's programs run), so sampling_s + execution_s may exceed wall_s."""
  sampling_s: float = 0.0    # the device busy sampling (dispatch or previous call -> ready)
  execution_s: float = 0.0   # in on_chunk (the sandbox, and the writes)
  wall_s: float = 0.0


class _Dispatched:
  """A sampling call in flight, and when it became ready (a thread waits for it)."""

  def __init__(self, sampler: Sampler, todo: list[dict[str, Any]], num_samples: int,
               **call_shape: int):
    self._sampler = sampler
    self.dispatched_at = time.perf_counter()
    self.call = sampler.dispatch([e["prompt"] for e in todo],
                                 [problem_draw_key(e["id"]) for e in todo], num_samples,
                                 **call_shape)
    self.ready_at = self.dispatched_at
    self._waiter = threading.Thread(target=self._wait, daemon=True)
    self._waiter.start()

  def _wait(self) -> None:
    self._sampler.wait(self.call)
    self.ready_at = time.perf_counter()

  def busy_s(self, previous_ready_at: float) -> float:
    """Device time of this call: calls run one after another on the device."""
    self._waiter.join()
    return self.ready_at - max(self.dispatched_at, previous_ready_at)


class PlannedCall(NamedTuple):
  """One sampling call of an evaluation, before it is dispatched."""
  todo: list[dict[str, Any]]   # its unfinished problems, the ones sampled
  min_problems: int            # padded to this many (its compiled shape's largest call)
  max_prefix: int              # its shared prefix's cap: that of its count of kept shots


def plan_calls(sampler: Sampler, examples: Sequence[dict[str, Any]], num_samples: int,
               done_ids: set[str]) -> list[PlannedCall]:
  """The calls that sample every problem of `examples` (fitted prompts, none too long) not in
  done_ids, planned from all of them, so a resumed evaluation makes the same calls.

  A call carries about SAMPLES_PER_SLOT samples per slot (decode/budget.py), in whole
  problems, as many as its prefill's memory allows (Sampler.call_limit: long prompts make
  small calls); only its unfinished problems are sampled (a sample does not depend on the
  others in its call). Prompts that lost shots to fit (data/prompt_fit.py) share less of the
  template with the rest: in a call with the others they would cut every prompt's shared
  prefix to the shots they kept. So each count of kept shots makes calls of its own, with its
  own prefix.
  """
  # By (prompt length, prefix): (compiled shape, most problems) of a call it ends.
  limit = functools.cache(lambda length, prefix: sampler.call_limit(num_samples, length, prefix))
  by_shots: dict[int, list[dict[str, Any]]] = {}
  for e in examples:
    by_shots.setdefault(e.get(prompt_fit.SHOTS_DROPPED, 0), []).append(e)
  planned, shapes, prefixes = [], [], []
  for _, members in sorted(by_shots.items()):
    lengths, max_prefix = sampler.call_plan([e["prompt"] for e in members])
    length_of = {id(e): n for e, n in zip(members, lengths)}
    for chunk in chunks_of_problems(members, lambda n, c=max_prefix: limit(n, c)[1], lengths):
      planned.append(chunk)  # its last problem has its longest prompt
      shapes.append(limit(length_of[id(chunk[-1])], max_prefix)[0])
      prefixes.append(max_prefix)
  # Every call of a compiled shape padded to that shape's largest call: few shapes to compile.
  rows = padded_problems(planned, shapes)
  return [PlannedCall(todo, padded, prefix)
          for chunk, padded, prefix in zip(planned, rows, prefixes)
          if (todo := [e for e in chunk if e["id"] not in done_ids])]


def sample_problems(sampler: Sampler, examples: Sequence[dict[str, Any]], num_samples: int,
                    done_ids: set[str], on_chunk) -> PhaseTimes:
  """Samples every problem not in done_ids and hands each finished call's problems and
  completions to on_chunk.

  `examples` have been through Sampler.fit_prompts: those marked prompt_too_long go to
  on_chunk first, with empty completions and unsampled. The rest go in plan_calls' calls,
  CALLS_IN_FLIGHT of them dispatched ahead of the one on_chunk runs on, so the devices sample
  while the host executes programs.
  """
  too_long = [e for e in examples if prompt_fit.is_too_long(e) and e["id"] not in done_ids]
  if too_long:
    on_chunk(too_long, {e["id"]: [""] * num_samples for e in too_long})
  examples = [e for e in examples if not prompt_fit.is_too_long(e)]
  calls = plan_calls(sampler, examples, num_samples, done_ids)
  todo_total = sum(len(call.todo) for call in calls)
  started, finished = time.perf_counter(), 0
  times = PhaseTimes()
  dispatch = lambda call: _Dispatched(sampler, call.todo, num_samples,
                                      max_prefix=call.max_prefix,
                                      min_problems=call.min_problems)
  in_flight = collections.deque(dispatch(call) for call in calls[:CALLS_IN_FLIGHT])
  previous_ready_at = started
  for index, call in enumerate(calls):
    current = in_flight.popleft()
    completions = sampler.collect(current.call)
    times.sampling_s += current.busy_s(previous_ready_at)
    previous_ready_at = current.ready_at
    if index + CALLS_IN_FLIGHT < len(calls):
      in_flight.append(dispatch(calls[index + CALLS_IN_FLIGHT]))
    executing_since = time.perf_counter()
    on_chunk(call.todo, {e["id"]: c for e, c in zip(call.todo, completions)})
    times.execution_s += time.perf_counter() - executing_since
    finished += len(call.todo)
    elapsed = max(time.perf_counter() - started, 1e-9)
    logging.info(progress_line("sampled", finished, todo_total, "problems", finished / elapsed,
                               [f"{num_samples} samples each",
                                f"{sampler.tokens_generated / elapsed:.0f} tokens/s"]))
  times.wall_s = time.perf_counter() - started
  return times
