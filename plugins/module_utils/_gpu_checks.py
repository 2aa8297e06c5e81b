# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure GPU preflight checks: each returns a {name, ok, message} entry.

A failed check's message names the check, what the host has against what the model needs, and the fix.
Nothing here runs commands; the inputs are what _nvidia_smi parsed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.llmserve.aws.plugins.module_utils import _nvidia_smi as nvidia_smi

CHECK_DRIVER = "nvidia_driver"
CHECK_GPU_COUNT = "gpu_count"
CHECK_CUDA_VERSION = "cuda_version"
CHECK_MEMORY_PER_GPU = "memory_per_gpu"
CHECK_TOTAL_MEMORY = "total_memory"
CHECK_COMPUTE_CAPABILITY = "compute_capability"
CHECK_UNIFORM_MODEL = "uniform_gpu_model"
CHECK_ECC = "ecc_errors"
CHECK_MIG = "mig_mode"
CHECK_NVLINK = "nvlink"

# NVIDIA driver branch that first supports a CUDA version (the branch shown next to it in nvidia-smi banners).
DRIVER_BRANCH_FOR_CUDA = (
    ((12, 0), "R525"), ((12, 1), "R530"), ((12, 2), "R535"), ((12, 3), "R545"), ((12, 4), "R550"),
    ((12, 5), "R555"), ((12, 6), "R560"), ((12, 8), "R570"), ((12, 9), "R575"), ((13, 0), "R580"),
)

_DLAMI_HINT = ("or launch the instance from an AWS Deep Learning AMI (DLAMI), e.g. "
               "'Deep Learning Base OSS Nvidia Driver GPU AMI', which ships the driver")

MIB_PER_GIB = 1024


def check(name, ok, message):
    return {"name": name, "ok": bool(ok), "message": "%s: %s" % (name, message)}


def parse_version(text):
    """'12.4' -> (12, 4). Raises ValueError for anything that is not dotted numbers."""
    text = str(text).strip()
    if not re.match(r"^\d+(\.\d+)*$", text):
        raise ValueError("%r is not a version like 12.4" % text)
    return tuple(int(part) for part in text.split("."))


def _gib(mib):
    return "%.1f GiB" % (mib / MIB_PER_GIB)


def _gpu_label(gpu):
    return "GPU %d (%s)" % (gpu["index"], gpu["name"])


def _driver_branch_for(cuda_version):
    wanted = parse_version(cuda_version)[:2]
    for version, branch in DRIVER_BRANCH_FOR_CUDA:
        if version >= wanted:
            return branch
    return "the newest"


def missing_binary(searched):
    return check(CHECK_DRIVER, False,
                 "no NVIDIA driver found: nvidia-smi is not installed (looked in %s). Fix: install the NVIDIA "
                 "data-center driver (R550 or newer for CUDA 12.4, e.g. the nvidia-driver / cuda-drivers "
                 "packages from NVIDIA's CUDA repository) and reboot, %s. On a CPU-only host set "
                 "gpu_check_enabled: false." % (searched, _DLAMI_HINT))


_DRIVER_FIXES = {
    nvidia_smi.ERROR_LIBRARY_MISMATCH:
        "the loaded NVIDIA kernel module and the user-space NVML library are different versions, usually "
        "after a driver upgrade without a reboot. Fix: reboot the instance, or reload the driver "
        "(stop GPU users, then 'rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia && modprobe nvidia').",
    nvidia_smi.ERROR_DRIVER_NOT_LOADED:
        "nvidia-smi couldn't communicate with the NVIDIA driver: the kernel module is not loaded (a kernel "
        "update without a DKMS rebuild, Secure Boot refusing the module, or no GPU attached). Fix: reboot; "
        "if it persists, rebuild the module for the running kernel ('dkms autoinstall', then "
        "'modprobe nvidia') and check that the instance type has a GPU.",
    nvidia_smi.ERROR_NVML_LIBRARY_MISSING:
        "nvidia-smi is present but libnvidia-ml.so (NVML) is not. Fix: reinstall the NVIDIA driver "
        "user-space libraries of the same version as the kernel module, " + _DLAMI_HINT + ".",
    nvidia_smi.ERROR_NO_DEVICES:
        "the driver is loaded but sees no GPU. Fix: check that the instance type has GPUs "
        "(g5/g6/g6e/p4d/p5) and that no GPU is detached; on a CPU-only host set gpu_check_enabled: false.",
    nvidia_smi.ERROR_GPU_LOST:
        "a GPU has fallen off the bus. Fix: stop and start the instance (a reboot keeps the same host; "
        "stop/start moves it to healthy hardware).",
    nvidia_smi.ERROR_PERMISSIONS:
        "nvidia-smi lacks permission to query the GPUs. Fix: run the check with become: true or add the "
        "user to the group that owns /dev/nvidia*.",
    nvidia_smi.ERROR_INVALID_FIELD:
        "this driver is too old to answer the GPU query (compute_cap needs R510 or newer). Fix: upgrade "
        "the NVIDIA driver (R550 or newer for CUDA 12.4), " + _DLAMI_HINT + ".",
    nvidia_smi.ERROR_NVML:
        "NVML failed to initialise. Fix: reboot the instance; inside a container, check that the NVIDIA "
        "container toolkit exposes the devices.",
    nvidia_smi.ERROR_UNPARSEABLE:
        "nvidia-smi answered in a form this module does not understand. Fix: report the output above; "
        "a driver from R525 on is expected.",
    nvidia_smi.ERROR_UNKNOWN:
        "nvidia-smi failed. Fix: run nvidia-smi by hand on the host and reboot if it reports a driver error.",
}


