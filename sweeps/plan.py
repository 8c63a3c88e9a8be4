"""A sweep file -> the plan: every run with its name, workdir, command and status.

Everything here is checked before anything is launched: each run's overrides against its base
config (unknown keys, wrong types), references between stages, that no two runs share a
workdir, and that a workdir holding earlier work was made with the config asked for now
(sweeps/identity.py). Workdirs are RUNS_DIR/SWEEP_FILE_STEM[/STAGE]/RUN_NAME[.vN]; relative
paths (scripts, configs, workdirs) are relative to the repository root, where commands run.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import os
from typing import Any

from sweeps import configs, identity, naming, status
from sweeps.spec import CONFIG_AXIS, Sweep, SweepError, WorkdirOf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Run:
  """One launch: `python SCRIPT --config=CONFIG --workdir=WORKDIR --config.KEY=VALUE ...`."""
  stage: str
  name: str
  workdir: str
  script: str
  config: str
  kind: str                      # "train" | "eval": decides what "finished" means
  overrides: dict[str, Any]      # every --config.KEY=VALUE, base first, then axes
  nodes: int
  deps: tuple[str, ...]          # workdirs of runs that must be done before this one starts
  status: status.Status

  @property
  def label(self) -> str:
    return f"{self.stage}/{self.name}" if self.stage else self.name

  def command(self, python: str = "python") -> list[str]:
    args = [python, self.script, f"--config={self.config}", f"--workdir={self.workdir}"]
    if self.nodes > 1:
      args.append("--distributed")  # train.py: jax.distributed.initialize() from the env
    args += [f"--config.{key}={naming.format_value(value)}"
             for key, value in self.overrides.items()]
    return args


@dataclasses.dataclass
class Stage:
  name: str
  sweep: Sweep
  runs: list[Run]

  @property
  def pending(self) -> list[Run]:
    return [run for run in self.runs if run.status.state != status.FINISHED]


@dataclasses.dataclass
class Plan:
  sweep_file: str
  name: str
  root: str
  stages: list[Stage]

  @property
  def runs(self) -> list[Run]:
    return [run for stage in self.stages for run in stage.runs]


def load_sweeps(sweep_file: str) -> list[Sweep]:
  """Calls the file's get_sweep(); a single Sweep becomes a one-stage list."""
  spec = importlib.util.spec_from_file_location("_sweep_file", sweep_file)
  if spec is None or not os.path.isfile(sweep_file):
    raise SweepError(f"sweep file {sweep_file!r} not found")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise SweepError(f"sweep file {sweep_file!r} has no get_sweep()")
  sweeps = module.get_sweep()
  sweeps = [sweeps] if isinstance(sweeps, Sweep) else list(sweeps)
  if not sweeps or not all(isinstance(s, Sweep) for s in sweeps):
    raise SweepError(f"{sweep_file}: get_sweep() must return a Sweep or a list of Sweeps")
  return sweeps


def build_plan(sweep_file: str, runs_dir: str = "runs",
               root: str | os.PathLike = REPO_ROOT, new_run_dirs: bool = False) -> Plan:
  """Builds and validates every run of a sweep file; raises SweepError listing all problems.

  A run whose workdir holds work done under another config is a problem, unless
  `new_run_dirs`: then the run gets the next free NAME.vN workdir (sweeps/identity.py).
  """
  root = os.path.abspath(root)
  sweeps = load_sweeps(sweep_file)
  sweep_name = naming.sanitize(os.path.splitext(os.path.basename(sweep_file))[0])
  _check_stage_names(sweep_file, sweeps)
  problems: list[str] = []
  stages: list[Stage] = []
  # id(sweep) -> [(axis values incl. the config file, run)] of the stages planned so far.
  planned: dict[int, list[tuple[dict[str, Any], Run]]] = {}
  for sweep in sweeps:
    where = f"sweep {sweep_file}" + (f" stage {sweep.name!r}" if sweep.name else "")
    if sweep.nodes > 1 and sweep.kind == "eval":
      problems.append(f"{where}: nodes={sweep.nodes}, but eval.py runs on one host")
    names = naming.short_names(sweep.axis_keys, sweep.short_names)
    stage = Stage(sweep.name, sweep, [])
    for assignment in sweep.assignments():
      workdir = os.path.join(runs_dir, sweep_name, sweep.name, naming.run_name(assignment, names))
      stage.runs.append(_plan_run(sweep, assignment, workdir, root, planned, where, problems,
                                  new_run_dirs))
    # Only now can later stages refer to this one (never to itself).
    planned[id(sweep)] = [({CONFIG_AXIS: run.config, **assignment}, run)
                          for assignment, run in zip(sweep.assignments(), stage.runs)]
    stages.append(stage)
  problems += _duplicate_workdirs(sweep_file, [r for s in stages for r in s.runs])
  if problems:
    raise SweepError("\n".join(dict.fromkeys(problems)))  # each distinct problem once
  return Plan(sweep_file, sweep_name, root, stages)


