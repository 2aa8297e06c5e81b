# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planner: the cheapest catalog instance that fits a model and target, its TP size, vLLM flags and costs.

Everything in this package is a pure function of its arguments (no I/O), so it is unit-tested against hand
arithmetic. Shared by the model_plan module, the sizing filters and the gpu_check role."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.llmserve.aws.plugins.module_utils._gpu_checks import parse_version
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.advice import nothing_fits_message
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.advice import what_would_fit
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.candidates import allowed_names
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.candidates import choose
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.candidates import evaluate_candidates
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import CATALOG
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import DRIVER_RESERVE_ESTIMATE_MIB
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import GPUS
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import MIN_CUDA_VERSION
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import NATIVE_FP8_COMPUTE_CAPABILITY
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.costs import AVERAGE_CONTEXT_FRACTION
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.costs import DECODE_BANDWIDTH_EFFICIENCY
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.costs import break_even
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.costs import cost_per_million_tokens
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.costs import estimate_tokens_per_second
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.errors import SizingError
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import checkpoint_bytes
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import kv_cache_bytes_per_token
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import memory_breakdown
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import valid_tensor_parallel_sizes
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import weights_bytes
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.model_spec import model_summary
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.precision import resolve_precision
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.request import normalize_request
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import MIB
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import gib
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import round_or_none


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
    """What llmserve.aws.gpu_validate should demand, in its own terms (nvidia-smi memory.total, MiB; CUDA floor)."""
    cuda_needed_mib = required_bytes_per_gpu / utilization / MIB
    driver_reserve = gpu["nvidia_smi_memory_mib"] - gpu["cuda_memory_mib"] if gpu else DRIVER_RESERVE_ESTIMATE_MIB
    min_memory_mib = int(math.ceil(cuda_needed_mib + driver_reserve))
    return {
        "tensor_parallel_size": tensor_parallel_size,
        "min_memory_mib": min_memory_mib,
        "required_memory_gib": round(min_memory_mib * tensor_parallel_size / 1024.0, 2),
        "min_compute_capability": precision["min_compute_capability"],
        "min_cuda_version": MIN_CUDA_VERSION,
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
    names = allowed_names(request)
    results = evaluate_candidates(model, precision, request, names)
    chosen, breakdown = choose(results, request["optimize_for"])
    candidates = [pair[0] for pair in results]
    if chosen is None:
        suggestions = what_would_fit(model, precision, request, results)
        raise SizingError(nothing_fits_message(model, precision, request, results, suggestions),
                          {"candidates": candidates, "model": model_summary(model), "precision": precision,
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
        "weights_gib": round_or_none(gib(weights_bytes(model, precision))),
        "weights_gib_per_gpu": round_or_none(gib(breakdown["weights"])),
        "checkpoint_gib": round_or_none(gib(checkpoint_bytes(model, precision))),
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(model, request["kv_cache_dtype"]),
        "kv_cache_gib_per_token": gib(kv_cache_bytes_per_token(model, request["kv_cache_dtype"])),
        "kv_cache_gib": round_or_none(gib(kv_total)),
        "kv_cache_gib_per_gpu": round_or_none(gib(breakdown["kv_cache"])),
        "overhead_gib_per_gpu": round_or_none(gib(breakdown["overhead"])),
        "required_gib_per_gpu": round_or_none(gib(breakdown["required"])),
        "available_gib_per_gpu": round_or_none(gib(breakdown["budget"])),
        "gpu_memory_gib": round_or_none(gib(breakdown["cuda_total"])),
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
        "cost_per_mtok_usd": round_or_none(cost_per_million_tokens(hourly, tokens_per_second), 4),
        "break_even": break_even(hourly, tokens_per_second, request["api_price_per_mtok"]),
        "gpu_check": gpu_check_requirements(breakdown["required"], request["gpu_memory_utilization"], tp, gpu,
                                            precision),
        "model": model_summary(model),
        "candidates": candidates,
        "notes": notes,
    }
