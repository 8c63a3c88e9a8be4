"""Runs a plan on this machine, N subprocesses at a time, each logging to WORKDIR/launch.log.

A run starts once the runs it depends on (WorkdirOf) have succeeded or were already finished;
if one of them failed, the run is reported as blocked instead of started. Nothing in a workdir
is deleted or overwritten: launch.log is appended to, and train.py / eval.py resume there.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import shlex
import subprocess
import time
from collections.abc import Callable

from sweeps import status
from sweeps.plan import Plan, Run

_POLL_S = 0.1


@dataclasses.dataclass
class Outcome:
  run: Run
  result: str          # ok | failed | skipped | blocked
  detail: str = ""
  seconds: float = 0.0


def run_local(plan: Plan, parallel: int, python: str,
              echo: Callable[[str], None] = print) -> list[Outcome]:
  """Runs every unfinished run of the plan, at most `parallel` at once; returns outcomes in
  plan order (finished runs as skipped)."""
  if parallel < 1:
    raise ValueError(f"--local needs N >= 1, got {parallel}")
  multi = [run.label for run in plan.runs if run.nodes > 1]
  if multi:
    raise ValueError(f"runs with nodes > 1 need a cluster (use --slurm): {multi}")
  outcomes = {run.workdir: Outcome(run, "skipped", run.status.detail)
              for run in plan.runs if run.status.state == status.FINISHED}
  waiting = [run for run in plan.runs if run.workdir not in outcomes]
  active: list[tuple[Run, subprocess.Popen, float, object]] = []
  try:
    while waiting or active:
      for run, process, started, log in list(active):
        if process.poll() is None:
          continue
        log.close()
        seconds = time.monotonic() - started
        result = "ok" if process.returncode == 0 else "failed"
        detail = "" if result == "ok" else f"exit code {process.returncode}"
        outcomes[run.workdir] = Outcome(run, result, detail, seconds)
        echo(f"{result:<8} {run.label} ({seconds:.1f} s{', ' + detail if detail else ''})")
        active.remove((run, process, started, log))
      for run in list(waiting):
        dep_results = [outcomes[d].result if d in outcomes else None for d in run.deps]
        if any(r in ("failed", "blocked") for r in dep_results):
          waiting.remove(run)
          outcomes[run.workdir] = Outcome(run, "blocked", "a run it starts from failed")
          echo(f"blocked  {run.label} (a run it starts from failed)")
        elif all(r in ("ok", "skipped") for r in dep_results) and len(active) < parallel:
          waiting.remove(run)
          active.append(_start(plan.root, run, python, echo))
      time.sleep(_POLL_S)
  except KeyboardInterrupt:
    for _, process, _, _ in active:  # only the processes this launcher started
      process.terminate()
    for _, process, _, log in active:
      process.wait()
      log.close()
    raise
  return [outcomes[run.workdir] for run in plan.runs]


def _start(root: str, run: Run, python: str, echo: Callable[[str], None]):
  workdir = os.path.join(root, run.workdir)
  os.makedirs(workdir, exist_ok=True)
  command = run.command(python)
  log = open(os.path.join(workdir, "launch.log"), "a")
  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  log.write(f"== {stamp} launch.py: {shlex.join(command)}\n")
  log.flush()
  process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
  verb = "resuming" if run.status.state == status.RESUME else "started"
  echo(f"{verb:<8} {run.label} -> {run.workdir}/launch.log"
       + (f" ({run.status.detail})" if run.status.detail else ""))
  return run, process, time.monotonic(), log


def summary(outcomes: list[Outcome]) -> str:
  """A table of every run's result, and the counts."""
  width = max([len(o.run.label) for o in outcomes] + [3])
  lines = [f"{'run':<{width}}  result   time     detail"]
  for o in outcomes:
    seconds = f"{o.seconds:.1f} s" if o.result in ("ok", "failed") else "-"
    lines.append(f"{o.run.label:<{width}}  {o.result:<7}  {seconds:<7}  {o.detail}".rstrip())
  counts = {r: sum(o.result == r for o in outcomes)
            for r in ("ok", "failed", "skipped", "blocked")}
  lines.append(", ".join(f"{n} {r}" for r, n in counts.items() if n) or "no runs")
  return "\n".join(lines)
