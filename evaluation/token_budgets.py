"""How many tokens an eval's prompts may have and how many its samples may write.

`config.sampling.max_new_tokens`: 0 (AUTO, the default) = enough for the reference answer of
every evaluated problem as the model would write it: the most tokens any example's target (the
reference solution through its `[DONE]`) takes with the model's tokenizer after a prompt,
rounded up to a multiple of NEW_TOKENS_MULTIPLE. A set value is used as it is, and the problems
whose reference answer it cannot hold are listed in results.json, with their token counts.

`config.max_prompt_len`: 0 (AUTO, the default) = the model's context length less
max_new_tokens, where the model declares one (an imported checkpoint's
max_position_embeddings); our own models (RoPE, no position table) declare none and get
DEFAULT_MAX_PROMPT_LEN. A set value must leave max_new_tokens of the context free. Prompts
longer than it lose whole shots or fail (data/prompt_fit.py, `config.prompt_overflow`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

AUTO = 0
NEW_TOKENS_MULTIPLE = 32
DEFAULT_MAX_PROMPT_LEN = 1024


@dataclasses.dataclass(frozen=True)
class TokenBudgets:
  max_new_tokens: int
  max_prompt_len: int
  report: dict[str, Any]   # results.json meta["token_budgets"]


def reference_tokens(examples: Sequence[dict[str, Any]],
                     completion_tokens: Callable[[str], int]) -> dict[str, int]:
  """{example id: tokens of its target (reference answer and `[DONE]`) as a completion}."""
  return {e["id"]: completion_tokens(e["target"]) for e in examples}


def auto_new_tokens(longest_reference: int) -> int:
  return max(1, -(-longest_reference // NEW_TOKENS_MULTIPLE)) * NEW_TOKENS_MULTIPLE


def resolve(*, max_new_tokens: int, max_prompt_len: int, examples: Sequence[dict[str, Any]],
            completion_tokens: Callable[[str], int], context_len: int | None) -> TokenBudgets:
  """The budgets for `examples` from the configured values (AUTO or set).

  Raises ValueError for values that cannot work: negative ones, or a prompt length and new
  tokens that overflow the model's context.
  """
  if max_new_tokens < 0 or max_prompt_len < 0:
    raise ValueError(f"sampling.max_new_tokens={max_new_tokens} and max_prompt_len="
                     f"{max_prompt_len} must be >= 0 (0 = computed: evaluation/token_budgets.py)")
  references = reference_tokens(examples, completion_tokens)
  longest = max(references.values(), default=0)
  new_tokens = auto_new_tokens(longest) if max_new_tokens == AUTO else max_new_tokens
  if max_prompt_len != AUTO:
    prompt_len, prompt_from = max_prompt_len, "config"
    if context_len is not None and prompt_len + new_tokens > context_len:
      raise ValueError(f"max_prompt_len={prompt_len} + max_new_tokens={new_tokens} exceed the "
                       f"model's context of {context_len} tokens; lower one of them, or set "
                       "max_prompt_len=0 to use the context less max_new_tokens")
  elif context_len is not None:
    prompt_len, prompt_from = context_len - new_tokens, "model context less max_new_tokens"
    if prompt_len <= 0:
      raise ValueError(f"max_new_tokens={new_tokens} leaves no room for a prompt in the "
                       f"model's context of {context_len} tokens")
  else:
    prompt_len, prompt_from = DEFAULT_MAX_PROMPT_LEN, "default (the model declares no context)"
  report = {
      "max_new_tokens": new_tokens,
      "max_new_tokens_from": "auto (longest reference)" if max_new_tokens == AUTO else "config",
      "longest_reference_tokens": longest,
      # Problems whose reference answer does not fit: a model writing it would be cut.
      "references_over_budget": {i: n for i, n in references.items() if n > new_tokens},
      "max_prompt_len": prompt_len, "max_prompt_len_from": prompt_from,
      "context_len": context_len,
  }
  return TokenBudgets(new_tokens, prompt_len, report)
