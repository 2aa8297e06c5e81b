# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-GPU memory arithmetic, the way vLLM budgets memory.

For a tensor-parallel size TP, vLLM may use  cuda_total x gpu_memory_utilization  (cuda_total: the total CUDA
reports, which vLLM logs as total_gpu_memory; a few hundred MiB below nvidia-smi's total because the driver keeps
some). Inside that budget: weights / TP + KV cache / TP + non-torch memory (CUDA context, NCCL buffers)
+ activation peak (vLLM's profiling run). CUDA graphs are captured after the KV cache is allocated, so they
live in the (1 - gpu_memory_utilization) left over, which must hold them unless enforce_eager is set.
KV cache for the target = max_model_len x concurrency tokens (every sequence at full length: the
guarantee, not the average)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils._sizing.errors import SizingError
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.model_spec import embedding_parameters
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import GIB
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import MIB
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import gib


KV_CACHE_DTYPES = ("auto", "fp8")

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
    intermediate = ACTIVATION_INTERMEDIATE_FACTOR * model["intermediate_size"] / tensor_parallel_size
    hidden = ACTIVATION_HIDDEN_FACTOR * model["hidden_size"]
    per_token = (intermediate + hidden) * precision["activation_bytes"]
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


def describe_breakdown(breakdown, utilization):
    return ("needs %.2f GiB per GPU at TP %d (weights %.2f + KV cache %.2f + overhead %.2f), has %.2f GiB "
            "(%.2f GiB CUDA-visible x gpu_memory_utilization %s)" % (
                gib(breakdown["required"]), breakdown["tensor_parallel_size"], gib(breakdown["weights"]),
                gib(breakdown["kv_cache"]), gib(breakdown["overhead"]), gib(breakdown["budget"]),
                gib(breakdown["cuda_total"]), utilization))
