# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each catalog instance evaluated against a request (kept at its smallest fitting TP, or rejected with the
arithmetic in the reason), and the cheapest among them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import CATALOG
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import GPUS
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.costs import cost_per_million_tokens
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.costs import estimate_tokens_per_second
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.costs import hourly_price
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import CUDA_GRAPHS_GIB
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import describe_breakdown
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import memory_breakdown
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import valid_tensor_parallel_sizes
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import GIB
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import MIB
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import gib
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.units import round_or_none


def evaluate_instance(model, precision, request, instance):
    """One catalog entry: kept (smallest TP that fits) or rejected, with the arithmetic in the reason."""
    gpu = GPUS[instance["gpu"]]
    utilization = request["gpu_memory_utilization"]
    hourly, price_source = hourly_price(instance, request["pricing"], request["price_overrides"])
    entry = {
        "instance_type": instance["instance_type"], "gpu": gpu["name"], "gpu_count": instance["gpu_count"],
        "gpu_memory_gib": round_or_none(gpu["cuda_memory_mib"] / 1024.0), "nvlink": instance["nvlink"],
        "hourly_cost_usd": hourly, "price_source": price_source, "kept": False, "tensor_parallel_size": None,
        "required_gib_per_gpu": None,
        "available_gib_per_gpu": round_or_none(gpu["cuda_memory_mib"] * utilization / 1024.0),
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
    entry["required_gib_per_gpu"] = round_or_none(gib(breakdown["required"]))
    if not breakdown["fits"]:
        entry["reason"] = describe_breakdown(breakdown, utilization)
        if instance["gpu_count"] > 1 and wanted is None:
            entry["reason"] += " (the largest tensor-parallel size this instance allows)"
        return entry, breakdown
    tokens_per_second = request["tokens_per_second"] or estimate_tokens_per_second(breakdown, request, gpu)
    entry["tokens_per_second"] = round(tokens_per_second, 1)
    entry["cost_per_mtok_usd"] = round_or_none(cost_per_million_tokens(hourly, tokens_per_second), 4)
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


def evaluate_candidates(model, precision, request, names):
    results = []
    for name in names:
        entry, breakdown = evaluate_instance(model, precision, request, CATALOG[name])
        results.append((entry, breakdown))
    return results


def choose(results, optimize_for):
    ranked = [pair for pair in results if pair[0]["kept"] and pair[0]["hourly_cost_usd"] is not None]
    if not ranked:
        return None, None
    return min(ranked, key=lambda pair: _rank_key(pair[0], optimize_for))


def allowed_names(request):
    if request["instance_type"]:
        return [request["instance_type"]]
    return list(request["instance_types"] or CATALOG)


def cheapest_fit(model, precision, request, names):
    return choose(evaluate_candidates(model, precision, request, names), request["optimize_for"])[0]
