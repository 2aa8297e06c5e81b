# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the weights are stored (dtype, quantization) and the vLLM flags for it, from the request and the checkpoint."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils._sizing.errors import SizingError
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.model_spec import DEFAULT_QUANT_GROUP_SIZE


DTYPES = ("float16", "bfloat16", "fp8", "int8", "int4")
QUANTIZATIONS = ("none", "awq", "gptq", "fp8")


def _sixteen_bit(torch_dtype):
    return "bfloat16" if str(torch_dtype) == "bfloat16" else "float16"


def resolve_precision(model, dtype=None, quantization=None):
    """Weight storage and the vLLM flags for it, from dtype/quantization and the checkpoint's own config.

    dtype is how the weights are stored on the GPU; vLLM's --dtype is the activation dtype, derived here.
    """
    if dtype is not None and dtype not in DTYPES:
        raise SizingError("dtype=%s is not one of %s" % (dtype, ", ".join(DTYPES)))
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise SizingError("quantization=%s is not one of %s" % (quantization, ", ".join(QUANTIZATIONS)))
    checkpoint = model.get("quantization_config")
    if checkpoint:
        stored = {"awq": "int4", "fp8": "fp8"}.get(checkpoint["method"]) or ("int%d" % checkpoint["bits"])
        label = "%s %d-bit" % (checkpoint["method"].upper(), checkpoint["bits"])
        if dtype is not None and dtype != stored:
            raise SizingError("dtype=%s contradicts the checkpoint's quantization_config (%s): its weights are "
                              "stored as %s. Fix: leave dtype out or set dtype=%s" % (dtype, label, stored, stored))
        if quantization is not None and quantization != checkpoint["method"]:
            raise SizingError("quantization=%s contradicts the checkpoint's quantization_config (%s). Fix: leave "
                              "quantization out or set quantization=%s" % (quantization, label, checkpoint["method"]))
        dtype, method, bits, group = stored, checkpoint["method"], checkpoint["bits"], checkpoint["group_size"]
        vllm_quantization = checkpoint.get("vllm_method", method)
    else:
        method = quantization
        if method is None:
            method = {"fp8": "fp8", "int4": None, "int8": None}.get(dtype, "none")
        if method is None:
            raise SizingError("dtype=%s needs a quantized checkpoint: set quantization=%s (and point at an %s "
                              "checkpoint), or use dtype=fp8, which vLLM makes from a 16-bit checkpoint at load "
                              "time" % (dtype, "awq or gptq" if dtype == "int4" else "gptq",
                                        "AWQ/GPTQ 4-bit" if dtype == "int4" else "8-bit GPTQ"))
        if method == "none":
            if dtype in ("fp8", "int8", "int4"):
                raise SizingError("dtype=%s with quantization=none: unquantized weights are 16-bit. Fix: set "
                                  "quantization=%s, or dtype=float16/bfloat16" % (
                                      dtype, {"fp8": "fp8", "int8": "gptq", "int4": "awq or gptq"}[dtype]))
            dtype = dtype or _sixteen_bit(model.get("torch_dtype"))
            bits, group = 16, None
        elif method == "fp8":
            if dtype not in (None, "fp8"):
                raise SizingError("quantization=fp8 stores 8-bit float weights, but dtype=%s. Fix: set dtype=fp8 or "
                                  "leave dtype out" % dtype)
            dtype, bits, group = "fp8", 8, None
        elif method == "awq":
            if dtype not in (None, "int4"):
                raise SizingError("quantization=awq stores 4-bit weights, but dtype=%s. Fix: set dtype=int4 or leave "
                                  "dtype out%s" % (dtype, "; for 8-bit weights use quantization=gptq"
                                                   if dtype == "int8" else ""))
            dtype, bits, group = "int4", 4, DEFAULT_QUANT_GROUP_SIZE
        else:  # gptq
            if dtype not in (None, "int4", "int8"):
                raise SizingError("quantization=gptq stores 4- or 8-bit integer weights, but dtype=%s. Fix: set "
                                  "dtype=int4 or dtype=int8, or leave dtype out (int4)" % dtype)
            dtype = dtype or "int4"
            bits, group = (4 if dtype == "int4" else 8), DEFAULT_QUANT_GROUP_SIZE
        vllm_quantization = None if method == "none" else method
    if method == "none":
        bytes_per_param, activation = 2.0, dtype
    elif method == "fp8":
        bytes_per_param, activation = 1.0, _sixteen_bit(model.get("torch_dtype") or "bfloat16")
    else:
        # AWQ/GPTQ kernels run in float16; per group: one fp16 scale and one packed zero point.
        bytes_per_param = bits / 8.0 + (2 + bits / 8.0) / group
        activation = "float16"
    # On-the-fly FP8 reads the 16-bit checkpoint from disk; a quantized checkpoint is stored as planned.
    on_disk_bytes_per_param = 2.0 if (method == "fp8" and not checkpoint) else bytes_per_param
    # bfloat16 needs Ampere (8.0); so do the Marlin kernels vLLM runs AWQ/GPTQ and (weight-only) FP8 with.
    min_cc = "8.0" if (method != "none" or activation == "bfloat16") else "7.0"
    return {
        "dtype": dtype, "quantization": method, "bits": bits, "group_size": group,
        "bytes_per_quantized_param": bytes_per_param, "on_disk_bytes_per_param": on_disk_bytes_per_param,
        "vllm_dtype": activation, "vllm_quantization": vllm_quantization, "activation_bytes": 2,
        "min_compute_capability": min_cc, "from_checkpoint": bool(checkpoint),
    }
