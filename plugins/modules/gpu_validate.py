#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_validate
short_description: Check a host's NVIDIA GPUs against what a vLLM model needs, before vLLM starts
version_added: 0.1.0
description:
  - Reads the host's GPUs with C(nvidia-smi) (the C(--query-gpu) CSV, the banner's CUDA version, C(nvidia-smi -L)
    and, for more than one GPU, C(nvidia-smi topo -m)) and checks them against the model's needs.
  - Fails, naming each failed check, what the host has against what is needed, and the fix, when
    C(nvidia-smi) is missing or cannot reach the driver (for example C(Driver/library version mismatch) or
    C(couldn't communicate with the NVIDIA driver)), when the number of visible GPUs differs from
    O(tensor_parallel_size) x O(pipeline_parallel_size), when the driver's CUDA version is below
    O(min_cuda_version), when GPU memory or compute capability is too small, on mixed GPU models, on
    uncorrected ECC errors, and when MIG is on while the model spans several GPUs.
  - A GPU-count mismatch makes vLLM crash or hang in NCCL for up to 30 minutes; this module stops the run first.
  - Read-only. It never changes the host, so it runs the same in check mode and always reports C(changed=false).
  - On failure it still returns RV(checks), RV(gpus) and the other facts it could read.
author:
  - llmserve.aws maintainers (@llmserve)
options:
  tensor_parallel_size:
    description:
      - vLLM's C(--tensor-parallel-size).
    type: int
    default: 1
  pipeline_parallel_size:
    description:
      - vLLM's C(--pipeline-parallel-size). The visible GPU count must equal
        O(tensor_parallel_size) x O(pipeline_parallel_size).
    type: int
    default: 1
  min_cuda_version:
    description:
      - Lowest CUDA version the driver must support, as shown by C(nvidia-smi) (C(CUDA Version)).
      - The vLLM build the collection installs needs a driver for CUDA 12.4 or newer (the 12.1 floor often quoted
        is stale); M(llmserve.aws.model_plan) returns the same floor in RV(llmserve.aws.model_plan#module:gpu_check),
        and the role C(llmserve.aws.gpu_check) defaults to it.
    type: str
    default: "12.4"
  min_memory_mib:
    description:
      - Memory each visible GPU must have, in MiB (C(memory.total) as nvidia-smi reports it).
      - Not checked when omitted.
    type: int
  required_memory_gib:
    description:
      - Memory the model needs in total across the visible GPUs, in GiB, as computed by the model planner.
      - Not checked when omitted.
    type: float
  min_compute_capability:
    description:
      - Lowest CUDA compute capability every visible GPU must have, like C(8.0).
      - FP8 needs C(8.9) (L4, L40S, H100, H200); AWQ/GPTQ Marlin kernels need C(8.0) (A10G, A100 and newer).
      - Not checked when omitted.
    type: str
  allow_mixed_models:
    description:
      - Accept visible GPUs of different models.
    type: bool
    default: false
  require_nvlink:
    description:
      - Fail when a pair of visible GPUs is not connected by NVLink. Without it NVLink is only reported.
    type: bool
    default: false
  cuda_visible_devices:
    description:
      - The C(CUDA_VISIBLE_DEVICES) vLLM will run with, as CUDA reads it, a comma-separated list of GPU
        indices, GPU UUIDs (or unique UUID prefixes) or MIG device UUIDs. CUDA stops at the first entry that
        names no GPU; an empty string hides every GPU.
      - Indices are matched to C(nvidia-smi)'s, which equal CUDA's with C(CUDA_DEVICE_ORDER=PCI_BUS_ID) or
        identical GPUs.
      - Defaults to the C(CUDA_VISIBLE_DEVICES) environment variable of the task; all GPUs are visible when
        neither is set.
    type: str
  nvidia_smi_path:
    description:
      - Path to C(nvidia-smi). Found on E(PATH) (and the sbin directories) when omitted.
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Only reads; the checks run in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - C(nvidia-smi) ignores C(CUDA_VISIBLE_DEVICES); this module applies it the way CUDA does.
  - ECC counters read C([N/A]) on GPUs with ECC off; such GPUs pass the ECC check.
seealso:
  - name: vLLM distributed serving
    description: How tensor and pipeline parallel sizes map to GPUs.
    link: https://docs.vllm.ai/en/latest/serving/distributed_serving.html
"""

EXAMPLES = r"""
- name: Check a g5.12xlarge for a model split over 4 GPUs
  llmserve.aws.gpu_validate:
    tensor_parallel_size: 4
    min_cuda_version: "12.4"
    required_memory_gib: 70.5
    min_compute_capability: "8.0"

- name: Check one GPU of an 8-GPU host, as the vLLM unit will see it
  llmserve.aws.gpu_validate:
    cuda_visible_devices: "0"
    min_memory_mib: 40000
  register: gpu_preflight

- name: Show what the later roles will use
  ansible.builtin.debug:
    msg: "{{ gpu_preflight.gpu_count }} x {{ gpu_preflight.gpu_model }}, CUDA {{ gpu_preflight.cuda_version }}"
"""

RETURN = r"""
gpus:
  description: The visible GPUs, in CUDA order.
  returned: when nvidia-smi answered
  type: list
  elements: dict
  contains:
    index:
      description: nvidia-smi's index of the GPU.
      type: int
      sample: 0
    uuid:
      description: GPU UUID.
      type: str
      sample: GPU-5b1e1a9e-3c0f-2a7d-91c4-6e2f0d8b7a10
    name:
      description: GPU model.
      type: str
      sample: NVIDIA A10G
    memory_total_mib:
      description: Total memory in MiB.
      type: int
      sample: 23028
    memory_used_mib:
      description: Memory in use in MiB when checked.
      type: int
      sample: 0
    driver_version:
      description: Driver version.
      type: str
      sample: 535.183.01
    compute_capability:
      description: CUDA compute capability.
      type: str
      sample: "8.6"
    persistence_mode:
      description: Whether persistence mode is on; null where the GPU has no such switch.
      type: bool
      sample: false
    mig_mode:
      description: Whether MIG is on; null on GPUs without MIG.
      type: bool
      sample: null
    mig_devices:
      description: MIG devices of this GPU from C(nvidia-smi -L) (profile, device, uuid).
      type: list
      elements: dict
      sample: []
    ecc_errors_uncorrected_volatile:
      description: Uncorrected ECC errors since the driver loaded; null with ECC off.
      type: int
      sample: 0
gpu_count:
  description: Number of visible GPUs.
  returned: when nvidia-smi answered
  type: int
  sample: 4
gpu_count_total:
  description: Number of GPUs on the host, visible or not.
  returned: when nvidia-smi answered
  type: int
  sample: 4
gpu_model:
  description: Model of the visible GPUs; models joined with C( + ) when mixed; null when none is visible.
  returned: when nvidia-smi answered
  type: str
  sample: NVIDIA A10G
driver_version:
  description: NVIDIA driver version.
  returned: when nvidia-smi answered
  type: str
  sample: 550.90.07
cuda_version:
  description: Highest CUDA version the driver supports (the banner's C(CUDA Version)).
  returned: when nvidia-smi answered
  type: str
  sample: "12.4"
total_memory_mib:
  description: Memory of the visible GPUs together, in MiB.
  returned: when nvidia-smi answered
  type: int
  sample: 92112
nvlink:
  description: Whether every pair of visible GPUs is connected by NVLink; null when the topology was not read
    (one GPU, or O(tensor_parallel_size) x O(pipeline_parallel_size) is 1).
  returned: always
  type: bool
  sample: true
nvlink_pairs:
  description: Link between each pair of visible GPUs from C(nvidia-smi topo -m), such as C(NV12), C(PHB), C(SYS).
  returned: always
  type: dict
  sample: {"0-1": "NV18"}
cuda_visible_devices:
  description: The CUDA_VISIBLE_DEVICES value applied; null when all GPUs are visible.
  returned: always
  type: str
  sample: "0,1"
nvidia_smi_path:
  description: The nvidia-smi that was run; null when none was found.
  returned: always
  type: str
  sample: /usr/bin/nvidia-smi
checks:
  description: Every check run, passed or not.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Check name, such as C(gpu_count), C(cuda_version), C(nvidia_driver).
      type: str
      sample: gpu_count
    ok:
      description: Whether it passed.
      type: bool
      sample: false
    message:
      description: The check name, have against need and, on failure, the fix.
      type: str
      sample: "gpu_count: tensor_parallel_size 4 x pipeline_parallel_size 1 = 4 GPUs needed, but 1 visible. ..."
failed_checks:
  description: Names of the failed checks.
  returned: always
  type: list
  elements: str
  sample: [gpu_count]
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmserve.aws.plugins.module_utils import _gpu_checks as gpu_checks
from ansible_collections.llmserve.aws.plugins.module_utils import _nvidia_smi as nvidia_smi
from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import MIN_CUDA_VERSION

ARGUMENT_SPEC = dict(
    tensor_parallel_size=dict(type="int", default=1),
    pipeline_parallel_size=dict(type="int", default=1),
    min_cuda_version=dict(type="str", default=MIN_CUDA_VERSION),
    min_memory_mib=dict(type="int"),
    required_memory_gib=dict(type="float"),
    min_compute_capability=dict(type="str"),
    allow_mixed_models=dict(type="bool", default=False),
    require_nvlink=dict(type="bool", default=False),
    cuda_visible_devices=dict(type="str"),
    nvidia_smi_path=dict(type="path"),
)


# GPU indexes, GPU-/MIG- UUIDs, or empty (no GPU visible); nothing that could be read as another argument.
_VISIBLE_DEVICES = re.compile(r"(-1|[A-Za-z0-9][A-Za-z0-9:/-]*)?(,[A-Za-z0-9][A-Za-z0-9:/-]*)*")


def _argument_errors(params):
    errors = []
    for name in ("tensor_parallel_size", "pipeline_parallel_size"):
        if params[name] < 1:
            errors.append("%s must be 1 or more, got %d" % (name, params[name]))
    for name in ("min_cuda_version", "min_compute_capability"):
        if params[name] is not None:
            try:
                gpu_checks.parse_version(params[name])
            except ValueError as error:
                errors.append("%s: %s" % (name, error))
    for name in ("min_memory_mib", "required_memory_gib"):
        if params[name] is not None and (grammar.finite_number(name, params[name]) or params[name] <= 0):
            errors.append("%s must be a number above 0, got %s" % (name, params[name]))
    if params["nvidia_smi_path"] is not None:
        errors.append(grammar.absolute_path("nvidia_smi_path", params["nvidia_smi_path"]))
    visible = params["cuda_visible_devices"]
    if visible is not None and not _VISIBLE_DEVICES.fullmatch(visible):
        # The grammar admits no control character either.
        errors.append("cuda_visible_devices %r must be a comma-separated list of GPU indexes or UUIDs "
                      "(like 0,1 or GPU-8c3e...,MIG-...)" % (visible,))
    return [error for error in errors if error]


def _find_nvidia_smi(module):
    path = module.params["nvidia_smi_path"]
    if path:
        return (path if os.path.isfile(path) and os.access(path, os.X_OK) else None), path
    searched = "PATH=%s and the sbin directories" % os.environ.get("PATH", "")
    return module.get_bin_path("nvidia-smi"), searched


def _facts(state, nvlink, pairs):
    visible = state["visible_gpus"]
    names = sorted(set(gpu["name"] for gpu in visible))
    return dict(
        gpus=visible,
        gpu_count=len(visible),
        gpu_count_total=len(state["gpus"]),
        gpu_model=" + ".join(names) if names else None,
        driver_version=state["driver_version"],
        cuda_version=state["cuda_version"],
        total_memory_mib=sum(gpu["memory_total_mib"] or 0 for gpu in visible),
        nvlink=nvlink,
        nvlink_pairs=pairs,
    )


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    errors = _argument_errors(params)
    if errors:
        module.fail_json(msg="; ".join(errors))
    cuda_visible_devices = params["cuda_visible_devices"]
    if cuda_visible_devices is None:
        cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    result = dict(changed=False, cuda_visible_devices=cuda_visible_devices, nvlink=None, nvlink_pairs={})

    executable, searched = _find_nvidia_smi(module)
    result["nvidia_smi_path"] = executable
    if executable is None:
        checks = [gpu_checks.missing_binary(searched)]
    else:
        runner = nvidia_smi.NvidiaSmiRunner(module.run_command, executable)
        world_size = params["tensor_parallel_size"] * params["pipeline_parallel_size"]
        try:
            state = nvidia_smi.collect_gpu_state(
                runner, cuda_visible_devices, read_topology=world_size > 1 or params["require_nvlink"])
        except nvidia_smi.NvidiaSmiError as error:
            checks = [gpu_checks.driver_failure(error.kind, error.detail)]
        else:
            options = dict(params, cuda_visible_devices=cuda_visible_devices)
            checks, nvlink, pairs = gpu_checks.evaluate(state, options)
            result.update(_facts(state, nvlink, pairs))

    result["checks"] = checks
    result["failed_checks"] = [entry["name"] for entry in gpu_checks.failed(checks)]
    if result["failed_checks"]:
        module.fail_json(msg=gpu_checks.failure_message(checks), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
