"""The one progress-line format of every long loop: training steps, sampling, sandbox runs.

    executed 1200/40000 programs, 512/s, ETA 1m16s
    sampled 12/500 problems, 0.25/s, 80 samples each, 5120 tokens/s, ETA 32m32s
    step 250/2000, 3.1/s, loss 5.1700, lr 3.00e-04, |g| 0.512, 12783 tok/s, ETA 9m20s

It lives in rundir/, which imports nothing else of the project, so that execution/ (the
sandbox's own command line), training/ and evaluation/ all write the same line.
"""
from typing import Sequence


def format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _rate(per_second: float) -> str:
  if per_second >= 100:
    return f"{per_second:.0f}"
  return f"{per_second:.1f}" if per_second >= 1 else f"{per_second:.2g}"


def progress_line(verb: str, done: int, total: int, unit: str, per_second: float,
                  details: Sequence[str] = ()) -> str:
  """`{verb} {done}/{total}[ {unit}], {rate}/s[, details], ETA {time}`."""
  eta = format_duration((total - done) / per_second) if per_second > 0 else "?"
  head = f"{verb} {done}/{total}" + (f" {unit}" if unit else "")
  return ", ".join([head, f"{_rate(per_second)}/s", *details, f"ETA {eta}"])
