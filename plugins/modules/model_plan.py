#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: model_plan
short_description: Size an LLM for vLLM on EC2 GPUs - memory per GPU, cheapest instance, TP size, flags and cost
version_added: 0.1.0
description:
  - Computes what a model needs on the GPU the way vLLM budgets memory, and places it on the cheapest EC2 GPU
    instance type of a built-in catalog (g5, g6, g6e, p4d, p4de, p5, p5e, p5en) that holds it, with the smallest
    tensor-parallel size that fits there.
  - 'Per GPU: weights / TP + KV cache / TP + overhead (CUDA context, NCCL buffers when TP > 1, activation peak of
    vLLM''s profiling run) must fit in the CUDA-visible GPU memory x O(gpu_memory_utilization); CUDA graphs must fit
    in the rest unless O(enforce_eager).'
  - The KV cache is sized for O(max_model_len) x O(concurrency) tokens, every sequence at full length.
  - Returns the memory arithmetic, the vLLM flags, the hourly cost, an estimated cost per 1M generated tokens, a
    break-even against an API price, and every catalog type considered with why it was kept or rejected.
  - When nothing fits it fails and says what would, computed for this model - more GPUs, quantization, an FP8 KV
    cache, a shorter context or fewer concurrent sequences.
  - With O(instance_type) (and O(tensor_parallel_size)) it checks a given profile instead, and fails naming the
    shortfall when the profile does not fit.
  - Read-only. It never changes anything, so it runs the same in check mode and always reports C(changed=false).
author:
  - llmserve.aws maintainers (@llmserve)
options:
  parameters_b:
    description:
      - Parameter count in billions, when no C(config.json) is at hand.
      - The weights use this count; the KV cache, activations and the share of 16-bit embeddings use the shape of the
        nearest published architecture (Llama 3.2 1B/3B, Llama 3.1 8B, Llama 2 13B, Qwen2.5 32B, Llama 3.1 70B or
        405B), which the result names as an estimate.
      - Exactly one of O(parameters_b) and O(model_config) is required.
    type: float
  model_config:
    description:
      - Path to the model's Hugging Face C(config.json), or to the model directory holding it, on the host the
        module runs on (use C(delegate_to) for a file on the controller).
      - Read for layers, hidden size, attention and KV heads, head dim, intermediate size, vocabulary, maximum
        positions, tied embeddings, C(torch_dtype), mixture-of-experts counts and C(quantization_config).
    type: path
  dtype:
    description:
      - How the weights are stored on the GPU. vLLM's C(--dtype) (the activation dtype) is derived from it.
      - Defaults to the checkpoint's own precision - its C(quantization_config), else C(bfloat16) for a
        C(bfloat16) checkpoint, else C(float16); C(int4) with O(quantization=awq) or O(quantization=gptq); C(fp8)
        with O(quantization=fp8).
      - C(fp8) with a 16-bit checkpoint means vLLM quantizes the weights at load time.
    type: str
    choices: [float16, bfloat16, fp8, int8, int4]
  quantization:
    description:
      - vLLM's C(--quantization). C(awq) is 4-bit; C(gptq) is 4- or 8-bit (O(dtype=int8)); C(fp8) is 8-bit float.
      - Defaults to the checkpoint's C(quantization_config), or to what O(dtype) implies.
    type: str
    choices: [none, awq, gptq, fp8]
  kv_cache_dtype:
    description:
      - vLLM's C(--kv-cache-dtype). C(fp8) halves the KV cache.
    type: str
    choices: [auto, fp8]
    default: auto
  max_model_len:
    description:
      - vLLM's C(--max-model-len), in tokens (prompt plus output).
    type: int
    default: 4096
  concurrency:
    description:
      - Sequences served at once, each planned at O(max_model_len) tokens of KV cache.
    type: int
    default: 1
  gpu_memory_utilization:
    description:
      - vLLM's C(--gpu-memory-utilization), the share of CUDA-visible GPU memory vLLM may use.
    type: float
    default: 0.9
  enforce_eager:
    description:
      - Plan for vLLM's C(--enforce-eager) (no CUDA graphs), which frees the room graphs take outside the budget at
        the cost of decode speed.
    type: bool
    default: false
  instance_types:
    description:
      - Catalog instance types to choose from. All of them when omitted.
    type: list
    elements: str
  instance_type:
    description:
      - Check this instance type only (a profile check). The module fails, naming the shortfall and what would fit,
        when the model does not fit it.
    type: str
  tensor_parallel_size:
    description:
      - Use this tensor-parallel size only (a power of two that divides the attention heads). The smallest that fits
        is chosen when omitted.
    type: int
  pricing:
    description:
      - Which price ranks the candidates and is reported.
      - C(spot) prices are assumptions (spot is a market); C(reserved_1yr) is quoted for some types and estimated
        for the others; the result's RV(price_source) says which.
    type: str
    choices: [on_demand, spot, reserved_1yr]
    default: on_demand
  price_overrides:
    description:
      - USD per instance-hour by instance type, replacing the catalog's price for O(pricing), for example today's
        spot prices from C(describe_spot_price_history) or a negotiated rate.
    type: dict
  optimize_for:
    description:
      - C(hourly_cost) chooses the lowest price per hour; C(token_cost) the lowest estimated price per 1M tokens
        (faster GPUs can win there).
    type: str
    choices: [hourly_cost, token_cost]
    default: hourly_cost
  tokens_per_second:
    description:
      - Generated tokens per second the instance sustains, for the cost per 1M tokens and the break-even.
      - When omitted, estimated from the GPU's memory bandwidth (decode reads every weight and each sequence's KV
        cache once per step, at 75% of the datasheet bandwidth). Measure with vLLM's benchmark and pass it for real
        numbers.
    type: float
  api_price_per_mtok:
    description:
      - An API's price in USD per 1M tokens to compare with; adds RV(break_even).
    type: float
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Only computes; the same result in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Prices are us-east-1 Linux list prices of 2026 with their sources in the collection's module utils
    (C(_sizing/catalog.py)); p5e.48xlarge has no on-demand price there and is only ranked with O(price_overrides).
  - The catalog places one node. Models that need more GPUs than one instance has get a multi-node suggestion
    (pipeline parallelism) in the failure message instead.
