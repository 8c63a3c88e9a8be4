"""The decode engine: completions sampled from a model, n per problem, on any mesh.

Read top to bottom: evaluation/call_schedule.py (an evaluation's calls) ->
evaluation/sampler.py (one call: tokenise, dispatch, collect) ->
engine.py (one call: prefill, then slots refilled in one on-device loop) -> forward.py (the
model's layers over the paged cache) -> kv_pages.py (pages, page tables) -> the kernel set's
`paged_attention` (model/kernels/). Beside them: token_choice.py (how a token is drawn),
prompt_rows.py (prompts as padded arrays), stop_matcher.py (the stop strings on device),
budget.py (how big a call is), host_devices.py (one XLA device per CPU core).

Axis letters in names (`logits_SxV`) are model/axes.py's.
"""
