# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A planning request: defaults, and range checks whose errors name the parameter and the fix."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import CATALOG
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import PRICINGS
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.errors import SizingError
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import KV_CACHE_DTYPES


OPTIMIZE_FOR = ("hourly_cost", "token_cost")

DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_CONCURRENCY = 1
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9


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
