"""The rule for a sampling call's slots and problems (decode/budget.py), on numbers
worked by hand."""
from decode import budget as decode_budget
from model.config import ModelConfig

CFG = ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, d_ff=64)
MIB, GIB = 1 << 20, 1 << 30


def test_a_problem_counts_its_prefill_attention_scores():
  # A slot: 16 new tokens after up to 31 of its prompt's last page take 2 pages of 32
  # positions (decode/kv_pages.py), cache 2*2*2*64*8*4 = 16384 B, + working
  # 4*(4*64 + 4*32 + 2*64) = 2048 B.
  assert decode_budget.bytes_per_slot(CFG, 16) == 18432
  assert decode_budget.bytes_per_sample(16) == 128   # its uniforms and tokens, 2*4*16
  # A 64-token prompt: cache 2*2*2*64*8*4 = 16384 B, prefill activations 4*64*(4*32 + 2*64)
  # = 65536 B, attention scores 4 heads * 64 * 64 * 4 = 65536 B, a layer's keys and values
  # 2*2*64*8*4 = 8192 B, first logits 4*64 = 256 B.
  assert decode_budget.bytes_per_problem(CFG, 64) == 155904
  # After a 128-token shared prefix its queries also score the prefix's keys:
  # scores 4*64*192*4 = 196608 B, keys and values 2*2*192*8*4 = 24576 B.
  assert decode_budget.bytes_per_problem(CFG, 64, prefix_len=128) == 303360
  # Quadratic in the prompt: 128 tokens, scores 4*128*128*4 = 262144 B of its 442624.
  assert decode_budget.bytes_per_problem(CFG, 128) == 442624


def test_slots_follow_the_memory_rule(monkeypatch):
  monkeypatch.setattr(decode_budget, "SAMPLES_PER_SLOT", 16)  # the numbers below assume it
  # 8 samples per problem, 16 samples per slot: a slot carries two problems with their
  # samples, 2 * (155904 + 8*128) = 313856 B, so 332288 B per slot;
  # (6 MiB - 1 MiB) / 332288 = 15.78 -> 15 per shard.
  rule = lambda budget, shards=2, cpu=False: decode_budget.slots_per_call(
      CFG, max_new_tokens=16, prompt_len=64, num_samples=8, batch_shards=shards,
      param_bytes_per_device=MIB, budget_bytes=budget, cpu=cpu)
  assert rule(6 * MIB) == 30
  assert rule(6 * MIB, shards=3) == 45
  assert rule(MIB) == 2                          # no room: one slot per shard still
  assert rule(1 << 40) == decode_budget.MAX_SLOTS
  # A CPU: CPU_SLOTS per device, fewer only where slots alone would take over half the
  # budget: (737280 B free) / 2 / 18432 = 20 per shard.
  assert rule(1 << 40, shards=8, cpu=True) == 8 * decode_budget.CPU_SLOTS
  assert rule(MIB + 737280, cpu=True) == 40


def test_a_calls_problems_fit_the_budget_with_their_prefill(monkeypatch):
  monkeypatch.setattr(decode_budget, "SAMPLES_PER_SLOT", 16)
  rule = lambda budget, prompt_len=64, prefix_len=0: decode_budget.problems_per_call(
      CFG, max_new_tokens=16, prompt_len=prompt_len, prefix_len=prefix_len, num_samples=8,
      slots=32, batch_shards=2, param_bytes_per_device=MIB, budget_bytes=budget)
  # Room to spare: 16 samples per slot * 32 slots / 8 samples a problem.
  assert rule(1 << 40) == 64
  # Per shard: parameters, 16 slots (294912 B), then problems of 155904 + 8*128 = 156928 B:
  # ten of them fit exactly, twice that over the two shards; a byte less, nine.
  assert rule(MIB + 294912 + 10 * 156928) == 20
  assert rule(MIB + 294912 + 10 * 156928 - 1) == 18
  # After a 128-token shared prefix: the prefix once (442624 B), problems of 303360 + 1024.
  assert rule(MIB + 294912 + 442624 + 10 * 304384, prefix_len=128) == 20
  # A 4x longer prompt, 16x the scores: in the budget of 20 short ones, 2.
  assert rule(MIB + 294912 + 10 * 156928, prompt_len=256) == 2
  assert rule(MIB) == 1                          # no room: one problem a call still


def test_the_budget_per_device_and_call():
  # An accelerator: MEMORY_FRACTION of its memory, calls one after another.
  assert decode_budget.call_budget_bytes(
      10 * GIB, host_available_bytes=None, host_budget_bytes=0, local_devices=8,
      calls_at_once=2) == int(0.6 * 10 * GIB)
  cpu = lambda available, configured=0: decode_budget.call_budget_bytes(
      None, host_available_bytes=available, host_budget_bytes=configured, local_devices=2,
      calls_at_once=2)
  # A CPU host: a quarter of its available memory, at most HOST_MEMORY_CAP, over its 2
  # devices and the 2 calls XLA:CPU runs at once.
  assert cpu(2 * GIB) == GIB // 8
  assert cpu(64 * GIB) == decode_budget.HOST_MEMORY_CAP // 4
  assert cpu(None) == decode_budget.HOST_MEMORY_CAP // 4        # not known: the cap
  assert cpu(64 * GIB, configured=12 * GIB) == 3 * GIB          # the config's, as it is
