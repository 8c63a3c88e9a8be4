"""The rule for sampling slots per call (model/decode_budget.py), on numbers worked by hand."""
from model import decode_budget
from model.config import ModelConfig

CFG = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, d_ff=64)


def test_slots_follow_the_memory_rule(monkeypatch):
  monkeypatch.setattr(decode_budget, "SAMPLES_PER_SLOT", 16)  # the numbers below assume it
  # A slot: 16 new tokens take one page of 32 positions (model/page_pool.py), cache
  # 2*2*2*32*8*4 = 8192 B, + working 4*(4*64 + 4*32 + 2*64) = 2048 B, + the uniforms of
  # its 16 samples a call, 4*16*16 = 1024 B.
  assert decode_budget.bytes_per_slot(CFG, 16) == 11264
  # A problem: cache 2*2*2*64*8*4 = 16384 B + prefill 4*64*(4*32 + 2*64) = 65536 B.
  assert decode_budget.bytes_per_problem(CFG, 64) == 81920
  # 8 samples per problem, 16 samples per slot: a slot carries two problems (163840 B), so
  # 175104 B per slot; (0.6 * 10 MiB - 1 MiB) / 175104 = 29.94 -> 29 per shard, 2 shards.
  rule = lambda memory, shards=2: decode_budget.slots_per_call(
      CFG, max_new_tokens=16, prompt_len=64, num_samples=8, batch_shards=shards,
      param_bytes_per_device=1 << 20, memory_bytes=memory)
  assert rule(10 << 20) == 58
  assert rule(10 << 20, shards=3) == 87
  assert rule(1 << 20) == 2                      # no room: one slot per shard still
  assert rule(1 << 40) == decode_budget.MAX_SLOTS
  # The CPU reports no memory limit: a fixed number per device (one device per core).
  assert rule(None, shards=8) == 8 * decode_budget.CPU_SLOTS
