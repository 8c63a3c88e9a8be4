"""pass@k with the unbiased estimator of Chen et al. (2021), pass rates and status counts.

For a problem with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k): the chance
that at least one of k samples drawn without replacement passes. It is reported only for
k <= n (for k > n the estimator is undefined, and padding it would flatter small runs).
Results are grouped into problems by a caller-supplied function of the result id; the default
takes everything before the last "/" (so "mbpp/11/3" is sample 3 of problem "mbpp/11").
"""
import collections
import math
from typing import Callable, Iterable, Sequence

from execution.records import STATUSES, Result


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased estimate of pass@k from n samples with c correct; requires 1 <= k <= n."""
  if not 0 <= c <= n:
    raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
  if not 1 <= k <= n:
    raise ValueError(f"pass@{k} is undefined with n={n} samples")
  if n - c < k:
    return 1.0
  # Product form of 1 - C(n-c, k) / C(n, k); exact binomials overflow floats for large n.
  return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def problem_of(result_id: str) -> str:
  return result_id.rsplit("/", 1)[0] if "/" in result_id else result_id


def score(results: Iterable[Result], ks: Sequence[int] = (1, 10, 80),
          group: Callable[[str], str] = problem_of,
          statuses: Sequence[str] = STATUSES) -> dict:
  """Per-problem and overall pass@k, pass rate and status counts.

  `statuses` are the keys of the status counts: the sandbox's STATUSES, or those plus any
  verdicts a caller reaches without running a program. A result with another status is an
  error, never silently left out of the counts.

  Overall pass@k is the mean over problems that have at least k samples; `problems_at_k`
  says how many that was, so a partial run cannot silently report a different average.
  """
  by_problem: dict[str, list[Result]] = collections.defaultdict(list)
  for r in results:
    by_problem[group(r.id)].append(r)
  per_problem = {}
  for name, rs in by_problem.items():
    n, c = len(rs), sum(r.passed for r in rs)
    counts = collections.Counter(r.status for r in rs)
    unknown = counts.keys() - set(statuses)
    if unknown:
      raise ValueError(f"{name}: unknown status(es) {sorted(unknown)}; known: {list(statuses)}")
    per_problem[name] = {
        "n": n, "passed": c, "pass_rate": c / n,
        "pass_at_k": {k: pass_at_k(n, c, k) for k in ks if k <= n},
        "status_counts": {s: counts.get(s, 0) for s in statuses},
    }
  overall_counts = collections.Counter()
  for p in per_problem.values():
    overall_counts.update(p["status_counts"])
  total = sum(p["n"] for p in per_problem.values())
  overall_pass_at_k, problems_at_k = {}, {}
  for k in ks:
    values = [p["pass_at_k"][k] for p in per_problem.values() if k in p["pass_at_k"]]
    if values:
      overall_pass_at_k[k] = sum(values) / len(values)
      problems_at_k[k] = len(values)
  return {
      "overall": {
          "problems": len(per_problem), "samples": total,
          "passed": sum(p["passed"] for p in per_problem.values()),
          "pass_rate": (sum(p["passed"] for p in per_problem.values()) / total) if total else 0.0,
          "pass_at_k": overall_pass_at_k, "problems_at_k": problems_at_k,
          "status_counts": {s: overall_counts.get(s, 0) for s in statuses},
      },
      "per_problem": per_problem,
  }
