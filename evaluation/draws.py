"""The draw variant: which random draws an eval's samples use, besides the seed.

A sample's draws are keyed by (seed, problem, sample index, position) (evaluation/sampler.py,
decode/engine.py). Two evals that differ only in their prompt (or token rule) would
then share their uniforms: prompt A's sample i and prompt B's sample i start alike far more
often than two independent samples do, and a union of both (the prompt-ensemble study) rests
on correlated samples. So what a study varies goes into the key as well: the variant is a
stable hash of the prompt options and the sampling settings that differ from their defaults,
folded into the seed's key. The defaults give variant 0, which folds nothing in, so an eval
with the default prompt and token rule draws what it always has; the same config always
gives the same variant, so a rerun (or a plain eval of a study's variant config) draws the
same samples. The token budget (max_new_tokens) and the number of samples are not part of
it: a longer budget or more samples extend the same samples.
"""
from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Any

from data.tasks import PROMPT_OPTIONS_TYPES
from decode.token_choice import SamplingConfig

_TOKEN_RULE = ("temperature", "top_k", "top_p")  # the SamplingConfig fields that shape a draw


def _changed(kind: str, options: Any, names: tuple[str, ...] | None = None
             ) -> dict[str, Any]:
  """{kind.field: value} of the fields of `options` (a dataclass) that differ from its
  type's default."""
  default = type(options)()
  return {f"{kind}.{f.name}": getattr(options, f.name) for f in dataclasses.fields(options)
          if (names is None or f.name in names)
          and getattr(options, f.name) != getattr(default, f.name)}


def draw_variant_of(task: str, prompt_options: dict[str, Any],
                    sampling: SamplingConfig) -> dict[str, Any]:
  """What makes an eval's draws a variant: {"prompt.FIELD" | "sampling.FIELD": value} for
  each prompt option (the set ones, evaluation/runner.py prompt_options) and sampling
  setting of the token rule that differs from its default (when it samples); {} for the
  defaults."""
  options = PROMPT_OPTIONS_TYPES[task](**prompt_options)
  changed = _changed("prompt", options)
  if sampling.temperature > 0:  # Greedy decoding draws nothing: its token rule is no variant.
    changed.update(_changed("sampling", sampling, _TOKEN_RULE))
  return changed


def draw_variant(variant_of: dict[str, Any]) -> int:
  """The variant (a 31-bit int) folded into the draws' key; 0 for {} (nothing folded in)."""
  if not variant_of:
    return 0
  text = json.dumps(variant_of, sort_keys=True)
  return (zlib.crc32(text.encode()) & 0x7FFFFFFF) or 1
