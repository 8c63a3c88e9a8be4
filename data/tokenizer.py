"""SentencePiece tokenizer for Python source: loading, training and a fingerprint.

Special ids are fixed so that every tokenizer trained here agrees on them:

    0 <pad>   padding; the input pipeline pads with 0 and the model may rely on it
    1 </s>    end of sequence; appended after every training target
    2 <s>     beginning of sequence; not added by `encode`
    3 <unk>   never produced in practice, because byte_fallback covers every byte
    4 "\\n"   newline, a user-defined symbol so that it is always one piece
    5 "\\t"   tab, likewise

Training settings are chosen for an exact round trip, `decode(encode(s)) == s`, on source
code: identity normalization (no NFKC, which would rewrite unicode in string literals), no
dummy space prefix, no whitespace collapsing, whitespace-only pieces allowed (so that
indentation runs such as four spaces become single pieces), digits split one per piece, and
byte fallback for every character outside the learned vocabulary.

SentencePiece trains on "sentences"; we feed it the lines of each text with their newlines
kept. Because "\\n" is a user-defined symbol it is always split off, so no piece could span
a line break anyway and nothing is lost by training line by line, while lines are short
enough to keep training fast.
"""

from collections.abc import Iterable, Iterator, Sequence
import hashlib
import io
import os
import pathlib

import sentencepiece as spm

PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3
_USER_DEFINED_SYMBOLS = ("\n", "\t")

# SentencePiece drops longer sentences; minified or generated lines longer than this add
# nothing useful to a code vocabulary.
_MAX_LINE_BYTES = 1 << 14


class Tokenizer:
  """A SentencePiece model plus the conventions of this project (see module docstring)."""

  def __init__(self, model_proto: bytes, model_path: str | None = None, *,
               imported: bool = False, add_bos: bool = False):
    """`imported`: a public model's tokenizer (interop/import_checkpoint.py), whose special ids
    differ from ours (Llama: unk 0, bos 1, eos 2, no pad; Gemma: pad 0, eos 1, bos 2); the
    pad id is then not checked, which is safe because the input pipeline masks padding by
    segment id 0, not by token id. `add_bos`: `encode_prompt` starts with BOS, as those
    models were trained; our own models never see BOS."""
    self._model_proto = model_proto
    self._model_path = model_path
    self._imported = imported
    self._add_bos = add_bos
    self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
    self._continuation_processor = _without_dummy_prefix(model_proto) or self._processor
    if not imported and self._processor.pad_id() != PAD_ID:
      raise ValueError(f"tokenizer pad id is {self._processor.pad_id()}, expected {PAD_ID} "
                       "(an imported checkpoint's tokenizer loads with imported=True, which "
                       "model/run_dir.py's load_tokenizer sets for imported runs)")

  def __getstate__(self) -> dict[str, object]:
    # The SentencePiece processor does not pickle; rebuild it from the model bytes, so that
    # grain worker processes can receive a tokenizer.
    return {"model_proto": self._model_proto, "model_path": self._model_path,
            "imported": self._imported, "add_bos": self._add_bos}

  def __setstate__(self, state: dict[str, object]) -> None:
    self.__init__(state["model_proto"], model_path=state["model_path"],
                  imported=bool(state.get("imported", False)),
                  add_bos=bool(state.get("add_bos", False)))

  @classmethod
  def load(cls, path: str | os.PathLike[str], **options: bool) -> "Tokenizer":
    """Loads a `.model` file written by `train_tokenizer` or `save`.

    `options` (imported, add_bos) are the constructor's; a run's tokenizer, whose
    conventions its run directory records, loads through model/run_dir.py's load_tokenizer.
    """
    path = pathlib.Path(path)
    return cls(path.read_bytes(), model_path=str(path), **options)

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes the serialized model, e.g. to copy it into a run's workdir."""
    pathlib.Path(path).write_bytes(self._model_proto)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without BOS or EOS."""
    return self._processor.encode(text, out_type=int)

  def encode_continuation(self, text: str) -> list[int]:
    """Token ids of text that continues already-encoded text (e.g. a target after its prompt).

    Llama-style models add a "dummy prefix" space at the start of every `encode`; encoding a
    continuation with it would insert a space that is not in the text, so that
    `encode(a) + encode_continuation(b) == encode(a + b)` holds (at piece boundaries) only
    without it. Our own tokenizers have no dummy prefix: this equals `encode` for them.
    """
    return self._continuation_processor.encode(text, out_type=int)

  def encode_prompt(self, text: str) -> list[int]:
    """Token ids of text that starts a sequence: BOS first if the model expects it (imported
    Llama/Gemma models do; ours do not, so this equals `encode` for them)."""
    return ([self.bos_id] if self._add_bos else []) + self.encode(text)

  @property
  def add_bos(self) -> bool:
    return self._add_bos

  @property
  def imported(self) -> bool:
    return self._imported

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; pad, BOS and EOS ids decode to nothing."""
    return self._processor.decode([int(i) for i in ids])

  def id_to_piece(self, token_id: int) -> str:
    return self._processor.id_to_piece(int(token_id))

  @property
  def vocab_size(self) -> int:
    return self._processor.get_piece_size()

  @property
  def pad_id(self) -> int:
    return self._processor.pad_id()

  @property
  def eos_id(self) -> int:
    return self._processor.eos_id()

  @property
  def bos_id(self) -> int:
    return self._processor.bos_id()

  @property
  def unk_id(self) -> int:
    return self._processor.unk_id()

  @property
  def model_path(self) -> str | None:
    """Where the model was loaded from or trained to; None for one built from bytes."""
    return self._model_path

  @property
  def model_proto(self) -> bytes:
    """The serialized SentencePiece model; `Tokenizer(model_proto)` rebuilds it."""
    return self._model_proto

  @property
  def sha256(self) -> str:
    """Hex digest of the serialized model, to check a checkpoint's tokenizer matches."""
    return hashlib.sha256(self._model_proto).hexdigest()

  def __repr__(self) -> str:
    return f"Tokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]})"


