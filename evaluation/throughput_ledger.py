"""An eval's throughput over all of its launches (WORKDIR/throughput.json).

A resumed eval samples only the problems its earlier launches left, so the speed of the last
launch alone describes part of the work. Each launch keeps its running totals here, updated
after every chunk of problems it scores (so a launch that is killed still counts up to its
last chunk), and results.json's meta.throughput is the sum over launches. A launch cut short
recorded no sampling time of its own (the sampler reports it when it returns): its wall time
less its execution time stands in for it, an upper bound since the phases overlap.
"""
from __future__ import annotations

import json
import os
from typing import Any

from rundir import layout

_COUNTS = ("wall_s", "sampling_s", "tokens_generated", "execution_s", "programs_executed",
           "programs_screened")


def combined(launches: list[dict[str, Any]]) -> dict[str, Any]:
  """meta.throughput: every count summed over `launches`, rates from the sums."""
  total = {k: sum(launch.get(k, 0) for launch in launches) for k in _COUNTS}
  rate = lambda count, seconds: round(count / seconds, 1) if seconds > 0 else 0.0
  return {"wall_s": round(total["wall_s"], 1), "sampling_s": round(total["sampling_s"], 1),
          "tokens_generated": total["tokens_generated"],
          "tokens_per_s": rate(total["tokens_generated"], total["sampling_s"]),
          "execution_s": round(total["execution_s"], 1),
          "programs_executed": total["programs_executed"],
          "programs_screened": total["programs_screened"],
          "programs_per_s": rate(total["programs_executed"], total["execution_s"]),
          "launches": len(launches),
          "launches_cut_short": sum(not launch.get("complete") for launch in launches)}


class ThroughputLedger:
  """This launch's entry among the earlier ones; `enabled` False on processes that do not
  write the workdir (then it only keeps the numbers)."""

  def __init__(self, workdir: str, continuing: bool, enabled: bool = True):
    self.path = os.path.join(workdir, layout.THROUGHPUT_FILE)
    self.enabled = enabled
    self.earlier: list[dict[str, Any]] = self._read() if continuing and enabled else []
    self.current: dict[str, Any] = {}

  def _read(self) -> list[dict[str, Any]]:
    try:
      with open(self.path, encoding="utf-8") as f:
        launches = json.load(f).get("launches", [])
    except (OSError, ValueError, AttributeError):
      return []  # a lost ledger loses the earlier launches' speed, never the eval
    return [l for l in launches if isinstance(l, dict)] if isinstance(launches, list) else []

  def update(self, complete: bool, **counts: float) -> None:
    self.current = {**counts, "complete": complete}
    if self.enabled:
      layout.write_text(os.path.dirname(self.path), layout.THROUGHPUT_FILE, json.dumps(
          {"launches": self.earlier + [self.current]}, indent=1) + "\n")

  def combined(self) -> dict[str, Any]:
    return combined(self.earlier + ([self.current] if self.current else []))
