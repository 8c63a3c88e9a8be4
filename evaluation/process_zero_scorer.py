"""The scorer of an eval that runs on several processes (eval.py under jax.distributed).

Every process samples every problem in lockstep (the model is sharded across all of them, so
each generate call is one global computation); process 0 alone executes the completions in
the sandbox and appends them to samples.jsonl, so each problem is executed and written exactly
once, and the workdir need exist only on process 0's host. Resume stays exact: the problems
already scored are process 0's answer, broadcast, so every process skips the same problems
and draws the same samples for the rest (keyed by problem and sample, evaluation/sampler.py).

A failure on process 0 (a workdir holding another run's samples, a full disk) stops every
process at the same point (rundir/multihost.py on_process_zero). With one process this is
the plain Scorer.
"""
from __future__ import annotations

from typing import Any, Sequence

from evaluation.scorer import Scorer
from execution import SandboxConfig
from rundir import multihost


class ProcessZeroScorer:
  """Scorer on process 0; every process agrees on what is done and on failures.

  Every process calls every method at the same point (each one is a collective).
  """

  def __init__(self, workdir: str, sandbox_config: SandboxConfig | None = None,
               **scorer_options):
    self._scorer: Scorer | None = multihost.on_process_zero(
        lambda: Scorer(workdir, sandbox_config, **scorer_options), "opening the workdir")
    self.done_ids: set[str] = set(multihost.broadcast_json(
        sorted(self._scorer.done_ids) if self._scorer is not None else None))

  def __enter__(self) -> "ProcessZeroScorer":
    return self

  def __exit__(self, *exc) -> None:
    if self._scorer is not None:
      self._scorer.close()

  def score(self, examples: Sequence[dict[str, Any]],
            completions_by_id: dict[str, Sequence[str]]) -> None:
    """Scorer.score on process 0; the others only wait for its verdict on failure."""
    scorer = self._scorer
    multihost.on_process_zero(lambda: scorer.score(examples, completions_by_id),
                                "scoring samples")

  @property
  def programs_executed(self) -> int:
    """Programs run in the sandbox by this run (process 0's count; 0 elsewhere)."""
    return self._scorer.programs_executed if self._scorer is not None else 0

  @property
  def programs_screened(self) -> int:
    """Of those, the ones the sandbox's syntax screen decided (process 0's count)."""
    return self._scorer.programs_screened if self._scorer is not None else 0

  @property
  def records(self) -> dict[str, list[dict[str, Any]]]:
    """The scored records (process 0's; empty elsewhere)."""
    return self._scorer.records if self._scorer is not None else {}
