# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""When nothing fits: what would (more GPUs, another instance, quantization, FP8 KV cache, a shorter context,
fewer sequences), computed rather than canned."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils._sizing.candidates import allowed_names
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.candidates import cheapest_fit
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import CATALOG
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import GPUS
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import memory_breakdown
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import valid_tensor_parallel_sizes
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.precision import resolve_precision
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import gib


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


def what_would_fit(model, precision, request, results):
    names = allowed_names(request)
    suggestions = {}
    # More GPUs of the largest GPU among the allowed instances.
    biggest = max((CATALOG[name] for name in names), key=lambda item: GPUS[item["gpu"]]["cuda_memory_mib"])
    more = _gpus_needed(model, precision, request, biggest["gpu"])
    if more:
        suggestions["more_gpus"] = more
    # Elsewhere in the catalog, when the request narrowed it.
    if set(names) != set(CATALOG) and not request["tensor_parallel_size"]:
        wider = dict(request, instance_types=None, instance_type=None)
        entry = cheapest_fit(model, precision, wider, list(CATALOG))
        if entry:
            suggestions["other_instance"] = {key: entry[key] for key in (
                "instance_type", "tensor_parallel_size", "hourly_cost_usd", "required_gib_per_gpu")}
    # Quantization: smaller weights, same context and concurrency.
    if not precision["from_checkpoint"]:
        for dtype, method in (("fp8", "fp8"), ("int4", "awq")):
            if precision["bits"] <= {"fp8": 8, "int4": 4}[dtype]:
                continue
            lighter = resolve_precision(model, dtype, method)
            entry = cheapest_fit(model, lighter, request, names)
            if entry:
                suggestions["quantization_" + dtype] = {
                    "dtype": dtype, "quantization": method, "instance_type": entry["instance_type"],
                    "tensor_parallel_size": entry["tensor_parallel_size"], "hourly_cost_usd": entry["hourly_cost_usd"],
                    "required_gib_per_gpu": entry["required_gib_per_gpu"]}
                break
    if request["kv_cache_dtype"] == "auto":
        entry = cheapest_fit(model, precision, dict(request, kv_cache_dtype="fp8"), names)
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


def nothing_fits_message(model, precision, request, results, suggestions):
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
