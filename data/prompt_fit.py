"""Fitting prompts into a model's context: whole shots go, never part of one.

A prompt (data/prompts.py) is its shots, then the query; an example records where each shot
ends in its prompt ("prompt_shot_ends"). A repair dialog (evaluation/repair.py) grows a prompt
at its end, so the offsets stay true for it. When a prompt has more tokens than a model may
read, one of two things happens, as the eval config says (`prompt_overflow`):

  * "drop_shots": the last shots go, one at a time, until the prompt fits. What stays is the
    first shots (so prompts that kept them still share the start a sampler prefills once),
    then the query (the task, its tests and `[BEGIN]`) and anything a dialog added. The
    tokenizer sees the whole new text, so a BOS token it adds stays first. A prompt that does
    not fit without any shot fails as below.
  * "fail": the problem is not sampled; each of its samples is scored PROMPT_TOO_LONG.

Nothing is ever cut from the start or inside a shot. The fitted example says what happened:
"shots_dropped" (how many) or PROMPT_TOO_LONG (True); `fit_report` lists the problems.
"""
from typing import Any, Callable, Iterable, Sequence

OVERFLOW_MODES = ("drop_shots", "fail")
PROMPT_TOO_LONG = "prompt_too_long"   # the example key, and the samples' status
SHOT_ENDS = "prompt_shot_ends"
SHOTS_DROPPED = "shots_dropped"


def check_overflow(overflow: str) -> None:
  if overflow not in OVERFLOW_MODES:
    raise ValueError(f"unknown prompt_overflow {overflow!r}; expected one of {OVERFLOW_MODES}")


def without_last_shots(prompt: str, shot_ends: Sequence[int], count: int) -> str:
  """`prompt` without its last `count` shots (the text between their start and the query)."""
  if not 0 <= count <= len(shot_ends):
    raise ValueError(f"cannot drop {count} of {len(shot_ends)} shots")
  if count == 0:
    return prompt
  kept = len(shot_ends) - count
  start = shot_ends[kept - 1] if kept else 0
  return prompt[:start] + prompt[shot_ends[-1]:]


def fit_example(example: dict[str, Any], count_tokens: Callable[[str], int], max_tokens: int,
                overflow: str) -> dict[str, Any]:
  """`example` with a prompt of at most `max_tokens` tokens (as `count_tokens` counts the
  whole text, BOS included), or marked PROMPT_TOO_LONG; unchanged when it fits."""
  check_overflow(overflow)
  prompt = example["prompt"]
  if count_tokens(prompt) <= max_tokens:
    return example
  shot_ends = list(example.get(SHOT_ENDS, ()))
  if overflow == "drop_shots":
    for count in range(1, len(shot_ends) + 1):
      shorter = without_last_shots(prompt, shot_ends, count)
      if count_tokens(shorter) <= max_tokens:
        return {**example, "prompt": shorter, SHOT_ENDS: shot_ends[:len(shot_ends) - count],
                SHOTS_DROPPED: example.get(SHOTS_DROPPED, 0) + count}
  return {**example, PROMPT_TOO_LONG: True}


def fit_examples(examples: Iterable[dict[str, Any]], count_tokens: Callable[[str], int],
                 max_tokens: int, overflow: str) -> list[dict[str, Any]]:
  return [fit_example(e, count_tokens, max_tokens, overflow) for e in examples]


def is_too_long(example: dict[str, Any]) -> bool:
  return bool(example.get(PROMPT_TOO_LONG))


def fit_report(examples: Iterable[dict[str, Any]]) -> dict[str, Any]:
  """What fitting did to `examples`: {"shots_dropped": {id: shots}, "prompt_too_long": [ids]},
  in example order (results.json's "prompt_fit")."""
  dropped, too_long = {}, []
  for example in examples:
    if is_too_long(example):
      too_long.append(example["id"])
    elif example.get(SHOTS_DROPPED):
      dropped[example["id"]] = example[SHOTS_DROPPED]
  return {SHOTS_DROPPED: dropped, PROMPT_TOO_LONG: too_long}