seealso:
  - name: vLLM engine arguments
    description: The flags this module returns.
    link: https://docs.vllm.ai/en/latest/configuration/engine_args.html
  - module: llmserve.aws.gpu_validate
    description: Checks a host's GPUs against RV(gpu_check).
"""

EXAMPLES = r"""
- name: Cheapest instance for a 70B model at 8K context and 16 concurrent sequences
  llmserve.aws.model_plan:
    parameters_b: 70
    dtype: float16
    max_model_len: 8192
    concurrency: 16
  register: plan

- name: Check the 405B profile before changing anything (fails when it does not fit)
  llmserve.aws.model_plan:
    parameters_b: 405
    dtype: fp8
    instance_type: p5.48xlarge
    tensor_parallel_size: 8
    max_model_len: 8192
    concurrency: 16

- name: Plan from the synced model's config.json, on spot, against an API at $0.60 per 1M tokens
  llmserve.aws.model_plan:
    model_config: /opt/models/llama-3.1-8b-instruct
    max_model_len: 8192
    concurrency: 8
    instance_types: [g5.xlarge, g6.xlarge, g6e.xlarge, g5.12xlarge]
    pricing: spot
    api_price_per_mtok: 0.6
  delegate_to: localhost

- name: Start vLLM with the planned flags
  ansible.builtin.debug:
    msg: "vllm serve MODEL {{ plan.vllm_args | join(' ') }}"
"""

RETURN = r"""
fits:
  description: Whether a placement was found (always true on success; the module fails otherwise).
  returned: success
  type: bool
  sample: true
instance_type:
  description: The chosen instance type.
  returned: success
  type: str
  sample: p4d.24xlarge
tensor_parallel_size:
  description: vLLM's C(--tensor-parallel-size) on it.
  returned: success
  type: int
  sample: 8
gpu:
  description: The instance's GPU.
  returned: success
  type: str
  sample: NVIDIA A100-SXM4-40GB
gpu_count:
  description: GPUs in the instance.
  returned: success
  type: int
  sample: 8
dtype:
  description: How the weights are stored, as planned.
  returned: success
  type: str
  sample: float16
quantization:
  description: The quantization method, or C(none).
  returned: success
  type: str
  sample: none
weights_gib:
  description: All the weights, in GiB.
  returned: success
  type: float
  sample: 130.39
weights_gib_per_gpu:
  description: One GPU's share of the weights.
  returned: success
  type: float
  sample: 16.3