def driver_failure(kind, detail):
    """The driver check when nvidia-smi could not answer; detail is what it printed."""
    return check(CHECK_DRIVER, False, "%s (nvidia-smi said: %s) - %s" % (
        kind.replace("_", " "), " ".join((detail or "").split()), _DRIVER_FIXES.get(kind, _DRIVER_FIXES["unknown"])))


def driver_ok(driver_version, total_gpus):
    return check(CHECK_DRIVER, True, "NVIDIA driver %s answers, %d GPU(s) on the host" % (driver_version, total_gpus))


def check_gpu_count(visible_gpus, total_gpus, tensor_parallel_size, pipeline_parallel_size,
                    cuda_visible_devices=None, ignored_entries=None):
    need = tensor_parallel_size * pipeline_parallel_size
    have = len(visible_gpus)
    where = "%d visible" % have
    if cuda_visible_devices is not None:
        where += " (CUDA_VISIBLE_DEVICES=%r of %d on the host" % (cuda_visible_devices, total_gpus)
        if ignored_entries:
            where += "; CUDA ignores %s and everything after it because it names no GPU or repeats one" % (
                ",".join(ignored_entries))
        where += ")"
    sizes = "tensor_parallel_size %d x pipeline_parallel_size %d = %d GPU%s" % (
        tensor_parallel_size, pipeline_parallel_size, need, "" if need == 1 else "s")
    if have == need:
        return check(CHECK_GPU_COUNT, True, "%s needed, %s" % (sizes, where))
    fixes = []
    if have > 0:
        fixes.append("set tensor_parallel_size x pipeline_parallel_size to %d for this host" % have)
    if total_gpus >= need:
        fixes.append("set CUDA_VISIBLE_DEVICES to exactly %d of the %d GPUs" % (need, total_gpus))
    else:
        fixes.append("pick an instance type with %d GPUs" % need)
    return check(CHECK_GPU_COUNT, False,
                 "%s needed, but %s. vLLM would crash or hang in NCCL (up to 30 minutes) on this mismatch. "
                 "Fix: %s." % (sizes, where, " or ".join(fixes)))


def check_cuda_version(cuda_version, min_cuda_version, driver_version):
    if cuda_version is None:
        return check(CHECK_CUDA_VERSION, False,
                     "the driver (%s) reports no CUDA version, need >= %s. Fix: install the full NVIDIA "
                     "driver (%s or newer), not a display-only or vGPU guest driver." % (
                         driver_version, min_cuda_version, _driver_branch_for(min_cuda_version)))
    if parse_version(cuda_version) >= parse_version(min_cuda_version):
        return check(CHECK_CUDA_VERSION, True, "driver %s supports CUDA %s, need >= %s" % (
            driver_version, cuda_version, min_cuda_version))
    return check(CHECK_CUDA_VERSION, False,
                 "driver %s supports CUDA %s, need >= %s. Fix: upgrade the NVIDIA driver to %s or newer, %s." % (
                     driver_version, cuda_version, min_cuda_version, _driver_branch_for(min_cuda_version),
                     _DLAMI_HINT))


