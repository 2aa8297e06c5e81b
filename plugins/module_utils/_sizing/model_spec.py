# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The model spec: a decoder-only transformer's shape, from its config.json or estimated from a parameter count."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.errors import SizingError


# AWQ/GPTQ keep one fp16 scale (2 bytes) and one packed zero point (bits/8 bytes) per group of weights.
DEFAULT_QUANT_GROUP_SIZE = 128

# Used when only a parameter count is given: the nearest (by log of the parameter count) published
# architecture, from each model's config.json. The weights still use the given parameter count; the shape
# gives the KV cache, the activation and the embedding share (which stays 16-bit under AWQ/GPTQ/FP8).
# Columns: name, params (B), layers, hidden, heads, KV heads, head dim, intermediate, vocab, tied, max positions.
REFERENCE_SHAPES = (
    ("Llama-3.2-1B", 1.24, 16, 2048, 32, 8, 64, 8192, 128256, True, 131072),
    ("Llama-3.2-3B", 3.21, 28, 3072, 24, 8, 128, 8192, 128256, True, 131072),
    ("Llama-3.1-8B", 8.03, 32, 4096, 32, 8, 128, 14336, 128256, False, 131072),
    ("Llama-2-13B", 13.0, 40, 5120, 40, 40, 128, 13824, 32000, False, 4096),
    ("Qwen2.5-32B", 32.8, 64, 5120, 40, 8, 128, 27648, 152064, False, 32768),
    ("Llama-3.1-70B", 70.6, 80, 8192, 64, 8, 128, 28672, 128256, False, 131072),
    ("Llama-3.1-405B", 405.9, 126, 16384, 128, 8, 128, 53248, 128256, False, 131072),
)


def count_parameters(layers, hidden, heads, kv_heads, head_dim, intermediate, vocab, tied, experts=1,
                     expert_intermediate=None, shared_expert_intermediate=0):
    """Decoder-only transformer (Llama/Mistral/Qwen family) parameter count: attention, MLP (or experts and
    router), two RMSNorms per layer plus the final one, embeddings and LM head. Biases (Qwen's q/k/v, under
    0.01 %) are left out."""
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    if experts > 1:
        mlp = experts * 3 * hidden * (expert_intermediate or intermediate) + hidden * experts
        mlp += 3 * hidden * shared_expert_intermediate
    else:
        mlp = 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if tied else 2)
    return layers * (attention + mlp + 2 * hidden) + hidden + embeddings


def _shape(name, layers, hidden, heads, kv_heads, head_dim, intermediate, vocab, tied, max_positions):
    return {
        "num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": head_dim, "intermediate_size": intermediate,
        "vocab_size": vocab, "tie_word_embeddings": tied, "max_position_embeddings": max_positions,
        "reference_model": name,
    }


def model_from_parameters(parameters_b):
    """A model spec from a parameter count alone, with the nearest reference architecture's shape (an estimate)."""
    if parameters_b is None or grammar.finite_number("parameters_b", parameters_b) or parameters_b <= 0:
        raise SizingError("parameters_b must be a positive number of billions of parameters, got %r" % (parameters_b,))
    reference = min(REFERENCE_SHAPES, key=lambda row: abs(math.log(parameters_b / row[1])))
    spec = _shape(reference[0], *reference[2:])
    spec.update({
        "parameters": int(parameters_b * 1e9),
        "shape_source": "estimate: %s's shape (nearest published architecture to %sB parameters); pass "
                        "model_config (the model's config.json) for the real shape" % (reference[0], parameters_b),
        "shape_is_estimate": True,
        "torch_dtype": None,
        "quantization_config": None,
    })
    if spec["num_key_value_heads"] == spec["num_attention_heads"]:
        spec["shape_source"] += "; this shape has no grouped-query attention (KV heads = attention heads)"
    return spec


