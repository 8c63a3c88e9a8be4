"""Tests for data/pipeline.py and data/packing.py: the batch contract, packing, sharding, resume."""

import collections

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data import code_corpus
from data import packing
from data import pipeline
from data import tokenizer as tokenizer_lib

SEQ_LEN = 64


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> tokenizer_lib.Tokenizer:
  files = list(code_corpus.iter_source_files(code_corpus.stdlib_dir()))[:40]
  prefix = tmp_path_factory.mktemp("tok") / "tiny"
  return tokenizer_lib.train_tokenizer([t for _, t in files], prefix, vocab_size=500)


def _pairs(count: int) -> list[dict[str, str]]:
  return [
      {"prompt": f"# Add {i} to x.\n" + "# more words\n" * (i % 3),
       "target": f"def add_{i}(x):\n    return x + {i}\n"}
      for i in range(count)
  ]


def _documents(count: int, max_lines: int) -> list[dict[str, str]]:
  return [
      {"prompt": "", "target": "".join(f"v{i}_{j} = {j}\n" for j in range(1 + i % max_lines))}
      for i in range(count)
  ]


def _sequence(record, tokenizer) -> tuple[int, ...]:
  return tuple(packing.tokenize_record(record, tokenizer)["tokens"].tolist())


def _take(iterator, count: int) -> list[dict[str, np.ndarray]]:
  return [next(iterator) for _ in range(count)]


def _all_batches(iterator) -> list[dict[str, np.ndarray]]:
  return list(iterator)


def _segments(batches) -> list[tuple[int, ...]]:
  return [
      tuple(tokens.tolist())
      for batch in batches
      for row in range(len(batch["inputs"]))
      for tokens in packing.unpack_row(batch, row)
  ]


