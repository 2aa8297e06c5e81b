# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizing filters for templates: thin wrappers over module_utils/_sizing/ (documented in model_memory_gib.yml
and plan_instance.yml next to this file)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.aws.plugins.module_utils._sizing.errors import SizingError
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.model_spec import model_from_parameters
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.model_spec import parse_hf_config
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.planner import plan
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.planner import required_memory_gib
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.request import DEFAULT_CONCURRENCY
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.request import DEFAULT_MAX_MODEL_LEN


def _model(value, filter_name):
    """A number is a parameter count in billions; a dict is a loaded config.json."""
    if isinstance(value, bool):
        raise AnsibleFilterError("%s: expected a parameter count in billions or a config.json dict, got a boolean"
                                 % filter_name)
    if isinstance(value, (int, float)):
        return model_from_parameters(float(value))
    if isinstance(value, dict):
        return parse_hf_config(dict(value), source="the config.json given to %s" % filter_name)
    if isinstance(value, str):
        raise AnsibleFilterError("%s: got a string (%r); pass a number of billions of parameters, or the config.json "
                                 "loaded as a dict, e.g. lookup('ansible.builtin.file', path) | from_json"
                                 % (filter_name, value[:80]))
    raise AnsibleFilterError("%s: expected a parameter count in billions or a config.json dict, got %s" % (
        filter_name, type(value).__name__))


def model_memory_gib(value, dtype=None, quantization=None, max_model_len=DEFAULT_MAX_MODEL_LEN,
                     concurrency=DEFAULT_CONCURRENCY, tensor_parallel_size=1, kv_cache_dtype="auto",
                     instance_type=None):
    """GiB one GPU needs for this profile: weights share + KV cache share + overhead."""
    request = dict(dtype=dtype, quantization=quantization, max_model_len=max_model_len, concurrency=concurrency,
                   kv_cache_dtype=kv_cache_dtype)
    try:
        model = _model(value, "model_memory_gib")
        return round(required_memory_gib(model, request, int(tensor_parallel_size), instance_type), 2)
    except SizingError as error:
        raise AnsibleFilterError("model_memory_gib: %s" % error.message) from error


def plan_instance(value, **options):
    """The model_plan module's result as a filter: the cheapest instance that fits, its TP size, flags, costs."""
    try:
        return plan(_model(value, "plan_instance"), options)
    except SizingError as error:
        raise AnsibleFilterError("plan_instance: %s" % error.message) from error


class FilterModule(object):
    def filters(self):
        return {
            "model_memory_gib": model_memory_gib,
            "plan_instance": plan_instance,
        }
