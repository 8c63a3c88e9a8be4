"""Sandboxed, parallel execution of untrusted programs against their tests, and pass@k.

Knows nothing of JAX or of any model: give it programs and tests, get verdicts.

    from execution import Job, SandboxConfig, run_programs, score
    results = run_programs([Job("p/0", "def f(): return 1", ("assert f() == 1",))])
    print(score(results)["overall"])

See isolation.py for the isolation layers, harness.py for the verdict channel and its threat
model, and cli.py for the command line.
"""
import importlib
from typing import Any

# Loaded on first use (PEP 562), so that a sandbox worker, which imports this package, does not
# pay for the pool's threads and subprocess machinery in every fork.
_EXPORTS = {
    "NAMESPACES": "config", "RLIMITS_ONLY": "config", "SandboxConfig": "config",
    "IsolationUnavailable": "isolation", "WorkerPool": "pool", "run_programs": "pool",
    "ERROR": "records", "FAILED": "records", "KILLED": "records", "PASSED": "records",
    "STATUSES": "records", "SYNTAX_ERROR": "records", "TIMEOUT": "records", "Job": "records",
    "Result": "records", "pass_at_k": "pass_at_k", "score": "pass_at_k",
    "SandboxFailure": "verdict",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module 'execution' has no attribute {name!r}")
  return getattr(importlib.import_module(f"execution.{_EXPORTS[name]}"), name)
