"""Sweeps: define runs in a Python file, then launch them locally or as SLURM array jobs.

    python scripts/launch.py configs/sweeps/lr_seeds.py --dry-run
    python scripts/launch.py configs/sweeps/lr_seeds.py --local 2
    python scripts/launch.py configs/sweeps/objectives.py --slurm runs/slurm/objectives

spec.py defines sweeps (Sweep.product / Sweep.zip, WorkdirOf; the API is documented there),
plan.py expands and validates them into runs (naming.py, configs.py, status.py), local.py and
slurm.py launch them, describe.py prints the dry run.
"""
from sweeps.plan import Plan, Run, build_plan
from sweeps.spec import Sweep, SweepError, WorkdirOf

__all__ = ["Plan", "Run", "Sweep", "SweepError", "WorkdirOf", "build_plan"]