def _assert_batches_equal(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_contract_shapes_and_dtypes(tokenizer):
  iterator = pipeline.make_iterator(
      _pairs(20) + _documents(20, 12), tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=4,
      seed=0,
  )
  batch = next(iterator)
  assert set(batch) == set(pipeline.BATCH_KEYS)
  expected_dtypes = {"inputs": np.int32, "targets": np.int32, "loss_mask": np.float32,
                     "segment_ids": np.int32, "positions": np.int32}
  for key, dtype in expected_dtypes.items():
    assert batch[key].shape == (4, SEQ_LEN), key
    assert batch[key].dtype == dtype, key


def test_single_example_matches_hand_computed_tokens(tokenizer):
  record = {"prompt": "def add(a, b):\n", "target": "    return a + b\n"}
  prompt_ids = tokenizer.encode(record["prompt"])
  target_ids = tokenizer.encode(record["target"])
  sequence = prompt_ids + target_ids + [tokenizer.eos_id]
  num_padding = SEQ_LEN - len(sequence)
  assert num_padding > 0

  for use_packing in (False, True):
    batch = next(pipeline.make_iterator(
        [record], tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=1, seed=0,
        shuffle=False, num_epochs=1, packing=use_packing, drop_remainder=False,
    ))
    np.testing.assert_array_equal(batch["inputs"][0], sequence + [0] * num_padding)
    np.testing.assert_array_equal(batch["targets"][0], sequence[1:] + [0] * (num_padding + 1))
    # Predicting prompt tokens 1.. carries no loss; every target token and the eos does.
    expected_mask = (
        [0] * (len(prompt_ids) - 1) + [1] * (len(target_ids) + 1) + [0] * (num_padding + 1)
    )
    np.testing.assert_array_equal(batch["loss_mask"][0], expected_mask)
    np.testing.assert_array_equal(batch["segment_ids"][0], [1] * len(sequence) + [0] * num_padding)
    np.testing.assert_array_equal(
        batch["positions"][0], list(range(len(sequence))) + [0] * num_padding
    )
    assert pipeline.num_target_tokens(batch) == len(target_ids) + 1


def test_targets_are_next_tokens_within_segments(tokenizer):
  iterator = pipeline.make_iterator(
      _pairs(30) + _documents(30, 20), tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=4,
      seed=1,
  )
  rows_with_several_segments = 0
  for batch in _take(iterator, 10):
    for row in range(4):
      inputs, targets = batch["inputs"][row], batch["targets"][row]
      segment_ids, positions = batch["segment_ids"][row], batch["positions"][row]
      loss_mask = batch["loss_mask"][row]
      for t in range(SEQ_LEN - 1):
        if segment_ids[t] != 0 and segment_ids[t + 1] == segment_ids[t]:
          assert targets[t] == inputs[t + 1]
        else:
          assert targets[t] == 0 and loss_mask[t] == 0
      assert targets[-1] == 0 and loss_mask[-1] == 0
      assert np.all(inputs[segment_ids == 0] == 0)
      real_segments = sorted(set(segment_ids.tolist()) - {0})
      assert real_segments == list(range(1, len(real_segments) + 1))
      for segment_id in real_segments:
        np.testing.assert_array_equal(
            positions[segment_ids == segment_id], np.arange(np.sum(segment_ids == segment_id))
        )
      rows_with_several_segments += len(real_segments) > 1
  assert rows_with_several_segments > 10  # packing really shares rows


def test_packing_keeps_every_example_exactly_once(tokenizer):
  records = _pairs(40) + _documents(40, 6)
  expected = [_sequence(r, tokenizer) for r in records]
  assert max(map(len, expected)) <= SEQ_LEN
  batches = _all_batches(pipeline.make_iterator(
      records, tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=3, seed=2, num_epochs=1,
      drop_remainder=False,
  ))
  assert collections.Counter(_segments(batches)) == collections.Counter(expected)
  # Loss: targets and eos of the pairs, every token but the first of the documents.
  expected_loss_tokens = sum(
      len(tokenizer.encode(r["target"])) + 1 if r["prompt"] else len(s) - 1
      for r, s in zip(records, expected)
  )
  assert sum(pipeline.num_target_tokens(b) for b in batches) == expected_loss_tokens
  real_tokens = sum(np.sum(b["segment_ids"] != 0) for b in batches)
  assert real_tokens / sum(b["inputs"].size for b in batches) > 0.6  # rows are shared


def test_long_documents_are_split_without_losing_text(tokenizer):
  documents = _documents(6, 40)[3:]  # 4..6 lines, then longer ones below
  documents += [{"prompt": "", "target": "".join(f"name_{j} = {j * 7}\n" for j in range(n))}
                for n in (30, 41)]
  sequences = [_sequence(d, tokenizer) for d in documents]
  assert max(map(len, sequences)) > 3 * SEQ_LEN

  # Without packing or shuffling, a document's windows come in order in consecutive rows.
  pieces = _segments(_all_batches(pipeline.make_iterator(
      documents, tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=2, seed=0, shuffle=False,
      num_epochs=1, packing=False, drop_remainder=False,
  )))
  assert all(len(p) <= SEQ_LEN for p in pieces)
  rebuilt = []
  for sequence in sequences:
    joined = list(pieces.pop(0))
    while len(joined) < len(sequence):
      joined += pieces.pop(0)[1:]  # windows overlap by one token
    rebuilt.append(tuple(joined))
  assert not pieces
  assert rebuilt == sequences
  assert tokenizer.decode(rebuilt[-1]) == documents[-1]["target"]

  # With packing, every token but each document's first is predicted exactly once.
  batches = _all_batches(pipeline.make_iterator(
      documents, tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=2, seed=0, num_epochs=1,
      drop_remainder=False,
  ))
  assert sum(pipeline.num_target_tokens(b) for b in batches) == sum(
      len(s) - 1 for s in sequences
  )


def test_overlong_prompt_target_pairs_are_truncated(tokenizer):
  long_prompt = {"prompt": "# context line\n" * 20, "target": "x = 1\n"}
  sequence = packing.tokenize_record(long_prompt, tokenizer)
  (fitted,) = packing.fit_to_length(sequence, SEQ_LEN)
  target_and_eos = tokenizer.encode(long_prompt["target"]) + [tokenizer.eos_id]
  assert len(fitted["tokens"]) == SEQ_LEN
  # The prompt loses its oldest tokens; the target stays whole.
  np.testing.assert_array_equal(fitted["tokens"], sequence["tokens"][-SEQ_LEN:])
  assert fitted["tokens"][-len(target_and_eos):].tolist() == target_and_eos
  assert fitted["target_mask"].sum() == len(target_and_eos)

  long_target = {"prompt": "# p\n", "target": "y = 2\n" * 30}
  sequence = packing.tokenize_record(long_target, tokenizer)
  (fitted,) = packing.fit_to_length(sequence, SEQ_LEN)
  prompt_length = int(sequence["prompt_length"])
  # Keeps the last prompt token so that the first target token is still predicted.
  np.testing.assert_array_equal(
      fitted["tokens"], sequence["tokens"][prompt_length - 1:prompt_length - 1 + SEQ_LEN]
  )
  assert fitted["target_mask"].tolist() == [0] + [1] * (SEQ_LEN - 1)

  records = [long_prompt, long_target] + _pairs(5) + _documents(3, 40)
  assert packing.count_truncated(records, tokenizer, SEQ_LEN) == 2


def test_shards_are_disjoint_and_cover_the_source(tokenizer):
  records = _pairs(25) + _documents(12, 6)
  expected = collections.Counter(_sequence(r, tokenizer) for r in records)
  assert len(expected) == len(records)  # all distinct, so overlap would show
  per_shard = [
      collections.Counter(_segments(_all_batches(pipeline.make_iterator(
          records, tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=2, seed=3,
          num_epochs=1, shard_index=shard, shard_count=3, drop_remainder=False,
      ))))
      for shard in range(3)
  ]
  for i in range(3):
    assert per_shard[i]
    for j in range(i + 1, 3):
      assert not set(per_shard[i]) & set(per_shard[j])
  assert sum(per_shard, collections.Counter()) == expected


@pytest.mark.parametrize("use_packing", [True, False])
def test_resume_from_state_equals_uninterrupted_iteration(tokenizer, use_packing):
  # A small source, so that the 20 batches cross several epochs and split documents.
  records = _pairs(7) + _documents(5, 40)
  kwargs = dict(tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=3, seed=4,
                packing=use_packing, read_threads=2)
  for steps_before in (0, 1, 9):
    iterator = pipeline.make_iterator(records, **kwargs)
    _take(iterator, steps_before)
    state = iterator.get_state()
    uninterrupted = _take(iterator, 11)

    resumed = pipeline.make_iterator(records, **kwargs)
    _take(resumed, 3)  # a restored iterator may have run elsewhere before
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 11), uninterrupted)