def check_memory_per_gpu(gpus, min_memory_mib):
    short = [gpu for gpu in gpus if gpu["memory_total_mib"] is None or gpu["memory_total_mib"] < min_memory_mib]
    need = "need %s (%d MiB) per GPU" % (_gib(min_memory_mib), min_memory_mib)
    if not short:
        smallest = min((gpu["memory_total_mib"] for gpu in gpus), default=0)
        return check(CHECK_MEMORY_PER_GPU, True, "%s, smallest GPU has %s (%d MiB)" % (need, _gib(smallest), smallest))
    have = ", ".join("%s has %s (%s MiB)" % (
        _gpu_label(gpu), _gib(gpu["memory_total_mib"] or 0), gpu["memory_total_mib"]) for gpu in short)
    return check(CHECK_MEMORY_PER_GPU, False,
                 "%s, but %s. Fix: pick an instance type with larger GPUs, raise tensor_parallel_size to "
                 "spread the model over more GPUs, or serve a smaller or quantized model." % (need, have))


def check_total_memory(gpus, required_memory_gib):
    total_mib = sum(gpu["memory_total_mib"] or 0 for gpu in gpus)
    have_gib = total_mib / MIB_PER_GIB
    message = "need %.1f GiB in total, have %.1f GiB (%d MiB) on %d visible GPU(s)" % (
        required_memory_gib, have_gib, total_mib, len(gpus))
    if have_gib >= required_memory_gib:
        return check(CHECK_TOTAL_MEMORY, True, message)
    return check(CHECK_TOTAL_MEMORY, False,
                 message + ". Fix: pick an instance type with more GPU memory (more or larger GPUs, with a "
                 "matching tensor_parallel_size), shorten max_model_len, or serve a smaller or quantized model.")


def check_compute_capability(gpus, min_compute_capability):
    need = parse_version(min_compute_capability)
    low = [gpu for gpu in gpus
           if gpu["compute_capability"] is None or parse_version(gpu["compute_capability"]) < need]
    if not low:
        found = sorted(set("%s %s" % (gpu["name"], gpu["compute_capability"]) for gpu in gpus))
        return check(CHECK_COMPUTE_CAPABILITY, True, "need >= %s, have %s" % (
            min_compute_capability, ", ".join(found) or "no GPU"))
    have = ", ".join("%s has compute capability %s" % (_gpu_label(gpu), gpu["compute_capability"] or "unknown")
                     for gpu in low)
    return check(CHECK_COMPUTE_CAPABILITY, False,
                 "need >= %s, but %s (FP8 needs 8.9: L4, L40S, H100, H200; AWQ/GPTQ Marlin kernels need 8.0: "
                 "A10G, A100 and newer). Fix: pick an instance type with newer GPUs (g6/g6e for 8.9, p5 for "
                 "9.0) or a quantization this GPU supports." % (min_compute_capability, have))


def check_uniform_model(gpus, allow_mixed_models):
    names = sorted(set(gpu["name"] for gpu in gpus))
    if len(names) <= 1:
        return check(CHECK_UNIFORM_MODEL, True, "all visible GPUs are %s" % (names[0] if names else "absent"))
    listing = ", ".join("%s: GPUs %s" % (name, ",".join(str(gpu["index"]) for gpu in gpus if gpu["name"] == name))
                        for name in names)
    if allow_mixed_models:
        return check(CHECK_UNIFORM_MODEL, True, "mixed GPU models allowed: %s" % listing)
    return check(CHECK_UNIFORM_MODEL, False,
                 "mixed GPU models (%s); tensor parallelism runs at the pace of the slowest and smallest GPU. "
                 "Fix: set CUDA_VISIBLE_DEVICES to GPUs of one model, or set allow_mixed_models: true." % listing)


def check_ecc(gpus):
    bad = [gpu for gpu in gpus if (gpu["ecc_errors_uncorrected_volatile"] or 0) > 0]
    if not bad:
        return check(CHECK_ECC, True, "no uncorrected ECC errors since the driver loaded")
    have = ", ".join("%s (%s) has %d uncorrected ECC error(s)" % (
        _gpu_label(gpu), gpu["uuid"], gpu["ecc_errors_uncorrected_volatile"]) for gpu in bad)
    return check(CHECK_ECC, False,
                 "%s since the driver loaded; need 0. Its memory is not trustworthy. Fix: stop and start the "
                 "instance so it moves to other hardware (a reboot keeps the faulty GPU), or replace the "
                 "instance." % have)


