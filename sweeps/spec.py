"""Sweep definitions: one base config, axes of `--config.*` overrides, product and zip.

A sweep file is a Python file whose `get_sweep()` returns a `Sweep` or a list of them. A list
is a pipeline of stages, launched in order (e.g. pretrain, then finetune from each pretrained
run). Paths (script, config) are relative to the repository root.

    from sweeps import Sweep

    def get_sweep():
      sweep = Sweep(script="train.py", config="configs/synthesis.py",
                    base={"num_train_steps": 300})
      sweep.product(model=["244m", "1b"], **{"optimizer.learning_rate": [1e-4, 3e-4]})
      sweep.zip(seed=[0, 1], **{"data.shuffle_seed": [0, 1]})
      return sweep

gives 2 x 2 x 2 = 8 runs. Semantics:

  * `product(**axes)`: every combination of the listed values; the first key varies slowest.
  * `zip(**axes)`: the lists (all of one length) are walked together, value i with value i.
  * Successive calls combine as a product of the groups, the first call varying slowest.
  * Dotted keys (`optimizer.learning_rate`) can also be given as a positional dict:
    `sweep.product({"optimizer.learning_rate": [1e-4, 3e-4]}, model=["1b"])`.
  * The key `config` varies the config file itself:
    `sweep.product(config=["configs/synthesis.py", "configs/execution.py"])`.
  * `base` holds overrides shared by every run. A key may be set only once (in base or in one
    axis), so a sweep never silently shadows one of its own values.
  * `WorkdirOf(other_sweep, match=("model",))` as a base value stands for the workdir of the
    run of an earlier stage whose `model` equals this run's: that is how a finetuning stage
    gets `init_from`. `match={"model": "meta.model"}` pairs differently named keys and
    `where={"config": "configs/synthesis.py"}` pins the earlier run's values (see
    configs/sweeps/objectives.py). A run starts only after the runs it refers to are done.

Each run is named by its axis values only, e.g. `model=1b,lr=0.0003,seed=0`; `short_names`
renames keys in names (default: the last dotted part, `optimizer.learning_rate` -> `lr`).
`nodes` > 1 asks for a multi-host run (one process per node, SLURM only); `slurm` adds
`#SBATCH --KEY=VALUE` lines (partition, time, gpus-per-node, ...).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

CONFIG_AXIS = "config"  # pseudo-key: varies the config file, not a key inside it


class SweepError(ValueError):
  """A sweep that cannot be launched as written; the message names the sweep and the cause."""


@dataclasses.dataclass(frozen=True, eq=False)
class WorkdirOf:
  """The workdir of the one run of `sweep` (an earlier stage) that agrees with this run.

  `match` lists keys whose values must agree (`("model",)`), or maps the earlier stage's key
  to this run's (`{"model": "meta.model"}` for an eval of a train run); `where` pins values of
  the earlier stage (`{"config": "configs/synthesis.py"}`). Resolved when the plan is built;
  the referring run then starts only after that run is done.
  """
  sweep: "Sweep"
  match: Sequence[str] | Mapping[str, str] = ()
  where: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def key_pairs(self) -> dict[str, str]:
    """Earlier stage's key -> this run's key."""
    if isinstance(self.match, Mapping):
      return dict(self.match)
    return {key: key for key in self.match}


class Sweep:
  """One stage: a script, a base config file, shared overrides and axes of overrides."""

  def __init__(self, script: str, config: str, base: Mapping[str, Any] | None = None, *,
               name: str = "", nodes: int = 1, kind: str | None = None,
               short_names: Mapping[str, str] | None = None,
               slurm: Mapping[str, Any] | None = None):
    if kind is None:
      kind = "eval" if os.path.basename(script) == "eval.py" else "train"
    if kind not in ("train", "eval"):
      raise SweepError(f"sweep {name or script!r}: kind must be 'train' or 'eval', not {kind!r}")
    if nodes < 1:
      raise SweepError(f"sweep {name or script!r}: nodes must be >= 1, not {nodes}")
    self.script = script
    self.config = config
    self.base = dict(base or {})
    self.name = name
    self.nodes = nodes
    self.kind = kind
    self.short_names = dict(short_names or {})
    self.slurm = dict(slurm or {})
    # Each group is a list of assignments {key: value}; runs = product over groups.
    self._groups: list[list[dict[str, Any]]] = []

  def product(self, axes: Mapping[str, Sequence[Any]] | None = None,
              **more: Sequence[Any]) -> "Sweep":
    """Adds every combination of the given values (first key slowest)."""
    merged = self._merge(axes, more, "product")
    keys = list(merged)
    self._groups.append([dict(zip(keys, values))
                         for values in itertools.product(*merged.values())])
    return self

  def zip(self, axes: Mapping[str, Sequence[Any]] | None = None,
          **more: Sequence[Any]) -> "Sweep":
    """Adds the given lists walked together; they must have one length."""
    merged = self._merge(axes, more, "zip")
    lengths = {key: len(values) for key, values in merged.items()}
    if len(set(lengths.values())) > 1:
      raise SweepError(f"sweep {self.label}: zip needs lists of one length, got {lengths}")
    keys = list(merged)
    self._groups.append([dict(zip(keys, values)) for values in zip(*merged.values())])
    return self

  @property
  def label(self) -> str:
    return repr(self.name or self.config)

  @property
  def axis_keys(self) -> list[str]:
    """Keys that vary, in the order they were added (the order of names)."""
    return [key for group in self._groups for key in (group[0] if group else {})]

  def assignments(self) -> list[dict[str, Any]]:
    """The axis overrides of each run, in launch order."""
    runs = []
    for combo in itertools.product(*self._groups):
      merged: dict[str, Any] = {}
      for part in combo:
        merged.update(part)
      runs.append(merged)
    return runs

  def _merge(self, axes, more, how: str) -> dict[str, list[Any]]:
    merged = {**(axes or {}), **more}
    if not merged:
      raise SweepError(f"sweep {self.label}: {how}() needs at least one axis")
    taken = set(self.base) | set(self.axis_keys)
    for key, values in merged.items():
      if key in taken:
        raise SweepError(f"sweep {self.label}: key {key!r} is set twice (base or another axis)")
      if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise SweepError(f"sweep {self.label}: axis {key!r} needs a list of values, "
                         f"got {values!r}")
      if not values:
        raise SweepError(f"sweep {self.label}: axis {key!r} has no values")
    return {key: list(values) for key, values in merged.items()}
