"""Hugging Face Llama / Gemma checkpoints <-> our ModelConfig and parameter tree.

Two things per family: how `config.json` maps onto ModelConfig (refusing every feature our
decoder cannot reproduce exactly, by name), and how each of our parameters is a *view* of one
HF tensor: `ours = hf.reshape(split_shape).transpose(perm)`, or for the stacked blocks
(model/layer_stack.py) layer i's view of `model.layers.{i}.*`. A view (not a copy) is what
lets the importer materialise one device's slice at a time, and inverting it gives the export.

HF stores nn.Linear weights as [out, in]; ours are [in, ...out] with heads split out, e.g.
q_proj [N*H, D] -> reshape [N, H, D] -> transpose (2, 0, 1) -> q_DxNxH. HF's q/k projections
are already in the "rotate half" RoPE layout that model/layers.py uses, so no permutation of
the head dimension is needed.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from model.config import ModelConfig
from model.rope import KINDS as ROPE_KINDS
from model.rope import USED_FIELDS as ROPE_USED_FIELDS
from model.rope import RopeScaling

# model_type -> family. CodeLlama and TinyLlama are "llama"; CodeGemma is "gemma".
# The files of a Hugging Face checkpoint directory that import and export read or write
# (their weights: interop/safetensors_reader.py).
HF_CONFIG_FILE = "config.json"
HF_TOKENIZER_FILE = "tokenizer.model"
HF_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
FAMILIES = {"llama": "llama", "mistral": "llama", "gemma": "gemma"}
# Known relatives we refuse, with the reason, so users learn what is missing.
_REFUSED_TYPES = {
    "gemma2": "Gemma 2 needs attention/final logit soft-capping, sliding-window layers and "
              "extra post-norms",
    "gemma3": "Gemma 3 needs sliding-window layers, QK-norm and dual RoPE bases",
    "mixtral": "mixture-of-experts MLPs",
    "qwen2": "attention biases on q/k/v",
    "phi3": "fused qkv / gate_up projections and partial rotary",
}
# Tensors HF keeps in some checkpoints that hold no learned state.
_IGNORABLE_SUFFIXES = (".rotary_emb.inv_freq",)


class UnsupportedCheckpointError(ValueError):
  """The checkpoint uses a feature our decoder cannot reproduce exactly."""


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """Our parameter = hf_tensor.reshape(split_shape).transpose(perm)."""
  hf_name: str
  split_shape: tuple[int, ...]
  perm: tuple[int, ...]
  hf_shape: tuple[int, ...] | None = None  # as stored, when it differs from split_shape

  def view(self, hf_array: Any) -> Any:
    """Our layout as a view of `hf_array` (numpy memmap views stay lazy)."""
    return hf_array.reshape(self.split_shape).transpose(self.perm)

  def inverse(self, ours: Any) -> Any:
    """HF layout of our array (for export)."""
    inverse_perm = tuple(sorted(range(len(self.perm)), key=lambda i: self.perm[i]))
    return ours.transpose(inverse_perm).reshape(self.hf_shape or self.split_shape)


@dataclasses.dataclass(frozen=True)
class StackedTensorMap:
  """Our stacked-layers parameter [num_layers, ...] = layer i's HF tensor through layers[i].

  HF stores each layer's tensors separately (`model.layers.{i}.*`); our blocks stack them on
  a leading axis (model/layer_stack.py), so one parameter is num_layers views, stacked.
  """
  layers: tuple[TensorMap, ...]

  @property
  def hf_names(self) -> tuple[str, ...]:
    return tuple(m.hf_name for m in self.layers)


def _get(config: dict[str, Any], key: str, default: Any = None) -> Any:
  value = config.get(key, default)
  return default if value is None else value


# RoPE types whose frequencies change with the sequence length at run time (no fixed table).
_RUNTIME_ROPE = {
    "dynamic": "dynamic NTK rescales theta with the sequence length at run time",
    "longrope": "switches between short and long factors with the sequence length at run time",
}


def _rope(config: dict[str, Any]) -> tuple[float, str, dict[str, Any]]:
  """(theta, rope type, RoPE parameters) as transformers 5 reads them.

  transformers 5 nests everything under `rope_parameters`; a 4.x `rope_scaling` dict replaces
  it (convert_rope_params_to_dict), and a top-level `rope_theta` fills in a missing theta.
  """
  params = config.get("rope_scaling") or config.get("rope_parameters") or {}
  theta = _get(params, "rope_theta", _get(config, "rope_theta", 10_000.0))
  kind = params.get("rope_type") or params.get("type") or "default"
  return float(theta), kind, params


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
  return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _rope_scaling(config: dict[str, Any]) -> RopeScaling | None:
  """Our RopeScaling, transformers' defaults resolved (ValueError says what is missing).

  Mirrors standardize_rope_params and the _compute_*_parameters functions of transformers 5
  modeling_rope_utils; the frequencies themselves are model/rope.py's.
  """
  _, kind, params = _rope(config)
  if kind == "default":
    return None
  fields: dict[str, Any] = {}
  factor = params.get("factor")
  if kind in ("llama3", "yarn"):
    # A top-level original_max_position_embeddings (Phi-3 style) wins over the nested one,
    # which defaults to max_position_embeddings.
    original = _get(config, "original_max_position_embeddings",
                    _get(params, "original_max_position_embeddings",
                         config.get("max_position_embeddings")))
    if original is None or float(original) != int(original):
      raise ValueError(f"needs an integer original_max_position_embeddings, got {original!r}")
    fields["original_max_positions"] = int(original)
  if kind == "llama3":
    fields["low_freq_factor"] = params.get("low_freq_factor")
    fields["high_freq_factor"] = params.get("high_freq_factor")
  if kind == "yarn":
    if factor is None:  # DeepSeek-V3 style: the ratio of the two context lengths
      if config.get("max_position_embeddings") is None:
        raise ValueError("needs factor or max_position_embeddings")
      factor = config["max_position_embeddings"] / fields["original_max_positions"]
    attention_factor = params.get("attention_factor")
    if attention_factor is None:
      mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
      if mscale and mscale_all_dim:
        attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
      else:
        attention_factor = _yarn_mscale(factor)
    fields.update(attention_factor=float(attention_factor),
                  beta_fast=float(params.get("beta_fast") or 32),
                  beta_slow=float(params.get("beta_slow") or 1),
                  truncate=bool(params.get("truncate", True)))
  if factor is None:
    raise ValueError("needs factor")
  return RopeScaling(kind=kind, factor=float(factor), **fields)


# RopeScaling fields whose transformers name differs (the others are spelled alike).
_HF_ROPE_NAMES = {"original_max_positions": "original_max_position_embeddings"}


def _hf_rope_parameters(cfg: ModelConfig) -> dict[str, Any]:
  """transformers 5 `rope_parameters` for our RoPE, every value explicit (no defaults)."""
  params = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  scaling = cfg.rope_scaling
  if scaling is not None:
    params.update(rope_type=scaling.kind, factor=scaling.factor)
    for name in ROPE_USED_FIELDS[scaling.kind]:
      params[_HF_ROPE_NAMES.get(name, name)] = getattr(scaling, name)
  return params


def refusals(config: dict[str, Any]) -> list[str]:
  """Every feature of `config` that our decoder would silently get wrong; [] if none."""
  model_type = config.get("model_type")
  if model_type in _REFUSED_TYPES:
    return [f"model_type {model_type!r} ({_REFUSED_TYPES[model_type]})"]
  if model_type not in FAMILIES:
    return [f"model_type {model_type!r} (supported: {sorted(FAMILIES)})"]
  family = FAMILIES[model_type]
  problems = []
  _, rope_kind, params = _rope(config)
  if rope_kind in _RUNTIME_ROPE:
    problems.append(f"rope scaling {rope_kind!r} ({_RUNTIME_ROPE[rope_kind]}; supported: "
                    f"unscaled and {', '.join(ROPE_KINDS)})")
  elif rope_kind != "default" and rope_kind not in ROPE_KINDS:
    problems.append(f"rope scaling {rope_kind!r} (supported: unscaled and "
                    f"{', '.join(ROPE_KINDS)})")
  else:
    try:
      _rope_scaling(config)
    except ValueError as e:
      problems.append(f"rope scaling {rope_kind!r} ({e})")
  if _get(params, "partial_rotary_factor", _get(config, "partial_rotary_factor", 1.0)) != 1.0:
    problems.append("partial_rotary_factor != 1")
  for flag in ("attention_bias", "mlp_bias"):
    if config.get(flag):
      problems.append(f"{flag}=true (our projections have no biases)")
  window = config.get("sliding_window")
  max_positions = config.get("max_position_embeddings")
  if window is not None and config.get("use_sliding_window", True) and not (
      max_positions and window >= max_positions):
    problems.append(f"sliding_window={window} (attention here is full causal; a window at "
                    f"least max_position_embeddings={max_positions} would be exact)")
  for key in ("attn_logit_softcapping", "final_logit_softcapping"):
    if config.get(key) is not None:
      problems.append(f"{key}={config[key]} (no soft-capping here)")
  head_dim = _head_dim(config)
  scalar = config.get("query_pre_attn_scalar")
  if scalar is not None and scalar != head_dim:
    problems.append(f"query_pre_attn_scalar={scalar} (attention scales by head_dim "
                    f"{head_dim} ** -0.5)")
  activation = _activation(config, family)
  allowed = {"llama": ("silu",), "gemma": ("gelu_pytorch_tanh", "gelu")}[family]
  if activation not in allowed:
    problems.append(f"activation {activation!r} (this family supports {allowed})")
  return problems


def _head_dim(config: dict[str, Any]) -> int:
  return int(_get(config, "head_dim", config["hidden_size"] // config["num_attention_heads"]))


def _activation(config: dict[str, Any], family: str) -> str:
  if family == "gemma":
    # Early Gemma configs carry `hidden_activation`, which wins over the legacy
    # `hidden_act: "gelu"`; transformers itself reads that legacy "gelu" as the tanh
    # approximation, and so do we (model/layers.py's "gelu" is tanh-approximate).
    return _get(config, "hidden_activation", _get(config, "hidden_act", "gelu_pytorch_tanh"))
  return _get(config, "hidden_act", "silu")


def family_of(config: dict[str, Any]) -> str:
  problems = refusals(config)
  if problems:
    raise UnsupportedCheckpointError(
        "cannot import this checkpoint exactly; unsupported: " + "; ".join(problems))
  return FAMILIES[config["model_type"]]


def model_config(config: dict[str, Any], dtype: str = "float32") -> ModelConfig:
  """Our ModelConfig for an HF config.json (raises UnsupportedCheckpointError)."""
  family = family_of(config)
  gemma = family == "gemma"
  theta, _, _ = _rope(config)
  num_heads = int(config["num_attention_heads"])
  return ModelConfig(
      vocab_size=int(config["vocab_size"]),
      d_model=int(config["hidden_size"]),
      num_layers=int(config["num_hidden_layers"]),
      num_heads=num_heads,
      num_kv_heads=int(_get(config, "num_key_value_heads", num_heads)),
      head_dim=_head_dim(config),
      d_ff=int(config["intermediate_size"]),
      mlp_activation="gelu" if gemma else "silu",
      # Llama's default is untied, Gemma's tied; an explicit key always wins.
      tie_embeddings=bool(_get(config, "tie_word_embeddings", gemma)),
      rope_theta=theta,
      rope_scaling=_rope_scaling(config),
      norm_eps=float(_get(config, "rms_norm_eps", 1e-6)),
      embed_scale_by_sqrt_dim=gemma,
      norm_weight_plus_one=gemma,
      dtype=dtype,
  )


def hf_config(cfg: ModelConfig, family: str, **special_ids: int) -> dict[str, Any]:
  """An HF config.json for our model (the export direction); refuses mismatched numerics."""
  gemma = family == "gemma"
  if (cfg.embed_scale_by_sqrt_dim, cfg.norm_weight_plus_one) != (gemma, gemma) or (
      cfg.mlp_activation != ("gelu" if gemma else "silu")):
    raise UnsupportedCheckpointError(
        f"this model's numerics (embed scaling {cfg.embed_scale_by_sqrt_dim}, norm plus-one "
        f"{cfg.norm_weight_plus_one}, activation {cfg.mlp_activation}) are not those of the "
        f"{family} family")
  config = {
      "model_type": family,
      "architectures": ["GemmaForCausalLM" if gemma else "LlamaForCausalLM"],
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
      "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim, "rms_norm_eps": cfg.norm_eps,
      "rope_theta": cfg.rope_theta,
      "rope_parameters": _hf_rope_parameters(cfg),
      "tie_word_embeddings": cfg.tie_embeddings,
      "hidden_act": "gelu_pytorch_tanh" if gemma else "silu",
      "attention_bias": False, "torch_dtype": "float32", "dtype": "float32",
  }
  config.update(special_ids)
  return config


def _layer_maps(cfg: ModelConfig, i: int) -> dict[tuple, TensorMap]:
  """Layer i's tensors: {path inside our blocks: TensorMap of model.layers.{i}.*}."""
  d, n, k, h, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_ff
  hf = f"model.layers.{i}."
  return {
      ("attn_norm", "scale"): TensorMap(hf + "input_layernorm.weight", (d,), (0,)),
      ("mlp_norm", "scale"): TensorMap(hf + "post_attention_layernorm.weight", (d,), (0,)),
      ("attn", "q_DxNxH"): TensorMap(hf + "self_attn.q_proj.weight", (n, h, d), (2, 0, 1),
                                     (n * h, d)),
      ("attn", "k_DxKxH"): TensorMap(hf + "self_attn.k_proj.weight", (k, h, d), (2, 0, 1),
                                     (k * h, d)),
      ("attn", "v_DxKxH"): TensorMap(hf + "self_attn.v_proj.weight", (k, h, d), (2, 0, 1),
                                     (k * h, d)),
      ("attn", "o_NxHxD"): TensorMap(hf + "self_attn.o_proj.weight", (d, n, h), (1, 2, 0),
                                     (d, n * h)),
      ("mlp", "gate_DxF"): TensorMap(hf + "mlp.gate_proj.weight", (f, d), (1, 0)),
      ("mlp", "up_DxF"): TensorMap(hf + "mlp.up_proj.weight", (f, d), (1, 0)),
      ("mlp", "down_FxD"): TensorMap(hf + "mlp.down_proj.weight", (d, f), (1, 0)),
  }


