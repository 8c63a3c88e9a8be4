"""Token-level steps of the input pipeline: records -> sequences -> rows -> model batches.

A *sequence* is one example's tokens, `encode(prompt) + encode(target) + [eos]`, with a
`target_mask` that is 1 on the target tokens and the eos. A *row* is `seq_len` tokens holding
one or more sequences, told apart by `segment_ids` (1, 2, ...; 0 = padding) and with
`positions` restarting at 0 per sequence. `rows_to_model_batch` turns rows into the batch
contract documented in `data/pipeline.py`.

Sequences longer than `seq_len`:
- Documents (empty prompt) are split into windows of `seq_len` tokens that overlap by one
  token. Within a row only tokens 1.. of a sequence are predicted (token 0 has no context),
  so the overlap makes every token of the document except the very first a prediction
  target exactly once: no text is lost to the loss.
- Prompt/target pairs are truncated: first the prompt from the left (keeping the context
  nearest the target), then, if the target and eos alone do not fit, the target from the
  right, always keeping the last prompt token so that the first target token is predicted.
  `count_truncated` counts how many records of a source this affects.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from data import tokenizer as tokenizer_lib

SequenceDict = dict[str, np.ndarray]


def tokenize_record(
    record: Mapping[str, Any], tokenizer: tokenizer_lib.Tokenizer
) -> SequenceDict:
  """{"prompt", "target"} -> {"tokens", "target_mask", "prompt_length"}, untruncated."""
  # encode_prompt adds BOS for imported models that expect it (ours: none); a target that
  # follows a prompt is a continuation (no Llama-style dummy-prefix space in front of it).
  if record["prompt"]:
    prompt_ids = tokenizer.encode_prompt(record["prompt"])
    target_ids = tokenizer.encode_continuation(record["target"])
  else:
    prompt_ids = []
    target_ids = tokenizer.encode_prompt(record["target"])
  target_ids = target_ids + [tokenizer.eos_id]
  tokens = np.asarray(prompt_ids + target_ids, dtype=np.int32)
  target_mask = np.zeros(len(tokens), dtype=np.int32)
  target_mask[len(prompt_ids):] = 1
  return {
      "tokens": tokens,
      "target_mask": target_mask,
      "prompt_length": np.int32(len(prompt_ids)),
  }


def is_truncated(sequence: SequenceDict, seq_len: int) -> bool:
  """Whether `fit_to_length` would drop tokens of this prompt/target sequence."""
  return int(sequence["prompt_length"]) > 0 and len(sequence["tokens"]) > seq_len


def fit_to_length(sequence: SequenceDict, seq_len: int) -> list[SequenceDict]:
  """Makes sequences of at most `seq_len` tokens: splits documents, truncates pairs."""
  if seq_len < 2:
    raise ValueError(f"seq_len must be at least 2, got {seq_len}")
  tokens, target_mask = sequence["tokens"], sequence["target_mask"]
  num_tokens = len(tokens)
  if num_tokens <= seq_len:
    return [{"tokens": tokens, "target_mask": target_mask}]

  prompt_length = int(sequence["prompt_length"])
  if prompt_length == 0:
    stride = seq_len - 1  # Windows share one token; see the module docstring.
    return [
        {"tokens": tokens[start:start + seq_len],
         "target_mask": target_mask[start:start + seq_len]}
        for start in range(0, num_tokens - 1, stride)
    ]

  target_length = num_tokens - prompt_length
  kept_prompt = max(seq_len - target_length, 1)
  start = prompt_length - kept_prompt
  return [{"tokens": tokens[start:start + seq_len],
           "target_mask": target_mask[start:start + seq_len]}]


def count_truncated(
    records: Iterable[Mapping[str, Any]], tokenizer: tokenizer_lib.Tokenizer, seq_len: int
) -> int:
  """How many prompt/target records lose tokens at `seq_len` (documents never do)."""
  return sum(is_truncated(tokenize_record(r, tokenizer), seq_len) for r in records)


def pad_to_row(sequence: SequenceDict, seq_len: int) -> SequenceDict:
  """One sequence as a padded row, in the same layout that packing produces."""
  num_tokens = len(sequence["tokens"])
  row = {
      "tokens": np.zeros(seq_len, np.int32),
      "target_mask": np.zeros(seq_len, np.int32),
      "tokens_segment_ids": np.zeros(seq_len, np.int32),
      "tokens_positions": np.zeros(seq_len, np.int32),
  }
  row["tokens"][:num_tokens] = sequence["tokens"]
  row["target_mask"][:num_tokens] = sequence["target_mask"]
  row["tokens_segment_ids"][:num_tokens] = 1
  row["tokens_positions"][:num_tokens] = np.arange(num_tokens)
  return row


def empty_rows_like(rows: Mapping[str, np.ndarray], num_rows: int) -> SequenceDict:
  """`num_rows` all-padding rows, to fill up a final partial batch to a static shape."""
  return {k: np.zeros((num_rows,) + v.shape[1:], v.dtype) for k, v in rows.items()}


def rows_to_model_batch(rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Packed rows [B, L] -> the model batch contract of `data/pipeline.py`."""
  tokens_BxL = np.asarray(rows["tokens"], np.int32)
  segment_ids_BxL = np.asarray(rows["tokens_segment_ids"], np.int32)
  positions_BxL = np.asarray(rows["tokens_positions"], np.int32)
  target_mask_BxL = np.asarray(rows["target_mask"], np.int32)

  # Position t predicts token t+1 only if both belong to the same (non-padding) sequence.
  same_segment_BxLm1 = (segment_ids_BxL[:, 1:] == segment_ids_BxL[:, :-1]) & (
      segment_ids_BxL[:, :-1] != 0
  )
  targets_BxL = np.zeros_like(tokens_BxL)
  targets_BxL[:, :-1] = np.where(same_segment_BxLm1, tokens_BxL[:, 1:], 0)
  loss_mask_BxL = np.zeros(tokens_BxL.shape, np.float32)
  loss_mask_BxL[:, :-1] = same_segment_BxLm1 & (target_mask_BxL[:, 1:] != 0)
  return {
      "inputs": tokens_BxL,
      "targets": targets_BxL,
      "loss_mask": loss_mask_BxL,
      "segment_ids": segment_ids_BxL,
      "positions": np.where(segment_ids_BxL != 0, positions_BxL, 0).astype(np.int32),
  }


def num_target_tokens(batch: Mapping[str, np.ndarray]) -> int:
  """Tokens that carry loss in a model batch."""
  return int(np.sum(batch["loss_mask"]))


def unpack_row(batch: Mapping[str, np.ndarray], row: int) -> list[np.ndarray]:
  """The token sequences packed into one row of a model batch, in segment order."""
  segment_ids_L = batch["segment_ids"][row]
  return [
      batch["inputs"][row][segment_ids_L == segment_id]
      for segment_id in sorted(set(segment_ids_L.tolist()) - {0})
  ]