checkpoint_gib:
  description:
    - Size of the checkpoint on disk, what model_sync copies to the instance store. Equals RV(weights_gib) except
      for O(dtype=fp8) on a 16-bit checkpoint, which vLLM quantizes while loading.
  returned: success
  type: float
  sample: 130.39
kv_cache_bytes_per_token:
  description: KV cache per token for the whole model (2 x layers x KV heads x head dim x bytes).
  returned: success
  type: int
  sample: 327680
kv_cache_gib_per_token:
  description: The same in GiB.
  returned: success
  type: float
  sample: 0.00030517578125
kv_cache_gib:
  description: KV cache for max_model_len x concurrency tokens, whole model.
  returned: success
  type: float
  sample: 40.0
kv_cache_gib_per_gpu:
  description: One GPU's share of it (KV heads replicated when TP exceeds their count).
  returned: success
  type: float
  sample: 5.0
overhead_gib_per_gpu:
  description: Non-torch memory (CUDA context, NCCL buffers) plus the activation peak, per GPU.
  returned: success
  type: float
  sample: 3.05
required_gib_per_gpu:
  description: Weights share + KV cache share + overhead, per GPU.
  returned: success
  type: float
  sample: 24.34
available_gib_per_gpu:
  description: vLLM's budget per GPU, CUDA-visible memory x gpu_memory_utilization.
  returned: success
  type: float
  sample: 35.55
gpu_memory_gib:
  description: CUDA-visible memory of one GPU (what vLLM logs as total_gpu_memory).
  returned: success
  type: float
  sample: 39.5
max_concurrency_at_max_model_len:
  description: Sequences of max_model_len tokens whose KV cache fits on the chosen placement.
  returned: success
  type: int
  sample: 51
max_model_len_at_concurrency:
  description: Longest context per sequence that fits at the requested concurrency.
  returned: success
  type: int
  sample: 26404
vllm_args:
  description: vLLM command-line flags for the placement, in order.
  returned: success
  type: list
  elements: str
  sample: ["--tensor-parallel-size", "8", "--max-model-len", "8192", "--gpu-memory-utilization", "0.9",
           "--dtype", "float16"]
vllm_flags:
  description: The same flags as a dictionary (flag name without dashes, underscores for dashes).
  returned: success
  type: dict
  sample: {"tensor_parallel_size": 8, "max_model_len": 8192, "gpu_memory_utilization": 0.9, "dtype": "float16"}
pricing:
  description: The pricing the cost uses.
  returned: success
  type: str
  sample: on_demand
hourly_cost_usd:
  description: USD per hour for the chosen instance.
  returned: success
  type: float
  sample: 21.957642
price_source:
  description: C(catalog), C(estimate) (reserved price derived from on-demand), C(assumption) (spot) or
    C(price_overrides).
  returned: success
  type: str
  sample: catalog
tokens_per_second:
  description: Generated tokens per second, given or estimated.
  returned: success
  type: float
  sample: 924.5
tokens_per_second_source:
  description: C(given), or how the estimate was made.
  returned: success
  type: str
  sample: "estimate: decode memory-bandwidth roofline x 0.75 at concurrency 16, average context 4096 tokens"
cost_per_mtok_usd:
  description: USD per 1M generated tokens at that throughput.
  returned: success
  type: float
  sample: 6.5976
break_even:
  description: Self-hosting against O(api_price_per_mtok); null without it.
  returned: success
  type: dict
  contains:
    api_price_per_mtok:
      description: The API price compared with.
      type: float
    self_hosted_cost_per_day_usd:
      description: One instance running all day.
      type: float
    break_even_tokens_per_day:
      description: Tokens a day above which self-hosting costs less.
      type: int
    capacity_tokens_per_day:
      description: Tokens a day the instance can generate at RV(tokens_per_second).
      type: int
    self_hosting_can_win:
      description: Whether the break-even is within that capacity.
      type: bool
    cheaper_than_api_at_1m_tokens_per_day:
      description: Whether 1M tokens a day sustained is already past the break-even.
      type: bool
    explanation:
      description: The comparison in words.
      type: str