def tensor_maps(cfg: ModelConfig) -> dict[tuple, TensorMap | StackedTensorMap]:
  """{path in our params tree: its map}; paths are tuples like ("blocks", "attn", "q_DxNxH")
  (a StackedTensorMap over the layers) or ("embed_VxD",) (a TensorMap)."""
  d, v = cfg.d_model, cfg.vocab_size
  maps: dict[tuple, TensorMap | StackedTensorMap] = {
      ("embed_VxD",): TensorMap("model.embed_tokens.weight", (v, d), (0, 1)),
      ("final_norm", "scale"): TensorMap("model.norm.weight", (d,), (0,))}
  if not cfg.tie_embeddings:
    maps[("head_DxV",)] = TensorMap("lm_head.weight", (v, d), (1, 0))
  per_layer = [_layer_maps(cfg, i) for i in range(cfg.num_layers)]
  for path in per_layer[0]:
    maps[("blocks",) + path] = StackedTensorMap(tuple(layer[path] for layer in per_layer))
  return maps


def hf_names(tmap: TensorMap | StackedTensorMap) -> tuple[str, ...]:
  """The HF tensor(s) one of our parameters is made of."""
  return tmap.hf_names if isinstance(tmap, StackedTensorMap) else (tmap.hf_name,)


def unmapped_tensors(names: list[str], maps: dict[tuple, TensorMap | StackedTensorMap],
                     tie_embeddings: bool) -> tuple[list[str], list[str]]:
  """(tensors we would drop that carry weights -> refuse, tensors safe to skip)."""
  used = {name for m in maps.values() for name in hf_names(m)}
  unexpected, skipped = [], []
  for name in names:
    if name in used:
      continue
    if name.endswith(_IGNORABLE_SUFFIXES) or (tie_embeddings and name == "lm_head.weight"):
      # A tied model's lm_head is by definition the embedding (HF ties them on load).
      skipped.append(name)
    else:
      unexpected.append(name)
  return unexpected, skipped
