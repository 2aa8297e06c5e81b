# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Instance types for a mixed Spot Fleet: every catalog type with the profile's GPU model and count that holds the
profile, weighted by capacity and ranked by cost per million tokens at the profile's concurrency.

Private to this collection; pure (no AWS). Built on the package's catalog, request and candidate evaluation, so the
catalog and the memory arithmetic stay in one place.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils._sizing.candidates import evaluate_instance
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import CATALOG
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.errors import SizingError
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.precision import resolve_precision
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.request import normalize_request

# A fleet prices its pools at Spot by default: that is what most of its capacity pays.
DEFAULT_PRICING = "spot"


def fleet_instance_types(model, request, reference_type):
    """Ranked pools for a fleet serving `model` as `request` describes, on types like `reference_type`.

    model: a _sizing model (model_from_parameters / parse_hf_config).
    request: _sizing request options (dtype, quantization, max_model_len, concurrency, gpu_memory_utilization,
      tensor_parallel_size, pricing, price_overrides, tokens_per_second); instance_type(s) are not allowed here.
    reference_type: the profile's instance type; its GPU model and GPU count select the candidates, so every
      host of the fleet runs the same vLLM flags (tensor-parallel size, memory budget).
    Returns a list, cheapest per million tokens first, of dicts: instance_type, weighted_capacity (estimated
    tokens/s over the slowest kept type's, rounded, at least 1), tokens_per_second, cost_per_mtok_usd,
    hourly_cost_usd, tensor_parallel_size, reason. Raises SizingError naming the reason when none fits.
    """
    for option in ("instance_type", "instance_types"):
        if request.get(option):
            raise SizingError("%s is not an option here: the fleet's types follow the reference type's GPU "
                              "model and count" % option)
    options = dict(request)
    options.setdefault("pricing", DEFAULT_PRICING)
    options["instance_type"] = reference_type
    options = normalize_request(options)  # names an unknown reference_type and every bad option
    reference = CATALOG[reference_type]
    precision = resolve_precision(model, options["dtype"], options["quantization"])
    kept, rejected = [], []
    for name in sorted(CATALOG):
        instance = CATALOG[name]
        if (instance["gpu"], instance["gpu_count"]) != (reference["gpu"], reference["gpu_count"]):
            continue
        entry, _breakdown = evaluate_instance(model, precision, options, instance)
        if entry["kept"] and entry["hourly_cost_usd"] is not None:
            kept.append(entry)
        else:
            rejected.append("%s: %s" % (name, entry["reason"]))
    if not kept:
        raise SizingError("no instance type with %d x %s holds this profile: %s" % (
            reference["gpu_count"], reference["gpu"], "; ".join(rejected)))
    slowest = min(entry["tokens_per_second"] for entry in kept)
    ranked = sorted(kept, key=lambda e: (e["cost_per_mtok_usd"], e["hourly_cost_usd"], e["instance_type"]))
    return [{
        "instance_type": entry["instance_type"],
        "weighted_capacity": max(1, int(round(entry["tokens_per_second"] / slowest))),
        "tokens_per_second": entry["tokens_per_second"],
        "cost_per_mtok_usd": entry["cost_per_mtok_usd"],
        "hourly_cost_usd": entry["hourly_cost_usd"],
        "tensor_parallel_size": entry["tensor_parallel_size"],
        "reason": entry["reason"],
    } for entry in ranked]