def test_resume_through_orbax_checkpoint(tokenizer, tmp_path):
  records = _pairs(9) + _documents(6, 40)
  kwargs = dict(tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=2, seed=5)
  iterator = pipeline.make_iterator(records, **kwargs)
  _take(iterator, 7)
  manager = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("step", "data_iter"))
  manager.save(7, args=ocp.args.Composite(
      step=ocp.args.JsonSave({"step": 7}),
      data_iter=grain.checkpoint.CheckpointSave(iterator),
  ))
  manager.wait_until_finished()
  uninterrupted = _take(iterator, 6)

  restored_iterator = pipeline.make_iterator(records, **kwargs)
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      step=ocp.args.JsonRestore(),
      data_iter=grain.checkpoint.CheckpointRestore(restored_iterator),
  ))
  assert restored["step"] == {"step": 7}
  _assert_batches_equal(_take(restored_iterator, 6), uninterrupted)


def test_seed_reproduces_and_changes_the_order(tokenizer):
  records = _pairs(30) + _documents(30, 20)

  def first_batches(seed):
    return _take(pipeline.make_iterator(
        records, tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=4, seed=seed), 5)

  _assert_batches_equal(first_batches(6), first_batches(6))
  assert not np.array_equal(first_batches(6)[0]["inputs"], first_batches(7)[0]["inputs"])


def test_each_epoch_is_reshuffled(tokenizer):
  records = _pairs(12)
  batches = _all_batches(pipeline.make_iterator(
      records, tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=1, seed=8, num_epochs=2,
      packing=False,
  ))
  order = _segments(batches)
  assert len(order) == 24
  first_epoch, second_epoch = order[:12], order[12:]
  assert sorted(first_epoch) == sorted(second_epoch)
  assert first_epoch != second_epoch
  assert first_epoch != [_sequence(r, tokenizer) for r in records]  # shuffled at all


def test_final_partial_batch(tokenizer):
  records = _pairs(5)
  kwargs = dict(tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=4, seed=0, num_epochs=1,
                packing=False)
  kept = _all_batches(pipeline.make_iterator(records, drop_remainder=False, **kwargs))
  assert len(kept) == 2
  last = kept[-1]
  assert last["inputs"].shape == (4, SEQ_LEN)
  assert np.all(last["segment_ids"][1:] == 0) and np.all(last["loss_mask"][1:] == 0)
  assert len(_all_batches(pipeline.make_iterator(records, drop_remainder=True, **kwargs))) == 1


def test_code_corpus_feeds_the_pipeline(tokenizer, tmp_path):
  root = tmp_path / "src"
  texts = {f"m{i}.py": f"import os\n\n\ndef f{i}():\n    return os.getcwd() * {i}\n" * (1 + i)
           for i in range(12)}
  root.mkdir()
  for name, text in texts.items():
    (root / name).write_text(text)
  source = code_corpus.load_code_corpus("train", tmp_path / "tfds", source_dir=root)
  batches = _all_batches(pipeline.make_iterator(
      source, tokenizer=tokenizer, seq_len=SEQ_LEN, batch_size=4, seed=0, num_epochs=1,
      drop_remainder=False,
  ))
  expected = sum(len(tokenizer.encode(source[i]["target"])) for i in range(len(source)))
  assert sum(pipeline.num_target_tokens(b) for b in batches) == expected