def _parse_quantization_config(config):
    """The checkpoint's quantization as {method, bits, group_size}, or None for a 16-bit checkpoint."""
    if not config:
        return None
    method = str(config.get("quant_method", "")).lower()
    if method in ("awq", "gptq"):
        bits = int(config.get("bits", config.get("w_bit", 4)))
        group = int(config.get("group_size", config.get("q_group_size", DEFAULT_QUANT_GROUP_SIZE)))
        if bits not in (4, 8) or (method == "awq" and bits != 4):
            raise SizingError("model_config: %s with %d-bit weights is not supported by this planner (AWQ is 4-bit; "
                              "GPTQ 4- or 8-bit)" % (method.upper(), bits))
        return {"method": method, "bits": bits, "group_size": group if group > 0 else DEFAULT_QUANT_GROUP_SIZE}
    if method == "fp8":
        return {"method": "fp8", "bits": 8, "group_size": None}
    # The FP8 formats 405B is served in: Meta's own checkpoint (fbgemm_fp8) and NVIDIA ModelOpt's; vLLM takes the
    # checkpoint's method as --quantization.
    if method == "fbgemm_fp8":
        return {"method": "fp8", "bits": 8, "group_size": None, "vllm_method": "fbgemm_fp8"}
    if method == "modelopt":
        algorithm = str(config.get("quant_algo", "")).upper()
        if "FP8" in algorithm:
            return {"method": "fp8", "bits": 8, "group_size": None, "vllm_method": "modelopt"}
        raise SizingError("model_config: ModelOpt quant_algo %r is not supported by this planner (FP8 is)"
                          % (config.get("quant_algo"),))
    if method == "compressed-tensors":
        weights = {}
        for group in (config.get("config_groups") or {}).values():
            weights = group.get("weights") or {}
            break
        bits = int(weights.get("num_bits", 0) or 0)
        kind = str(weights.get("type", "int"))
        if kind == "float" and bits == 8:
            return {"method": "fp8", "bits": 8, "group_size": None, "vllm_method": "compressed-tensors"}
        if kind == "int" and bits in (4, 8):
            group = int(weights.get("group_size") or DEFAULT_QUANT_GROUP_SIZE)
            return {"method": "gptq", "bits": bits, "group_size": group, "vllm_method": "compressed-tensors"}
        raise SizingError("model_config: compressed-tensors weights of type %s, %s bits are not supported by this "
                          "planner (int4, int8 and float8 are)" % (kind, bits or "unknown"))
    raise SizingError("model_config: quantization_config quant_method %r is not supported by this planner "
                      "(awq, gptq, fp8, fbgemm_fp8, compressed-tensors, modelopt FP8 are)" % (method or None,))


def parse_hf_config(config, source="config.json"):
    """A model spec from a Hugging Face config.json (already loaded as a dict)."""
    if not isinstance(config, dict):
        raise SizingError("model_config: %s is not a JSON object" % source)
    text = config.get("text_config")
    notes = []
    if isinstance(text, dict) and "num_hidden_layers" in text:
        # Multimodal checkpoints (Llama 4, Gemma 3, Qwen2.5-VL...) keep the language model's shape here.
        merged = dict(text)
        merged.setdefault("quantization_config", config.get("quantization_config"))
        merged.setdefault("torch_dtype", config.get("torch_dtype", config.get("dtype")))
        merged.setdefault("tie_word_embeddings", config.get("tie_word_embeddings", False))
        config = merged
        notes.append("multimodal checkpoint: sized from text_config; the vision/audio encoder's weights "
                     "(usually under 1 GiB) are not counted")
    if "kv_lora_rank" in config:
        raise SizingError("model_config: %s uses multi-head latent attention (kv_lora_rank, DeepSeek-V2/V3); its KV "
                          "cache layout is not modelled by this planner. Size it with parameters_b and check the KV "
                          "cache by hand" % source)
    required = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")
    missing = [key for key in required if not isinstance(config.get(key), int) or config.get(key) <= 0]
    if missing:
        raise SizingError("model_config: %s lacks %s (a decoder-only transformer config.json has them)" % (
            source, ", ".join(missing)))
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    intermediate = config.get("intermediate_size") or 4 * hidden
    tied = bool(config.get("tie_word_embeddings", False))
    experts = int(config.get("num_local_experts") or config.get("num_experts") or 1)
    expert_intermediate = config.get("moe_intermediate_size")
    shared = int(config.get("shared_expert_intermediate_size") or 0)
    parameters = count_parameters(config["num_hidden_layers"], hidden, heads, kv_heads, head_dim, intermediate,
                                  config["vocab_size"], tied, experts, expert_intermediate, shared)
    if experts > 1:
        notes.append("mixture of experts: all %d experts' weights are counted (every expert is resident); "
                     "decode reads only the active ones, so the throughput estimate is pessimistic" % experts)
    if config.get("sliding_window") and config.get("use_sliding_window", True):
        notes.append("sliding-window attention: KV cache counted at full length for every layer (an upper bound)")
    spec = _shape(config.get("_name_or_path") or config.get("model_type") or "config.json",
                  config["num_hidden_layers"], hidden, heads, kv_heads, head_dim, intermediate,
                  config["vocab_size"], tied, config.get("max_position_embeddings"))
    spec.update({
        "parameters": parameters,
        "shape_source": source,
        "shape_is_estimate": False,
        "torch_dtype": config.get("torch_dtype", config.get("dtype")),
        "quantization_config": _parse_quantization_config(config.get("quantization_config")),
        "experts": experts,
    })
    if notes:
        spec["notes"] = notes
    return spec


def embedding_parameters(model):
    """Input embedding plus LM head: they stay 16-bit under AWQ, GPTQ and FP8 in vLLM."""
    embed = model["vocab_size"] * model["hidden_size"] * (1 if model["tie_word_embeddings"] else 2)
    return min(embed, model["parameters"] // 2)


def model_summary(model):
    summary = dict((key, model.get(key)) for key in (
        "parameters", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
        "intermediate_size", "vocab_size", "tie_word_embeddings", "max_position_embeddings", "shape_source",
        "shape_is_estimate", "reference_model"))
    summary["parameters_b"] = round(model["parameters"] / 1e9, 3)
    return summary
