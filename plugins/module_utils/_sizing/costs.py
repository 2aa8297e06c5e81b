# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Throughput and cost arithmetic: the decode roofline, hourly prices, $/1M tokens, break-even against an API."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math


# Decode is memory-bound: each step reads every weight byte on the GPU plus each sequence's KV cache.
# vLLM reaches roughly three quarters of HBM bandwidth in decode (Llama-3-8B fp16 on an A10G decodes at
# about 28 tokens/s single-stream, against a 37 tokens/s roofline), hence 0.75. Prefill is not counted:
# the estimate is generated tokens per second. Measure and pass tokens_per_second for real numbers.
DECODE_BANDWIDTH_EFFICIENCY = 0.75
# Average context a decoding sequence attends to: half of max_model_len.
AVERAGE_CONTEXT_FRACTION = 0.5


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
