"""The axis letters of array names: `logits_SxV` is [slots, vocabulary].

A name's suffix lists its axes in order, joined by "x"; two letters written together (`GL`)
are those axes flattened into one; `1` is an axis of size one. Every letter means one thing
in the whole code base (tests/test_axis_names.py checks that every suffix uses these).
"""

AXES: dict[str, str] = {
    # The model.
    "B": "rows of a batch (training, scoring, a prefill's rows)",
    "L": "token positions of a row (queries, in attention)",
    "U": "key positions a query attends to (attention's other length)",
    "D": "model width (d_model)",
    "F": "MLP hidden width (d_ff)",
    "V": "vocabulary",
    "N": "query heads",
    "K": "key/value heads",
    "G": "query heads per key/value head (N / K)",
    "H": "head dimension",
    "H2": "half the head dimension (RoPE frequencies)",
    "Y": "layers",
    # The decode engine (decode/).
    "P": "problems (prompts) of a sampling call",
    "S": "slots: sequences decoded together, one token each per step",
    "R": "samples of a call (problems x samples per problem), its output rows",
    "T": "tokens a sample generates (max_new_tokens)",
    "C": "tokens of the prefix every prompt of a call shares",
    "Q": "pages of the paged KV cache's pool",
    "E": "positions per page",
    "M": "entries of a page table (pages one sequence may read)",
    "A": "states of the stop-string automaton (decode/stop_matcher.py)",
    "Z": "blocks of the vocabulary in a two-level draw (decode/token_choice.py)",
    "W": "entries of one such block",
    "1": "an axis of size one",
}