def token_texts(tokenizer: Tokenizer) -> list[str]:
  """Every token's text as it reads after other text: the stop strings' automaton's input
  (decode/stop_matcher.py build_stop_table).

  Not `decode([id])` alone: a SentencePiece model with a dummy prefix (Llama's) strips the
  leading space of a text's first piece, so alone `▁if` reads `if` and `▁` nothing, and
  "\\n" + "▁if" would spell a false "\\nif". After an anchor piece that reads as letters
  alone (so nothing of it was stripped), nothing is."""
  alone = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
  anchor = next((i for i, text in enumerate(alone) if text.isalnum()), None)
  if anchor is None:
    return alone
  texts = []
  for i, text in enumerate(alone):
    after = tokenizer.decode([anchor, i])
    texts.append(after[len(alone[anchor]):] if after.startswith(alone[anchor]) else text)
  return texts


def _without_dummy_prefix(model_proto: bytes) -> spm.SentencePieceProcessor | None:
  """A processor for the same model with add_dummy_prefix off; None if it is off already."""
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(model_proto)
  if not proto.normalizer_spec.add_dummy_prefix:
    return None
  proto.normalizer_spec.add_dummy_prefix = False
  return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def _training_lines(texts: Iterable[str], max_lines: int | None) -> Iterator[str]:
  """Yields the lines of `texts`, newlines kept, the first `max_lines` of them at most."""
  num_lines = 0
  for text in texts:
    for line in text.splitlines(keepends=True):
      if len(line.encode("utf-8")) > _MAX_LINE_BYTES:
        continue
      if max_lines is not None and num_lines >= max_lines:
        return
      num_lines += 1
      yield line


def train_tokenizer(
    texts: Iterable[str],
    output_prefix: str | os.PathLike[str],
    vocab_size: int,
    *,
    model_type: str = "bpe",
    max_lines: int | None = 2_000_000,
    character_coverage: float = 0.9999,
    num_threads: int | None = None,
) -> Tokenizer:
  """Trains a SentencePiece model on `texts` and writes `{output_prefix}.model`.

  Deterministic: the same texts in the same order give byte-identical models (checked for
  BPE with several threads; the input is taken in order, never sampled). About 4 s for an
  8k BPE vocabulary on the Python standard library on 2 CPU cores; unigram takes ~10x longer.

  Args:
    texts: Documents (e.g. whole source files); split into lines for training.
    output_prefix: Path prefix; the model is written to `{output_prefix}.model`.
    vocab_size: Number of pieces including the 6 special ones and 256 byte pieces.
    model_type: "bpe" (default, fast) or "unigram".
    max_lines: Train on at most this many lines, in input order; None for all.
    character_coverage: Fraction of characters to cover with pieces; the rest fall back to
      bytes.
    num_threads: Trainer threads; default: all CPUs.

  Returns:
    The trained tokenizer, with `model_path` set to the written file.
  """
  model_buffer = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=_training_lines(texts, max_lines),
      model_writer=model_buffer,
      vocab_size=vocab_size,
      model_type=model_type,
      normalization_rule_name="identity",
      add_dummy_prefix=False,
      remove_extra_whitespaces=False,
      split_by_whitespace=True,
      allow_whitespace_only_pieces=True,
      split_digits=True,
      byte_fallback=True,
      character_coverage=character_coverage,
      user_defined_symbols=list(_USER_DEFINED_SYMBOLS),
      pad_id=PAD_ID,
      eos_id=EOS_ID,
      bos_id=BOS_ID,
      unk_id=UNK_ID,
      # Use every line given, in order: sampling would make the model depend on a RNG.
      input_sentence_size=0,
      shuffle_input_sentence=False,
      max_sentence_length=_MAX_LINE_BYTES,
      num_threads=num_threads or os.cpu_count() or 1,
      minloglevel=2,
  )
  model_path = pathlib.Path(f"{os.fspath(output_prefix)}.model")
  model_path.parent.mkdir(parents=True, exist_ok=True)
  model_path.write_bytes(model_buffer.getvalue())
  return Tokenizer(model_buffer.getvalue(), model_path=str(model_path))
