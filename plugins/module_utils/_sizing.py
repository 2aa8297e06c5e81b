# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizing planner: the one EC2 GPU instance catalog, and the arithmetic that places a model on it.

Private to this collection; shared by the model_plan module, the sizing filters and the gpu_check role.
Everything here is a pure function of its arguments (no I/O), so it is unit-tested against hand arithmetic.

Memory model (per GPU, for a tensor-parallel size TP), the way vLLM budgets memory:
  vLLM may use  cuda_total x gpu_memory_utilization  (cuda_total: the total CUDA reports, which vLLM logs as
  total_gpu_memory; a few hundred MiB below nvidia-smi's total because the driver keeps some).
  Inside that budget: weights / TP + KV cache / TP + non-torch memory (CUDA context, NCCL buffers)
  + activation peak (vLLM's profiling run). CUDA graphs are captured after the KV cache is allocated, so they
  live in the (1 - gpu_memory_utilization) left over, which must hold them unless enforce_eager is set.
  KV cache for the target = max_model_len x concurrency tokens (every sequence at full length: the
  guarantee, not the average).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar

GIB = 1024 ** 3
MIB = 1024 ** 2

DTYPES = ("float16", "bfloat16", "fp8", "int8", "int4")
QUANTIZATIONS = ("none", "awq", "gptq", "fp8")
KV_CACHE_DTYPES = ("auto", "fp8")
PRICINGS = ("on_demand", "spot", "reserved_1yr")
OPTIMIZE_FOR = ("hourly_cost", "token_cost")

DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_CONCURRENCY = 1
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9

# --- Allowances (per GPU), and why --------------------------------------------------------------------------
# Non-torch memory: CUDA context, cuBLAS workspaces. vLLM's own profiling logs show 0.08-1.79 GiB on one GPU
# (vllm-project/vllm PR #10511: Llama-3-8B on H100, 1.79 GiB; other logs 0.08-0.34 GiB), so 1 GiB.
NON_TORCH_GIB = 1.0
# With TP > 1, NCCL and custom all-reduce buffers come on top: the same PR logs 3.58 GiB in all at TP 2 on
# H100; other TP 2 logs 0.59-0.73 GiB. 1.5 GiB more covers most of that range.
NON_TORCH_TP_EXTRA_GIB = 1.5
# CUDA graphs (vLLM's default, off with --enforce-eager): captured after the KV cache is sized, so they must
# fit in the (1 - gpu_memory_utilization) share. vLLM logs "Graph capturing ... took 0.3-1.5 GiB" for 1-70B
# models; 1 GiB.
CUDA_GRAPHS_GIB = 1.0
# Activation peak of vLLM's profiling run: max_num_batched_tokens tokens through one decoder layer
# (elements per token: 4 x intermediate / TP for the gate/up projections and the activation, 4 x hidden for
# residual, norm, attention in/out) in the 16-bit activation dtype, plus the sampler on max_num_seqs rows
# (fp32 logits and two working copies: probabilities, and the sorted copy for top-p/top-k).
# Checked against vLLM PR #10511 (Llama-3-8B, 8192 batched tokens, 256 seqs): 1.26 GiB measured at TP 1 and
# TP 2; this formula gives 1.49 GiB and 1.06 GiB.
ACTIVATION_INTERMEDIATE_FACTOR = 4
ACTIVATION_HIDDEN_FACTOR = 4
SAMPLER_FP32_COPIES = 3
# Decode is memory-bound: each step reads every weight byte on the GPU plus each sequence's KV cache.
# vLLM reaches roughly three quarters of HBM bandwidth in decode (Llama-3-8B fp16 on an A10G decodes at
# about 28 tokens/s single-stream, against a 37 tokens/s roofline), hence 0.75. Prefill is not counted:
# the estimate is generated tokens per second. Measure and pass tokens_per_second for real numbers.
DECODE_BANDWIDTH_EFFICIENCY = 0.75
# Average context a decoding sequence attends to: half of max_model_len.
AVERAGE_CONTEXT_FRACTION = 0.5
# AWQ/GPTQ keep one fp16 scale (2 bytes) and one packed zero point (bits/8 bytes) per group of weights.
DEFAULT_QUANT_GROUP_SIZE = 128
# When no CUDA total has been measured for a GPU: nvidia-smi's total minus the largest driver reserve seen
# (A100-80GB: 81920 MiB in nvidia-smi, 79.15 GiB in CUDA = 870 MiB less).
DRIVER_RESERVE_ESTIMATE_MIB = 870
# Ampere-or-older GPUs below this run FP8 checkpoints weight-only (FP8 Marlin, W8A16): same memory, slower.
NATIVE_FP8_COMPUTE_CAPABILITY = (8, 9)

# --- GPUs -----------------------------------------------------------------------------------------------------
# aws_memory_mib: EC2 DescribeInstanceTypes GpuInfo MemoryInfo.SizeInMiB (moto 5.2.5 ships AWS's own answer:
#   A10G and L4 22888, L40S 45776, A100 40960 / 81920, H100 81920, H200 144384).
# nvidia_smi_memory_mib: nvidia-smi's memory.total on that GPU (public nvidia-smi tables: A10G 23028, L4 23034,
#   L40S 46068, A100-SXM4-40GB 40960, A100-SXM4-80GB 81920, H100 80GB HBM3 81559, H200 143771).
# cuda_memory_mib: what CUDA (and so vLLM's "total_gpu_memory") reports; vLLM multiplies it by
#   gpu_memory_utilization. This is the number the planner uses: the smallest of the three, and the one the
#   budget really starts from. Sources in cuda_memory_source; "estimate" where none was found.
# memory_bandwidth_gbps: NVIDIA's datasheet HBM/GDDR bandwidth, for the throughput estimate only.
GPUS = {
    "A10G": {
        "name": "NVIDIA A10G", "aws_memory_mib": 22888, "nvidia_smi_memory_mib": 23028, "cuda_memory_mib": 22589,
        "cuda_memory_source": "22.06 GiB total capacity in a CUDA OOM on a 24 GB A10 (vllm-project/vllm#928)",
        "compute_capability": "8.6", "memory_bandwidth_gbps": 600,
    },
    "L4": {
        "name": "NVIDIA L4", "aws_memory_mib": 22888, "nvidia_smi_memory_mib": 23034,
        "cuda_memory_mib": 23034 - DRIVER_RESERVE_ESTIMATE_MIB,
        "cuda_memory_source": "estimate: nvidia-smi 23034 MiB minus the largest driver reserve seen (870 MiB)",
        "compute_capability": "8.9", "memory_bandwidth_gbps": 300,
    },
    "L40S": {
        "name": "NVIDIA L40S", "aws_memory_mib": 45776, "nvidia_smi_memory_mib": 46068, "cuda_memory_mib": 45373,
        "cuda_memory_source": "vLLM log on an L40S: total_gpu_memory (44.31GiB)",
        "compute_capability": "8.9", "memory_bandwidth_gbps": 864,
    },
    "A100-40GB": {
        "name": "NVIDIA A100-SXM4-40GB", "aws_memory_mib": 40960, "nvidia_smi_memory_mib": 40960,
        "cuda_memory_mib": 40448,
        "cuda_memory_source": "39.50 GiB total capacity in a CUDA OOM on an A100 40GB (TianheWu/CoSeR#10)",
        "compute_capability": "8.0", "memory_bandwidth_gbps": 1555,
    },
    "A100-80GB": {
        "name": "NVIDIA A100-SXM4-80GB", "aws_memory_mib": 81920, "nvidia_smi_memory_mib": 81920,
        "cuda_memory_mib": 81050,
        "cuda_memory_source": "79.15 GiB total capacity in a vLLM OOM on an A100 80GB (vllm-project/vllm#4408)",
        "compute_capability": "8.0", "memory_bandwidth_gbps": 2039,
    },
    "H100": {
        "name": "NVIDIA H100 80GB HBM3", "aws_memory_mib": 81920, "nvidia_smi_memory_mib": 81559,
        "cuda_memory_mib": 81121,
        "cuda_memory_source": ("vLLM's profiling log on an H100: total_gpu_memory 79.22GiB "
                               "(vllm-project/vllm PR #10511)"),
        "compute_capability": "9.0", "memory_bandwidth_gbps": 3350,
    },
    "H200": {
        "name": "NVIDIA H200", "aws_memory_mib": 144384, "nvidia_smi_memory_mib": 143771, "cuda_memory_mib": 143165,
        "cuda_memory_source": "vLLM log on an H200: total_gpu_memory (139.81GiB)",
        "compute_capability": "9.0", "memory_bandwidth_gbps": 4800,
    },
}

# --- Prices (USD per instance-hour, us-east-1, Linux, shared tenancy) ------------------------------------------
# On-demand: AWS's EC2 on-demand price list (https://aws.amazon.com/ec2/pricing/on-demand/ and the Price List
#   API file behind it), as quoted in public price snapshots dated 2026-03-04 (price-list publication) to
#   2026-09-17. p4d/p4de/p5/p5en carry AWS's June 2025 cut (p5.48xlarge 98.32 -> 55.04, p4d.24xlarge
#   32.7726 -> 21.957642). p5e.48xlarge has no us-east-1 on-demand price (sold as Capacity Blocks): None,
#   so it is never ranked unless price_overrides gives one.
# Reserved 1-year (standard, no upfront): quoted where a snapshot had it (AWS price list via
#   instances.vantage.sh, 2026-09-17): g5.xlarge 0.634, g5.12xlarge 3.573, g6.xlarge 0.524, g6e.xlarge 1.172,
#   p4d.24xlarge 13.921. Those are 0.630-0.651 x on-demand, so other types get on-demand x RESERVED_1YR_FRACTION,
#   flagged as estimates.
# Spot: a market that moves every few minutes, so always an ASSUMPTION: the family's listed spot/on-demand
#   ratio from the same snapshot (g5.xlarge 0.636, g6.xlarge 0.629, g6e.xlarge 1.701, p4d 16.298, p5 20.788)
#   applied to each size. Give real ones (describe_spot_price_history) with price_overrides.
RESERVED_1YR_FRACTION = 0.63
SPOT_FRACTION_ASSUMED = {
    "g5": 0.636 / 1.006,
    "g6": 0.629 / 0.8048,
    "g6e": 1.701 / 1.861,
    "p4d": 16.298 / 21.957642,
    "p4de": 16.298 / 21.957642,  # no listing: p4d's ratio (same A100 generation)
    "p5": 20.788 / 55.04,
    "p5e": 20.788 / 55.04,  # no listing: p5's ratio
    "p5en": 20.788 / 55.04,  # no listing: p5's ratio
}
PRICE_SOURCE = ("AWS EC2 on-demand price list, us-east-1 Linux, as quoted in public snapshots 2026-03-04 to "
                "2026-09-17 (p4d/p4de/p5/p5en after AWS's June 2025 cut)")

# --- Instances --------------------------------------------------------------------------------------------------
# vCPU, memory, GPU count and instance-store NVMe from EC2 DescribeInstanceTypes (as shipped in moto 5.2.5's
# copy of AWS's answer). NVLink: p4d/p4de (NVSwitch), p5/p5e/p5en (NVSwitch); g5/g6/g6e GPUs talk over PCIe.
# Columns: name, GPU, GPUs, vCPUs, memory GiB, NVMe disks, GB each, on-demand, reserved 1-yr quoted or None.
_INSTANCES = (
    ("g5.xlarge", "A10G", 1, 4, 16, 1, 250, 1.006, 0.634),
    ("g5.2xlarge", "A10G", 1, 8, 32, 1, 450, 1.212, None),
    ("g5.4xlarge", "A10G", 1, 16, 64, 1, 600, 1.624, None),
    ("g5.8xlarge", "A10G", 1, 32, 128, 1, 900, 2.448, None),
    ("g5.16xlarge", "A10G", 1, 64, 256, 1, 1900, 4.096, None),
    ("g5.12xlarge", "A10G", 4, 48, 192, 1, 3800, 5.672, 3.573),
    ("g5.24xlarge", "A10G", 4, 96, 384, 1, 3800, 8.144, None),
    ("g5.48xlarge", "A10G", 8, 192, 768, 2, 3800, 16.288, None),
    ("g6.xlarge", "L4", 1, 4, 16, 1, 250, 0.8048, 0.524),
    ("g6.2xlarge", "L4", 1, 8, 32, 1, 450, 0.9776, None),
    ("g6.4xlarge", "L4", 1, 16, 64, 1, 600, 1.3232, None),
    ("g6.8xlarge", "L4", 1, 32, 128, 2, 450, 2.0144, None),
    ("g6.16xlarge", "L4", 1, 64, 256, 2, 940, 3.3968, None),
    ("g6.12xlarge", "L4", 4, 48, 192, 4, 940, 4.6016, None),
    ("g6.24xlarge", "L4", 4, 96, 384, 4, 940, 6.6752, None),
    ("g6.48xlarge", "L4", 8, 192, 768, 8, 940, 13.3504, None),
    ("g6e.xlarge", "L40S", 1, 4, 32, 1, 250, 1.861, 1.172),
    ("g6e.2xlarge", "L40S", 1, 8, 64, 1, 450, 2.24208, None),
    ("g6e.4xlarge", "L40S", 1, 16, 128, 1, 600, 3.00424, None),
    ("g6e.8xlarge", "L40S", 1, 32, 256, 2, 450, 4.52856, None),
    ("g6e.16xlarge", "L40S", 1, 64, 512, 2, 950, 7.57719, None),
    ("g6e.12xlarge", "L40S", 4, 48, 384, 2, 1900, 10.49264, None),
    ("g6e.24xlarge", "L40S", 4, 96, 768, 2, 1900, 15.06559, None),
    ("g6e.48xlarge", "L40S", 8, 192, 1536, 4, 1900, 30.13118, None),
    ("p4d.24xlarge", "A100-40GB", 8, 96, 1152, 8, 1000, 21.957642, 13.921),
    ("p4de.24xlarge", "A100-80GB", 8, 96, 1152, 8, 1000, 27.44705, None),
    ("p5.48xlarge", "H100", 8, 192, 2048, 8, 3800, 55.04, None),
    ("p5e.48xlarge", "H200", 8, 192, 2048, 8, 3800, None, None),
    ("p5en.48xlarge", "H200", 8, 192, 2048, 8, 3800, 63.296, None),
)
_NVLINK_FAMILIES = ("p4d", "p4de", "p5", "p5e", "p5en")


def _build_catalog():
    catalog = {}
    for name, gpu, gpus, vcpus, memory_gib, disks, disk_gb, on_demand, reserved in _INSTANCES:
        family = name.split(".", 1)[0]
        spot = None if on_demand is None else round(on_demand * SPOT_FRACTION_ASSUMED[family], 4)
        reserved_is_estimate = reserved is None and on_demand is not None
        if reserved_is_estimate:
            reserved = round(on_demand * RESERVED_1YR_FRACTION, 4)
        catalog[name] = {
            "instance_type": name, "family": family, "gpu": gpu, "gpu_count": gpus, "vcpus": vcpus,
            "memory_gib": memory_gib, "nvme_disks": disks, "nvme_gb_each": disk_gb,
            "instance_store_gb": disks * disk_gb, "nvlink": family in _NVLINK_FAMILIES,
            "prices": {"on_demand": on_demand, "spot": spot, "reserved_1yr": reserved},
            "reserved_1yr_is_estimate": reserved_is_estimate, "spot_is_assumption": True,
        }
    return catalog


CATALOG = _build_catalog()

# --- Model shapes -----------------------------------------------------------------------------------------------
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


class SizingError(Exception):
    """A request the planner cannot satisfy; the message names the parameter or the shortfall, and the fix.

    details: data worth returning with the failure (candidates, what would fit).
    """

    def __init__(self, message, details=None):
        super(SizingError, self).__init__(message)
        self.message = message
        self.details = details or {}


def gib(num_bytes):
    return num_bytes / GIB


def _round(value, digits=2):
    return None if value is None else round(value, digits)


def parse_version(text):
    return tuple(int(part) for part in str(text).split("."))


# --- Model spec --------------------------------------------------------------------------------------------------

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


# --- Precision -------------------------------------------------------------------------------------------------

def _sixteen_bit(torch_dtype):
    return "bfloat16" if str(torch_dtype) == "bfloat16" else "float16"


def resolve_precision(model, dtype=None, quantization=None):
    """Weight storage and the vLLM flags for it, from dtype/quantization and the checkpoint's own config.

    dtype is how the weights are stored on the GPU; vLLM's --dtype is the activation dtype, derived here.
    """
    if dtype is not None and dtype not in DTYPES:
        raise SizingError("dtype=%s is not one of %s" % (dtype, ", ".join(DTYPES)))
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise SizingError("quantization=%s is not one of %s" % (quantization, ", ".join(QUANTIZATIONS)))
    checkpoint = model.get("quantization_config")
    if checkpoint:
        stored = {"awq": "int4", "fp8": "fp8"}.get(checkpoint["method"]) or ("int%d" % checkpoint["bits"])
        label = "%s %d-bit" % (checkpoint["method"].upper(), checkpoint["bits"])
        if dtype is not None and dtype != stored:
            raise SizingError("dtype=%s contradicts the checkpoint's quantization_config (%s): its weights are "
                              "stored as %s. Fix: leave dtype out or set dtype=%s" % (dtype, label, stored, stored))
        if quantization is not None and quantization != checkpoint["method"]:
            raise SizingError("quantization=%s contradicts the checkpoint's quantization_config (%s). Fix: leave "
                              "quantization out or set quantization=%s" % (quantization, label, checkpoint["method"]))
        dtype, method, bits, group = stored, checkpoint["method"], checkpoint["bits"], checkpoint["group_size"]
        vllm_quantization = checkpoint.get("vllm_method", method)
    else:
        method = quantization
        if method is None:
            method = {"fp8": "fp8", "int4": None, "int8": None}.get(dtype, "none")
        if method is None:
            raise SizingError("dtype=%s needs a quantized checkpoint: set quantization=%s (and point at an %s "
                              "checkpoint), or use dtype=fp8, which vLLM makes from a 16-bit checkpoint at load "
                              "time" % (dtype, "awq or gptq" if dtype == "int4" else "gptq",
                                        "AWQ/GPTQ 4-bit" if dtype == "int4" else "8-bit GPTQ"))
        if method == "none":
            if dtype in ("fp8", "int8", "int4"):
                raise SizingError("dtype=%s with quantization=none: unquantized weights are 16-bit. Fix: set "
                                  "quantization=%s, or dtype=float16/bfloat16" % (
                                      dtype, {"fp8": "fp8", "int8": "gptq", "int4": "awq or gptq"}[dtype]))
            dtype = dtype or _sixteen_bit(model.get("torch_dtype"))
            bits, group = 16, None
        elif method == "fp8":
            if dtype not in (None, "fp8"):
                raise SizingError("quantization=fp8 stores 8-bit float weights, but dtype=%s. Fix: set dtype=fp8 or "
                                  "leave dtype out" % dtype)
            dtype, bits, group = "fp8", 8, None
        elif method == "awq":
            if dtype not in (None, "int4"):
                raise SizingError("quantization=awq stores 4-bit weights, but dtype=%s. Fix: set dtype=int4 or leave "
                                  "dtype out%s" % (dtype, "; for 8-bit weights use quantization=gptq"
                                                   if dtype == "int8" else ""))
            dtype, bits, group = "int4", 4, DEFAULT_QUANT_GROUP_SIZE
        else:  # gptq
            if dtype not in (None, "int4", "int8"):
                raise SizingError("quantization=gptq stores 4- or 8-bit integer weights, but dtype=%s. Fix: set "
                                  "dtype=int4 or dtype=int8, or leave dtype out (int4)" % dtype)
            dtype = dtype or "int4"
            bits, group = (4 if dtype == "int4" else 8), DEFAULT_QUANT_GROUP_SIZE
        vllm_quantization = None if method == "none" else method
    if method == "none":
        bytes_per_param, activation = 2.0, dtype
    elif method == "fp8":
        bytes_per_param, activation = 1.0, _sixteen_bit(model.get("torch_dtype") or "bfloat16")
    else:
        # AWQ/GPTQ kernels run in float16; per group: one fp16 scale and one packed zero point.
        bytes_per_param = bits / 8.0 + (2 + bits / 8.0) / group
        activation = "float16"
    # On-the-fly FP8 reads the 16-bit checkpoint from disk; a quantized checkpoint is stored as planned.
    on_disk_bytes_per_param = 2.0 if (method == "fp8" and not checkpoint) else bytes_per_param
    # bfloat16 needs Ampere (8.0); so do the Marlin kernels vLLM runs AWQ/GPTQ and (weight-only) FP8 with.
    min_cc = "8.0" if (method != "none" or activation == "bfloat16") else "7.0"
    return {
        "dtype": dtype, "quantization": method, "bits": bits, "group_size": group,
        "bytes_per_quantized_param": bytes_per_param, "on_disk_bytes_per_param": on_disk_bytes_per_param,
        "vllm_dtype": activation, "vllm_quantization": vllm_quantization, "activation_bytes": 2,
        "min_compute_capability": min_cc, "from_checkpoint": bool(checkpoint),
    }


def weights_bytes(model, precision):
    """All the weights: quantized linear layers plus the 16-bit embedding and LM head."""
    embed = embedding_parameters(model)
    return (model["parameters"] - embed) * precision["bytes_per_quantized_param"] + embed * 2.0


def checkpoint_bytes(model, precision):
    embed = embedding_parameters(model)
    return (model["parameters"] - embed) * precision["on_disk_bytes_per_param"] + embed * 2.0


def kv_bytes_per_element(kv_cache_dtype):
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise SizingError("kv_cache_dtype=%s is not one of %s" % (kv_cache_dtype, ", ".join(KV_CACHE_DTYPES)))
    return 1 if kv_cache_dtype == "fp8" else 2


def kv_cache_bytes_per_token(model, kv_cache_dtype="auto", tensor_parallel_size=1):
    """2 (K and V) x layers x KV heads x head dim x bytes, for the whole model (TP 1) or one GPU's share.

    With TP larger than the KV head count vLLM replicates heads, so each GPU holds at least one.
    """
    heads_per_gpu = max(1, model["num_key_value_heads"] // tensor_parallel_size)
    return 2 * model["num_hidden_layers"] * heads_per_gpu * model["head_dim"] * kv_bytes_per_element(kv_cache_dtype)


def serve_defaults(gpu):
    """vLLM's OpenAI-server defaults (engine/arg_utils.py): larger batches on >= 70 GiB GPUs other than A100."""
    if gpu["cuda_memory_mib"] >= 70 * 1024 and "A100" not in gpu["name"]:
        return {"max_num_batched_tokens": 8192, "max_num_seqs": 1024}
    return {"max_num_batched_tokens": 2048, "max_num_seqs": 256}


def activation_bytes(model, tensor_parallel_size, gpu, precision):
    defaults = serve_defaults(gpu)
    per_token = (ACTIVATION_INTERMEDIATE_FACTOR * model["intermediate_size"] / tensor_parallel_size
                 + ACTIVATION_HIDDEN_FACTOR * model["hidden_size"]) * precision["activation_bytes"]
    sampler = defaults["max_num_seqs"] * model["vocab_size"] * 4 * SAMPLER_FP32_COPIES
    return defaults["max_num_batched_tokens"] * per_token + sampler


def overhead_bytes(model, tensor_parallel_size, gpu, precision):
    non_torch = NON_TORCH_GIB + (NON_TORCH_TP_EXTRA_GIB if tensor_parallel_size > 1 else 0.0)
    return non_torch * GIB + activation_bytes(model, tensor_parallel_size, gpu, precision)


def valid_tensor_parallel_sizes(model, gpu_count):
    """Powers of two up to the GPU count that divide the attention heads and fit vLLM's KV-head rule."""
    sizes = []
    size = 1
    while size <= gpu_count:
        kv = model["num_key_value_heads"]
        if model["num_attention_heads"] % size == 0 and (kv % size == 0 or size % kv == 0):
            sizes.append(size)
        size *= 2
    return sizes


def memory_breakdown(model, precision, request, gpu, tensor_parallel_size):
    """Per-GPU memory for one TP size against the GPU's vLLM budget, all in bytes."""
    tp = tensor_parallel_size
    kv_per_token_gpu = kv_cache_bytes_per_token(model, request["kv_cache_dtype"], tp)
    tokens = request["max_model_len"] * request["concurrency"]
    weights = weights_bytes(model, precision) / tp
    kv = kv_per_token_gpu * tokens
    overhead = overhead_bytes(model, tp, gpu, precision)
    cuda_total = gpu["cuda_memory_mib"] * MIB
    budget = cuda_total * request["gpu_memory_utilization"]
    required = weights + kv + overhead
    kv_room = budget - weights - overhead
    return {
        "tensor_parallel_size": tp, "weights": weights, "kv_cache": kv, "kv_per_token": kv_per_token_gpu,
        "overhead": overhead, "required": required, "budget": budget, "cuda_total": cuda_total,
        "kv_room": kv_room, "fits": required <= budget,
        "max_tokens": int(kv_room // kv_per_token_gpu) if kv_room > 0 else 0,
        "headroom": cuda_total - budget,
    }


def _describe(breakdown, utilization):
    return ("needs %.2f GiB per GPU at TP %d (weights %.2f + KV cache %.2f + overhead %.2f), has %.2f GiB "
            "(%.2f GiB CUDA-visible x gpu_memory_utilization %s)" % (
                gib(breakdown["required"]), breakdown["tensor_parallel_size"], gib(breakdown["weights"]),
                gib(breakdown["kv_cache"]), gib(breakdown["overhead"]), gib(breakdown["budget"]),
                gib(breakdown["cuda_total"]), utilization))


def estimate_tokens_per_second(breakdown, request, gpu):
    """Decode roofline: one step reads this GPU's weights and every sequence's KV cache (half-full on average)."""
    concurrency = request["concurrency"]
    average_context = request["max_model_len"] * AVERAGE_CONTEXT_FRACTION
    step_bytes = breakdown["weights"] + concurrency * average_context * breakdown["kv_per_token"]
    step_seconds = step_bytes / (gpu["memory_bandwidth_gbps"] * 1e9 * DECODE_BANDWIDTH_EFFICIENCY)
    return concurrency / step_seconds


def hourly_price(instance, pricing, price_overrides=None):
    if price_overrides and instance["instance_type"] in price_overrides:
        return float(price_overrides[instance["instance_type"]]), "price_overrides"
    price = instance["prices"][pricing]
    if price is None:
        return None, "none"
    if pricing == "spot":
        return price, "assumption"
    if pricing == "reserved_1yr" and instance["reserved_1yr_is_estimate"]:
        return price, "estimate"
    return price, "catalog"


def cost_per_million_tokens(hourly, tokens_per_second):
    if hourly is None or not tokens_per_second:
        return None
    return hourly / (tokens_per_second * 3600.0) * 1e6


def break_even(hourly, tokens_per_second, api_price_per_mtok):
    """Tokens a day above which one instance running all day costs less than the API (and whether it can serve them)."""
    if hourly is None or not api_price_per_mtok:
        return None
    cost_per_day = hourly * 24.0
    tokens_per_day = cost_per_day / api_price_per_mtok * 1e6
    capacity = tokens_per_second * 86400.0 if tokens_per_second else None
    return {
        "api_price_per_mtok": api_price_per_mtok,
        "self_hosted_cost_per_day_usd": round(cost_per_day, 2),
        "break_even_tokens_per_day": int(math.ceil(tokens_per_day)),
        "capacity_tokens_per_day": None if capacity is None else int(capacity),
        "self_hosting_can_win": capacity is not None and capacity >= tokens_per_day,
        "cheaper_than_api_at_1m_tokens_per_day": tokens_per_day <= 1e6,
        "explanation": (
            "one instance costs $%.2f a day whatever it serves; the API costs $%s per 1M tokens, so self-hosting "
            "is cheaper above %s tokens/day sustained%s" % (
                cost_per_day, api_price_per_mtok, "{:,}".format(int(math.ceil(tokens_per_day))),
                "" if capacity is None else (
                    " - within this instance's estimated capacity of %s tokens/day" % "{:,}".format(int(capacity))
                    if capacity >= tokens_per_day else
                    " - more than this instance's estimated capacity of %s tokens/day, so at this API price one "
                    "instance never pays off" % "{:,}".format(int(capacity))))),
    }


# --- Request ---------------------------------------------------------------------------------------------------

def normalize_request(request):
    """Defaults and range checks; errors name the parameter and the fix."""
    values = {
        "dtype": None, "quantization": None, "kv_cache_dtype": "auto", "max_model_len": DEFAULT_MAX_MODEL_LEN,
        "concurrency": DEFAULT_CONCURRENCY, "gpu_memory_utilization": DEFAULT_GPU_MEMORY_UTILIZATION,
        "enforce_eager": False, "instance_types": None, "instance_type": None, "tensor_parallel_size": None,
        "pricing": "on_demand", "price_overrides": None, "optimize_for": "hourly_cost", "tokens_per_second": None,
        "api_price_per_mtok": None,
    }
    unknown = sorted(set(request) - set(values))
    if unknown:
        raise SizingError("unknown option(s): %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(values))))
    values.update(dict((key, value) for key, value in request.items() if value is not None))
    if values["kv_cache_dtype"] not in KV_CACHE_DTYPES:
        raise SizingError("kv_cache_dtype=%s is not one of %s" % (values["kv_cache_dtype"], ", ".join(KV_CACHE_DTYPES)))
    for name in ("max_model_len", "concurrency"):
        if int(values[name]) < 1:
            raise SizingError("%s must be at least 1, got %s" % (name, values[name]))
        values[name] = int(values[name])
    utilization = values["gpu_memory_utilization"]
    if grammar.finite_number("gpu_memory_utilization", utilization) or not 0.0 < float(utilization) <= 1.0:
        raise SizingError("gpu_memory_utilization must be above 0 and at most 1 (vLLM's fraction of GPU memory), got "
                          "%s" % values["gpu_memory_utilization"])
    values["gpu_memory_utilization"] = float(utilization)
    if values["pricing"] not in PRICINGS:
        raise SizingError("pricing=%s is not one of %s" % (values["pricing"], ", ".join(PRICINGS)))
    if values["optimize_for"] not in OPTIMIZE_FOR:
        raise SizingError("optimize_for=%s is not one of %s" % (values["optimize_for"], ", ".join(OPTIMIZE_FOR)))
    tp = values["tensor_parallel_size"]
    if tp is not None and (int(tp) < 1 or int(tp) & (int(tp) - 1)):
        raise SizingError("tensor_parallel_size must be a power of two (1, 2, 4, 8), got %s" % tp)
    for name in ("tokens_per_second", "api_price_per_mtok"):
        if values[name] is not None:
            values[name] = _positive_number(name, values[name], "")
    names = list(values["instance_types"] or [])
    if values["instance_type"]:
        names.append(values["instance_type"])
    unknown_types = [name for name in names if name not in CATALOG]
    if unknown_types:
        raise SizingError("instance type(s) %s not in the catalog; known: %s" % (
            ", ".join(unknown_types), ", ".join(sorted(CATALOG))))
    for name, price in (values["price_overrides"] or {}).items():
        if name not in CATALOG:
            raise SizingError("price_overrides names %s, not in the catalog; known: %s" % (
                name, ", ".join(sorted(CATALOG))))
        values["price_overrides"][name] = _positive_number("price_overrides[%s]" % name, price, " USD/hour")
    return values


def _positive_number(option, value, unit):
    """value as a float; NaN, infinity, text and values at or below zero fail naming the option."""
    if grammar.finite_number(option, value) or float(value) <= 0:
        raise SizingError("%s must be a positive number%s, got %r" % (option, unit, value))
    return float(value)


# --- Planning ----------------------------------------------------------------------------------------------------

def evaluate_instance(model, precision, request, instance):
    """One catalog entry: kept (smallest TP that fits) or rejected, with the arithmetic in the reason."""
    gpu = GPUS[instance["gpu"]]
    utilization = request["gpu_memory_utilization"]
    hourly, price_source = hourly_price(instance, request["pricing"], request["price_overrides"])
    entry = {
        "instance_type": instance["instance_type"], "gpu": gpu["name"], "gpu_count": instance["gpu_count"],
        "gpu_memory_gib": _round(gpu["cuda_memory_mib"] / 1024.0), "nvlink": instance["nvlink"],
        "hourly_cost_usd": hourly, "price_source": price_source, "kept": False, "tensor_parallel_size": None,
        "required_gib_per_gpu": None, "available_gib_per_gpu": _round(gpu["cuda_memory_mib"] * utilization / 1024.0),
    }
    sizes = valid_tensor_parallel_sizes(model, instance["gpu_count"])
    wanted = request["tensor_parallel_size"]
    if wanted is not None:
        if wanted > instance["gpu_count"]:
            entry["reason"] = "tensor_parallel_size %d needs %d GPUs, it has %d" % (
                wanted, wanted, instance["gpu_count"])
            return entry, None
        if wanted not in sizes:
            entry["reason"] = ("tensor_parallel_size %d does not divide the model's %d attention heads / %d KV heads "
                               "as vLLM requires" % (
                                   wanted, model["num_attention_heads"], model["num_key_value_heads"]))
            return entry, None
        sizes = [wanted]
    if not sizes:
        entry["reason"] = "no tensor-parallel size up to %d GPUs divides the model's %d attention heads" % (
            instance["gpu_count"], model["num_attention_heads"])
        return entry, None
    cuda_total = gpu["cuda_memory_mib"] * MIB
    if not request["enforce_eager"] and cuda_total * (1 - utilization) < CUDA_GRAPHS_GIB * GIB:
        entry["reason"] = ("gpu_memory_utilization %s leaves %.2f GiB outside vLLM's budget, less than the ~%.1f GiB "
                           "CUDA graphs take; lower gpu_memory_utilization or set enforce_eager" % (
                               utilization, gib(cuda_total * (1 - utilization)), CUDA_GRAPHS_GIB))
        return entry, None
    breakdown = None
    for size in sizes:
        breakdown = memory_breakdown(model, precision, request, gpu, size)
        if breakdown["fits"]:
            break
    entry["tensor_parallel_size"] = breakdown["tensor_parallel_size"]
    entry["required_gib_per_gpu"] = _round(gib(breakdown["required"]))
    if not breakdown["fits"]:
        entry["reason"] = _describe(breakdown, utilization)
        if instance["gpu_count"] > 1 and wanted is None:
            entry["reason"] += " (the largest tensor-parallel size this instance allows)"
        return entry, breakdown
    tokens_per_second = request["tokens_per_second"] or estimate_tokens_per_second(breakdown, request, gpu)
    entry["tokens_per_second"] = round(tokens_per_second, 1)
    entry["cost_per_mtok_usd"] = _round(cost_per_million_tokens(hourly, tokens_per_second), 4)
    entry["kept"] = True
    if hourly is None:
        entry["reason"] = ("fits at TP %d (%.2f of %.2f GiB per GPU), but has no %s price in the catalog; give one "
                           "in price_overrides to rank it" % (
                               breakdown["tensor_parallel_size"], gib(breakdown["required"]), gib(breakdown["budget"]),
                               request["pricing"]))
    else:
        entry["reason"] = "fits at TP %d: %.2f of %.2f GiB per GPU; $%s/hour %s" % (
            breakdown["tensor_parallel_size"], gib(breakdown["required"]), gib(breakdown["budget"]), hourly,
            request["pricing"])
    return entry, breakdown


def _rank_key(entry, optimize_for):
    cost = entry["cost_per_mtok_usd"] if optimize_for == "token_cost" else entry["hourly_cost_usd"]
    return (cost, entry["gpu_count"], entry["tensor_parallel_size"], entry["instance_type"])


def _candidates(model, precision, request, names):
    results = []
    for name in names:
        entry, breakdown = evaluate_instance(model, precision, request, CATALOG[name])
        results.append((entry, breakdown))
    return results


def _choose(results, optimize_for):
    ranked = [pair for pair in results if pair[0]["kept"] and pair[0]["hourly_cost_usd"] is not None]
    if not ranked:
        return None, None
    return min(ranked, key=lambda pair: _rank_key(pair[0], optimize_for))


def _allowed_names(request):
    if request["instance_type"]:
        return [request["instance_type"]]
    return list(request["instance_types"] or CATALOG)


def _cheapest_fit(model, precision, request, names):
    return _choose(_candidates(model, precision, request, names), request["optimize_for"])[0]


def _vllm_flags(precision, request, tensor_parallel_size):
    flags = [
        ("--tensor-parallel-size", tensor_parallel_size),
        ("--max-model-len", request["max_model_len"]),
        ("--gpu-memory-utilization", request["gpu_memory_utilization"]),
        ("--dtype", precision["vllm_dtype"]),
    ]
    if precision["vllm_quantization"]:
        flags.append(("--quantization", precision["vllm_quantization"]))
    if request["kv_cache_dtype"] != "auto":
        flags.append(("--kv-cache-dtype", request["kv_cache_dtype"]))
    if request["enforce_eager"]:
        flags.append(("--enforce-eager", None))
    return flags


def gpu_check_requirements(required_bytes_per_gpu, utilization, tensor_parallel_size, gpu, precision):
    """What llmserve.aws.gpu_validate should demand, in its own terms (nvidia-smi memory.total, MiB)."""
    cuda_needed_mib = required_bytes_per_gpu / utilization / MIB
    driver_reserve = gpu["nvidia_smi_memory_mib"] - gpu["cuda_memory_mib"] if gpu else DRIVER_RESERVE_ESTIMATE_MIB
    min_memory_mib = int(math.ceil(cuda_needed_mib + driver_reserve))
    return {
        "tensor_parallel_size": tensor_parallel_size,
        "min_memory_mib": min_memory_mib,
        "required_memory_gib": round(min_memory_mib * tensor_parallel_size / 1024.0, 2),
        "min_compute_capability": precision["min_compute_capability"],
    }


def required_memory_gib(model, request=None, tensor_parallel_size=1, instance_type=None):
    """GPU memory one GPU needs for a profile (weights share + KV cache share + overhead), in GiB.

    instance_type picks vLLM's batch defaults for its GPU (H100/H200 profile larger batches); without it, the
    defaults of GPUs under 70 GiB apply.
    """
    request = normalize_request(dict(request or {}, tensor_parallel_size=tensor_parallel_size))
    precision = resolve_precision(model, request["dtype"], request["quantization"])
    gpu = GPUS[CATALOG[instance_type]["gpu"]] if instance_type else GPUS["A10G"]
    if tensor_parallel_size not in valid_tensor_parallel_sizes(model, tensor_parallel_size):
        raise SizingError("tensor_parallel_size %d does not divide the model's %d attention heads / %d KV heads" % (
            tensor_parallel_size, model["num_attention_heads"], model["num_key_value_heads"]))
    return gib(memory_breakdown(model, precision, request, gpu, tensor_parallel_size)["required"])


def _model_summary(model):
    summary = dict((key, model.get(key)) for key in (
        "parameters", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
        "intermediate_size", "vocab_size", "tie_word_embeddings", "max_position_embeddings", "shape_source",
        "shape_is_estimate", "reference_model"))
    summary["parameters_b"] = round(model["parameters"] / 1e9, 3)
    return summary


def plan(model, request):
    """Place a model: the cheapest catalog instance that fits, its TP size, vLLM flags, costs and every candidate.

    Raises SizingError when nothing fits; its message says what would (computed, not canned) and its details
    carry the candidates.
    """
    request = normalize_request(request)
    precision = resolve_precision(model, request["dtype"], request["quantization"])
    notes = list(model.get("notes") or [])
    max_positions = model.get("max_position_embeddings")
    if max_positions and request["max_model_len"] > max_positions:
        message = "max_model_len %d is above the model's max_position_embeddings %d" % (
            request["max_model_len"], max_positions)
        if not model.get("shape_is_estimate"):
            raise SizingError(message + "; vLLM refuses it. Fix: max_model_len <= %d" % max_positions)
        notes.append(message + " for the estimated shape; check the real model's limit")
    if model.get("shape_is_estimate"):
        notes.append(model["shape_source"])
    names = _allowed_names(request)
    results = _candidates(model, precision, request, names)
    chosen, breakdown = _choose(results, request["optimize_for"])
    candidates = [pair[0] for pair in results]
    if chosen is None:
        suggestions = _suggestions(model, precision, request, results)
        raise SizingError(_nothing_fits_message(model, precision, request, results, suggestions),
                          {"candidates": candidates, "model": _model_summary(model), "precision": precision,
                           "suggestions": suggestions})
    for entry in candidates:
        if entry is chosen:
            entry["reason"] = "chosen: cheapest that fits (%s); %s" % (
                "by estimated $/1M tokens" if request["optimize_for"] == "token_cost" else "by $/hour",
                entry["reason"])
    instance = CATALOG[chosen["instance_type"]]
    gpu = GPUS[instance["gpu"]]
    tp = chosen["tensor_parallel_size"]
    tokens_per_second = request["tokens_per_second"] or estimate_tokens_per_second(breakdown, request, gpu)
    hourly = chosen["hourly_cost_usd"]
    if tp < instance["gpu_count"]:
        notes.append("%d of %s's %d GPUs are used: raise tensor_parallel_size for more KV cache and speed, or run "
                     "%d replicas" % (tp, instance["instance_type"], instance["gpu_count"],
                                      instance["gpu_count"] // tp))
    if precision["quantization"] == "fp8" and parse_version(gpu["compute_capability"]) < NATIVE_FP8_COMPUTE_CAPABILITY:
        notes.append("%s (compute capability %s) runs FP8 weight-only (FP8 Marlin): memory as planned, slower than "
                     "native FP8 on 8.9+" % (gpu["name"], gpu["compute_capability"]))
    if tp > 1 and not instance["nvlink"]:
        notes.append("%s's GPUs talk over PCIe, not NVLink: tensor-parallel all-reduce is slower than the "
                     "throughput estimate assumes" % instance["instance_type"])
    flags = _vllm_flags(precision, request, tp)
    vllm_args = []
    for flag, value in flags:
        vllm_args.append(flag)
        if value is not None:
            vllm_args.append(str(value))
    kv_total = kv_cache_bytes_per_token(model, request["kv_cache_dtype"]) * request["max_model_len"] * request[
        "concurrency"]
    return {
        "fits": True,
        "instance_type": instance["instance_type"],
        "tensor_parallel_size": tp,
        "gpu": gpu["name"],
        "gpu_count": instance["gpu_count"],
        "dtype": precision["dtype"],
        "quantization": precision["quantization"],
        "weights_gib": _round(gib(weights_bytes(model, precision))),
        "weights_gib_per_gpu": _round(gib(breakdown["weights"])),
        "checkpoint_gib": _round(gib(checkpoint_bytes(model, precision))),
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(model, request["kv_cache_dtype"]),
        "kv_cache_gib_per_token": gib(kv_cache_bytes_per_token(model, request["kv_cache_dtype"])),
        "kv_cache_gib": _round(gib(kv_total)),
        "kv_cache_gib_per_gpu": _round(gib(breakdown["kv_cache"])),
        "overhead_gib_per_gpu": _round(gib(breakdown["overhead"])),
        "required_gib_per_gpu": _round(gib(breakdown["required"])),
        "available_gib_per_gpu": _round(gib(breakdown["budget"])),
        "gpu_memory_gib": _round(gib(breakdown["cuda_total"])),
        "max_concurrency_at_max_model_len": breakdown["max_tokens"] // request["max_model_len"],
        "max_model_len_at_concurrency": min(breakdown["max_tokens"] // request["concurrency"],
                                            max_positions or breakdown["max_tokens"]),
        "vllm_args": vllm_args,
        "vllm_flags": dict((flag.lstrip("-").replace("-", "_"), True if value is None else value)
                           for flag, value in flags),
        "pricing": request["pricing"],
        "hourly_cost_usd": hourly,
        "price_source": chosen["price_source"],
        "tokens_per_second": round(tokens_per_second, 1),
        "tokens_per_second_source": "given" if request["tokens_per_second"] else (
            "estimate: decode memory-bandwidth roofline x %s at concurrency %d, average context %d tokens" % (
                DECODE_BANDWIDTH_EFFICIENCY, request["concurrency"],
                int(request["max_model_len"] * AVERAGE_CONTEXT_FRACTION))),
        "cost_per_mtok_usd": _round(cost_per_million_tokens(hourly, tokens_per_second), 4),
        "break_even": break_even(hourly, tokens_per_second, request["api_price_per_mtok"]),
        "gpu_check": gpu_check_requirements(breakdown["required"], request["gpu_memory_utilization"], tp, gpu,
                                            precision),
        "model": _model_summary(model),
        "candidates": candidates,
        "notes": notes,
    }


# --- When nothing fits: what would ----------------------------------------------------------------------------

def _largest_breakdown(results):
    """The candidate that came closest: most KV room per GPU."""
    measured = [(entry, breakdown) for entry, breakdown in results if breakdown is not None]
    if not measured:
        return None, None
    # Ties (the same GPU in two instance types) go to the priced, cheaper one.
    return max(measured, key=lambda pair: (round(pair[1]["kv_room"]), pair[0]["hourly_cost_usd"] is not None,
                                           -(pair[0]["hourly_cost_usd"] or 0)))


def _gpus_needed(model, precision, request, gpu_key):
    """Fewest GPUs of one model (a power of two) that hold the model and target, and where to get them.

    Within one instance the GPUs run tensor-parallel; beyond the largest instance of that GPU, whole instances
    are chained as pipeline stages (vLLM's --pipeline-parallel-size), each stage holding its share of the layers.
    """
    gpu = GPUS[gpu_key]
    hosts = sorted((item for item in CATALOG.values() if item["gpu"] == gpu_key),
                   key=lambda item: (item["gpu_count"], item["prices"]["on_demand"] is None,
                                     item["prices"]["on_demand"] or 0))
    per_node = max(item["gpu_count"] for item in hosts)
    count = 1
    while count <= 64:
        tp = min(count, per_node)
        stages = count // tp
        if tp in valid_tensor_parallel_sizes(model, tp):
            shard = memory_breakdown(model, precision, request, gpu, tp)
            if (shard["weights"] + shard["kv_cache"]) / stages + shard["overhead"] <= shard["budget"]:
                host = next(item for item in hosts if item["gpu_count"] >= tp)
                return {"gpus": count, "gpu": gpu["name"], "tensor_parallel_size": tp, "pipeline_parallel_size": stages,
                        "nodes": stages, "instance_type": host["instance_type"]}
        count *= 2
    return None


def _suggestions(model, precision, request, results):
    names = _allowed_names(request)
    suggestions = {}
    # More GPUs of the largest GPU among the allowed instances.
    biggest = max((CATALOG[name] for name in names), key=lambda item: GPUS[item["gpu"]]["cuda_memory_mib"])
    more = _gpus_needed(model, precision, request, biggest["gpu"])
    if more:
        suggestions["more_gpus"] = more
    # Elsewhere in the catalog, when the request narrowed it.
    if set(names) != set(CATALOG) and not request["tensor_parallel_size"]:
        wider = dict(request, instance_types=None, instance_type=None)
        entry = _cheapest_fit(model, precision, wider, list(CATALOG))
        if entry:
            suggestions["other_instance"] = {key: entry[key] for key in (
                "instance_type", "tensor_parallel_size", "hourly_cost_usd", "required_gib_per_gpu")}
    # Quantization: smaller weights, same context and concurrency.
    if not precision["from_checkpoint"]:
        for dtype, method in (("fp8", "fp8"), ("int4", "awq")):
            if precision["bits"] <= {"fp8": 8, "int4": 4}[dtype]:
                continue
            lighter = resolve_precision(model, dtype, method)
            entry = _cheapest_fit(model, lighter, request, names)
            if entry:
                suggestions["quantization_" + dtype] = {
                    "dtype": dtype, "quantization": method, "instance_type": entry["instance_type"],
                    "tensor_parallel_size": entry["tensor_parallel_size"], "hourly_cost_usd": entry["hourly_cost_usd"],
                    "required_gib_per_gpu": entry["required_gib_per_gpu"]}
                break
    if request["kv_cache_dtype"] == "auto":
        entry = _cheapest_fit(model, precision, dict(request, kv_cache_dtype="fp8"), names)
        if entry:
            suggestions["kv_cache_fp8"] = {key: entry[key] for key in (
                "instance_type", "tensor_parallel_size", "hourly_cost_usd", "required_gib_per_gpu")}
    # Shorter context or fewer sequences on the instance that came closest.
    entry, breakdown = _largest_breakdown(results)
    if breakdown is not None and breakdown["max_tokens"] > 0:
        max_len = breakdown["max_tokens"] // request["concurrency"]
        if max_len >= 1:
            suggestions["shorter_context"] = {
                "max_model_len": max_len, "concurrency": request["concurrency"],
                "instance_type": entry["instance_type"], "tensor_parallel_size": breakdown["tensor_parallel_size"]}
        sequences = breakdown["max_tokens"] // request["max_model_len"]
        if sequences >= 1:
            suggestions["lower_concurrency"] = {
                "concurrency": sequences, "max_model_len": request["max_model_len"],
                "instance_type": entry["instance_type"], "tensor_parallel_size": breakdown["tensor_parallel_size"]}
    return suggestions


def _nothing_fits_message(model, precision, request, results, suggestions):
    target = "%.1fB parameters as %s%s, max_model_len %d x concurrency %d" % (
        model["parameters"] / 1e9, precision["dtype"],
        "" if precision["quantization"] == "none" else " (%s)" % precision["quantization"],
        request["max_model_len"], request["concurrency"])
    if request["instance_type"]:
        entry = results[0][0]
        head = "%s does not fit %s: %s." % (target, request["instance_type"], entry["reason"])
    else:
        entry, breakdown = _largest_breakdown(results)
        scope = "the %d allowed instance types" % len(results) if request["instance_types"] else "the catalog"
        if breakdown is None:
            head = "Nothing in %s fits %s: %s." % (scope, target, "; ".join(
                "%s: %s" % (pair[0]["instance_type"], pair[0]["reason"]) for pair in results))
        else:
            head = "Nothing in %s fits %s; the closest, %s, %s." % (
                scope, target, entry["instance_type"], entry["reason"])
        priced = [pair[0] for pair in results if pair[0]["kept"] and pair[0]["hourly_cost_usd"] is None]
        if priced:
            head += " %s fit%s but %s no %s price (give one in price_overrides)." % (
                ", ".join(item["instance_type"] for item in priced), "s" if len(priced) == 1 else "",
                "has" if len(priced) == 1 else "have", request["pricing"])
    options = []
    more = suggestions.get("more_gpus")
    if more:
        if more["nodes"] > 1:
            options.append("more GPUs: %d x %s (%d x %s, --tensor-parallel-size %d --pipeline-parallel-size %d); this "
                           "planner places one node" % (more["gpus"], more["gpu"], more["nodes"],
                                                        more["instance_type"], more["tensor_parallel_size"],
                                                        more["pipeline_parallel_size"]))
        else:
            options.append("more GPUs: %d x %s (%s at --tensor-parallel-size %d)" % (
                more["gpus"], more["gpu"], more["instance_type"], more["tensor_parallel_size"]))
    other = suggestions.get("other_instance")
    if other:
        options.append("another instance type: %s at TP %d ($%s/hour, %.2f GiB per GPU)" % (
            other["instance_type"], other["tensor_parallel_size"], other["hourly_cost_usd"],
            other["required_gib_per_gpu"]))
    for dtype in ("fp8", "int4"):
        quant = suggestions.get("quantization_" + dtype)
        if quant:
            options.append("quantization: dtype=%s quantization=%s fits %s at TP %d ($%s/hour)" % (
                quant["dtype"], quant["quantization"], quant["instance_type"], quant["tensor_parallel_size"],
                quant["hourly_cost_usd"]))
    kv = suggestions.get("kv_cache_fp8")
    if kv:
        options.append("kv_cache_dtype=fp8 (half the KV cache) fits %s at TP %d ($%s/hour)" % (
            kv["instance_type"], kv["tensor_parallel_size"], kv["hourly_cost_usd"]))
    shorter = suggestions.get("shorter_context")
    if shorter:
        options.append("shorter context: max_model_len <= %d at concurrency %d on %s" % (
            shorter["max_model_len"], shorter["concurrency"], shorter["instance_type"]))
    fewer = suggestions.get("lower_concurrency")
    if fewer:
        options.append("lower concurrency: <= %d sequences of %d tokens on %s" % (
            fewer["concurrency"], fewer["max_model_len"], fewer["instance_type"]))
    entry, breakdown = _largest_breakdown(results)
    if breakdown is not None and breakdown["kv_room"] <= 0:
        options.append("weights and overhead alone (%.2f GiB per GPU on %s) exceed the budget, so a shorter context "
                       "or fewer sequences cannot help" % (gib(breakdown["weights"] + breakdown["overhead"]),
                                                           entry["instance_type"]))
    if not options:
        return head + " No single change found that fits."
    return head + " What would fit: " + "; ".join(options) + "."
