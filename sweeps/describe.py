"""The dry run's text: every run, its workdir and command, and what the launcher will do."""
from __future__ import annotations

import shlex

from sweeps import status
from sweeps.plan import Plan
from sweeps.spec import CONFIG_AXIS

_VERB = {status.NEW: "launch", status.RESUME: "resume", status.FINISHED: "skip"}


def describe(plan: Plan, python: str = "python") -> str:
  runs = plan.runs
  counts = {state: sum(r.status.state == state for r in runs)
            for state in (status.NEW, status.RESUME, status.FINISHED)}
  lines = [f"sweep {plan.name} ({plan.sweep_file}): {len(runs)} runs, "
           f"{counts[status.NEW]} to launch, {counts[status.RESUME]} resuming, "
           f"{counts[status.FINISHED]} finished"]
  for stage in plan.stages:
    sweep = stage.sweep
    title = f"stage {stage.name}: " if stage.name else ""
    config = "(config varies)" if CONFIG_AXIS in sweep.axis_keys else sweep.config
    lines.append(f"{title}{len(stage.runs)} runs of {sweep.script} {config}"
                 + (f", {sweep.nodes} nodes each" if sweep.nodes > 1 else ""))
    for run in stage.runs:
      note = f"  ({run.status.detail})" if run.status.detail else ""
      lines.append(f"  {_VERB[run.status.state]:<6} {run.workdir}{note}")
      if run.status.state != status.FINISHED:
        lines.append(f"         {shlex.join(run.command(python))}")
  return "\n".join(lines)