gpu_check:
  description: What M(llmserve.aws.gpu_validate) should demand of the host, in its own terms.
  returned: success
  type: dict
  contains:
    tensor_parallel_size:
      description: GPUs vLLM will use.
      type: int
    min_memory_mib:
      description: nvidia-smi memory.total each GPU needs.
      type: int
    required_memory_gib:
      description: The same over all the GPUs vLLM will use.
      type: float
    min_compute_capability:
      description: Lowest compute capability the precision needs.
      type: str
    min_cuda_version:
      description: Lowest CUDA version the driver must support for the vLLM build the collection installs.
      type: str
      sample: "12.4"
model:
  description: The model shape the plan used (layers, hidden size, heads, KV heads, head dim, vocabulary...).
  returned: always
  type: dict
  contains:
    parameters_b:
      description: Parameters, in billions.
      type: float
    shape_source:
      description: The config.json read, or which published architecture's shape was assumed.
      type: str
    shape_is_estimate:
      description: True when only O(parameters_b) was given, so the KV cache and activations use an assumed shape.
      type: bool
candidates:
  description:
    - Every instance type considered, each with C(kept), C(reason) (the arithmetic, or why it was chosen),
      C(tensor_parallel_size), C(required_gib_per_gpu), C(available_gib_per_gpu), C(hourly_cost_usd) and, when
      kept, C(tokens_per_second) and C(cost_per_mtok_usd).
    - Also returned when nothing fits.
  returned: always
  type: list
  elements: dict
suggestions:
  description: When nothing fits, what would (C(more_gpus), C(other_instance), C(quantization_fp8),
    C(quantization_int4), C(kv_cache_fp8), C(shorter_context), C(lower_concurrency)), as data.
  returned: failure
  type: dict
notes:
  description: Estimates used, idle GPUs, PCIe tensor parallelism, weight-only FP8 and similar remarks.
  returned: success
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import PRICINGS
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.errors import SizingError
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.memory import KV_CACHE_DTYPES
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.model_spec import model_from_parameters
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.model_spec import parse_hf_config
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.planner import plan
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.precision import DTYPES
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.precision import QUANTIZATIONS
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.request import DEFAULT_CONCURRENCY
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.request import DEFAULT_GPU_MEMORY_UTILIZATION
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.request import DEFAULT_MAX_MODEL_LEN
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.request import OPTIMIZE_FOR

ARGUMENT_SPEC = dict(
    parameters_b=dict(type="float"),
    model_config=dict(type="path"),
    dtype=dict(type="str", choices=list(DTYPES)),
    quantization=dict(type="str", choices=list(QUANTIZATIONS)),
    kv_cache_dtype=dict(type="str", choices=list(KV_CACHE_DTYPES), default="auto"),
    max_model_len=dict(type="int", default=DEFAULT_MAX_MODEL_LEN),
    concurrency=dict(type="int", default=DEFAULT_CONCURRENCY),
    gpu_memory_utilization=dict(type="float", default=DEFAULT_GPU_MEMORY_UTILIZATION),
    enforce_eager=dict(type="bool", default=False),
    instance_types=dict(type="list", elements="str"),
    instance_type=dict(type="str"),
    tensor_parallel_size=dict(type="int"),
    pricing=dict(type="str", choices=list(PRICINGS), default="on_demand"),
    price_overrides=dict(type="dict"),
    optimize_for=dict(type="str", choices=list(OPTIMIZE_FOR), default="hourly_cost"),
    tokens_per_second=dict(type="float", no_log=False),  # a throughput, not a secret
    api_price_per_mtok=dict(type="float"),
)

MODEL_ARGUMENTS = ("parameters_b", "model_config")


def load_model(params):
    """The model spec from parameters_b, or from the config.json that model_config points at."""
    if params["parameters_b"] is not None:
        return model_from_parameters(params["parameters_b"])
    path = params["model_config"]
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (IOError, OSError) as error:
        raise SizingError("model_config: cannot read %s (%s). Fix: point model_config at the model's "
                          "config.json or its directory" % (path, error)) from error
    except ValueError as error:
        raise SizingError("model_config: %s is not valid JSON (%s)" % (path, error)) from error
    return parse_hf_config(config, source=path)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, mutually_exclusive=[MODEL_ARGUMENTS],
                           required_one_of=[MODEL_ARGUMENTS], supports_check_mode=True)
    request = dict((key, value) for key, value in module.params.items() if key not in MODEL_ARGUMENTS)
    try:
        model = load_model(module.params)
        result = plan(model, request)
    except SizingError as error:
        module.fail_json(msg=error.message, changed=False, fits=False, **error.details)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