def check_mig(gpus, tensor_parallel_size, pipeline_parallel_size):
    enabled = [gpu for gpu in gpus if gpu["mig_mode"]]
    world_size = tensor_parallel_size * pipeline_parallel_size
    if not enabled:
        return check(CHECK_MIG, True, "MIG is off on every visible GPU")
    listing = ", ".join(_gpu_label(gpu) for gpu in enabled)
    if world_size == 1:
        return check(CHECK_MIG, True, "MIG is on for %s; fine for a single-GPU model" % listing)
    return check(CHECK_MIG, False,
                 "MIG is on for %s while tensor_parallel_size %d x pipeline_parallel_size %d spans %d GPUs; "
                 "NCCL cannot run across MIG instances. Fix: disable MIG ('nvidia-smi -i <index> -mig 0' as "
                 "root, then reset the GPU or reboot) or serve the model on one GPU." % (
                     listing, tensor_parallel_size, pipeline_parallel_size, world_size))


def check_nvlink(nvlink, pairs, topology_error, require_nvlink):
    if nvlink is None:
        reason = topology_error or "fewer than two visible GPUs"
        return check(CHECK_NVLINK, not require_nvlink, "topology not read (%s)%s" % (
            reason, "; NVLink required. Fix: make nvidia-smi topo -m work on this host" if require_nvlink else ""))
    links = ", ".join("%s %s" % (pair, link) for pair, link in sorted(pairs.items()))
    if nvlink:
        return check(CHECK_NVLINK, True, "every GPU pair talks over NVLink (%s)" % links)
    if not require_nvlink:
        return check(CHECK_NVLINK, True, "GPUs talk over PCIe, not NVLink (%s); tensor parallelism works but "
                                         "all-reduce is slower" % links)
    return check(CHECK_NVLINK, False,
                 "NVLink required between every GPU pair, have %s. Fix: pick an NVLink instance type "
                 "(p4d, p5) or set require_nvlink: false." % links)


def evaluate(state, options):
    """Run every check on what collect_gpu_state() gathered.

    options: tensor_parallel_size, pipeline_parallel_size, min_cuda_version, min_memory_mib (or None),
    required_memory_gib (or None), min_compute_capability (or None), allow_mixed_models, require_nvlink,
    cuda_visible_devices (or None). Returns (checks, nvlink, nvlink_pairs).
    """
    visible = state["visible_gpus"]
    tensor_parallel_size = options["tensor_parallel_size"]
    pipeline_parallel_size = options["pipeline_parallel_size"]
    checks = [
        driver_ok(state["driver_version"], len(state["gpus"])),
        check_gpu_count(visible, len(state["gpus"]), tensor_parallel_size, pipeline_parallel_size,
                        options.get("cuda_visible_devices"), state.get("ignored_visible_device_entries")),
        check_cuda_version(state["cuda_version"], options["min_cuda_version"], state["driver_version"]),
    ]
    if options.get("min_memory_mib") is not None:
        checks.append(check_memory_per_gpu(visible, options["min_memory_mib"]))
    if options.get("required_memory_gib") is not None:
        checks.append(check_total_memory(visible, options["required_memory_gib"]))
    if options.get("min_compute_capability") is not None:
        checks.append(check_compute_capability(visible, options["min_compute_capability"]))
    checks.append(check_uniform_model(visible, options.get("allow_mixed_models", False)))
    checks.append(check_ecc(visible))
    checks.append(check_mig(visible, tensor_parallel_size, pipeline_parallel_size))
    nvlink, pairs = None, {}
    if state.get("topology") is not None:
        nvlink, pairs = nvidia_smi.nvlink_summary(state["topology"], [gpu["index"] for gpu in visible])
    if state.get("topology") is not None or state.get("topology_error") or options.get("require_nvlink"):
        checks.append(check_nvlink(nvlink, pairs, state.get("topology_error"), options.get("require_nvlink", False)))
    return checks, nvlink, pairs


def failed(checks):
    return [entry for entry in checks if not entry["ok"]]


def failure_message(checks):
    """One line naming every failed check with its fix; empty when all passed."""
    failures = failed(checks)
    if not failures:
        return ""
    return "GPU preflight failed (%s): %s" % (
        ", ".join(entry["name"] for entry in failures), " | ".join(entry["message"] for entry in failures))