def _plan_run(sweep: Sweep, assignment: dict[str, Any], workdir: str, root: str,
              planned, where: str, problems: list[str], new_run_dirs: bool) -> Run:
  """One run: references resolved, overrides validated, identity checked against what its
  workdir recorded, status read from the workdir."""
  run_name = os.path.basename(workdir)
  values = {**sweep.base, **assignment}
  config_file = values.pop(CONFIG_AXIS, sweep.config)
  lookup = {**values, CONFIG_AXIS: config_file}
  deps = []
  for key, value in list(values.items()):
    if isinstance(value, WorkdirOf):
      target = _resolve(value, lookup, planned, where, run_name, problems)
      values[key] = target.workdir if target else ""
      deps += [target.workdir] if target else []
  problem, config = _validated(config_file, values, root)
  if problem:
    problems.append(f"{where}, run {run_name!r} ({config_file}): {problem}")
  if config is not None:
    workdir, problem = _reusable_workdir(root, workdir, sweep.kind,
                                         json.loads(config.to_json_best_effort()), new_run_dirs)
    if problem:
      problems.append(f"{where}, run {run_name!r}: {problem}")
    run_name = os.path.basename(workdir)
  full = os.path.join(root, workdir)
  if config is None:
    state = status.Status(status.NEW, "")
  elif sweep.kind == "train":
    if "num_train_steps" not in config:  # what "finished" means for a train run
      problems.append(f"{where}: {config_file} has no num_train_steps; an eval.py-like "
                      "script needs kind='eval'")
    state = status.train_status(full, int(config.get("num_train_steps", -1)))
  else:
    state = status.eval_status(full)
  return Run(sweep.name, run_name, workdir, sweep.script, config_file, sweep.kind, values,
             sweep.nodes, tuple(deps), state)


def _reusable_workdir(root: str, workdir: str, kind: str, requested: dict[str, Any],
                      new_run_dirs: bool) -> tuple[str, str | None]:
  """(the workdir to use, the problem if the run's own one holds another config's work)."""
  version = 1
  while True:
    candidate = identity.versioned(workdir, version)
    differences = identity.conflict(os.path.join(root, candidate), kind, requested)
    if not differences:
      return candidate, None
    if not new_run_dirs:
      shown = "; ".join(differences[:8]) + (" ..." if len(differences) > 8 else "")
      return workdir, (f"{workdir} holds a run made with another config ({shown}); relaunch "
                       "with --new-run-dirs to start it in a new workdir, or move the old one "
                       "away")
    version += 1


def _check_stage_names(sweep_file: str, sweeps: list[Sweep]) -> None:
  if len(sweeps) == 1:
    return
  names = [s.name for s in sweeps]
  if not all(names) or len(set(names)) != len(names):
    raise SweepError(f"sweep {sweep_file}: with several stages each needs its own name=, "
                     f"got {names}")


def _validated(config_file: str, values: dict[str, Any], root: str):
  """(problem or None, the config with the overrides applied or None)."""
  try:
    module = configs.load_config_module(config_file, root)
  except (OSError, ImportError, SyntaxError) as e:
    return f"cannot load config: {e}", None
  config = module.get_config()
  for key, value in values.items():
    if not isinstance(value, (bool, int, float, str)):
      return f"key {key!r}: only bool, int, float and str values fit on a command line, " \
             f"got {value!r}", None
  problem = configs.apply_overrides(config, values)
  return problem, (None if problem else config)


def _resolve(ref: WorkdirOf, values: dict[str, Any], planned, where: str,
             run_name: str, problems: list[str]) -> Run | None:
  """The one run of the referenced (earlier) stage that agrees on ref.match and ref.where."""
  if id(ref.sweep) not in planned:
    problems.append(f"{where}: WorkdirOf must name an earlier stage of the same sweep file")
    return None
  pairs = ref.key_pairs()
  missing = [ours for ours in pairs.values() if ours not in values]
  if missing:
    problems.append(f"{where}, run {run_name!r}: WorkdirOf matches on {missing}, "
                    "which this run does not set")
    return None
  wanted = {theirs: values[ours] for theirs, ours in pairs.items()} | dict(ref.where)
  found = [run for assignment, run in planned[id(ref.sweep)]
           if all(assignment.get(k, run.overrides.get(k)) == v for k, v in wanted.items())]
  if len(found) != 1:
    problems.append(f"{where}, run {run_name!r}: WorkdirOf({wanted}) found "
                    f"{len(found)} runs in stage {ref.sweep.name!r}, needs exactly 1: "
                    f"{[r.name for r in found]}")
    return None
  return found[0]


def _duplicate_workdirs(sweep_file: str, runs: list[Run]) -> list[str]:
  by_workdir = collections.defaultdict(list)
  for run in runs:
    by_workdir[os.path.normpath(run.workdir)].append(run)
  return [f"sweep {sweep_file}: {len(same)} runs map to one workdir {workdir}: " +
          "; ".join(f"{run.label} {run.overrides}" for run in same)
          for workdir, same in by_workdir.items() if len(same) > 1]
