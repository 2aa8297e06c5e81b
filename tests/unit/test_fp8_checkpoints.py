"""405B in FP8: the checkpoint formats people serve are planned and launched with the flag vLLM accepts for them.

The 405B profile says dtype=fp8, quantization=fp8. Meta's own FP8 checkpoint names fbgemm_fp8, llm-compressor's
names compressed-tensors (float8 weights), NVIDIA's names modelopt (quant_algo FP8); vLLM refuses
`--quantization fp8` against any of them, so both the planner and vllm_launch must render the checkpoint's method.
"""

import pytest

from ansible_collections.llmserve.aws.plugins.module_utils import _vllm as vllm

from test_sizing import LLAMA_31_8B
from test_sizing import plan
from test_vllm_validation import params

FP8_FORMATS = [
    ({"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
      "modules_to_not_convert": ["lm_head"]}, "fbgemm_fp8"),
    ({"quant_method": "compressed-tensors", "format": "float-quantized",
      "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
                                    "targets": ["Linear"]}}}, "compressed-tensors"),
    ({"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_quant_algo": None}, "modelopt"),
    ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "fp8"),
]


@pytest.mark.parametrize("quantization_config, flag", FP8_FORMATS)
def test_planner_serves_each_fp8_format_with_its_own_flag(quantization_config, flag):
    result = plan(config=dict(LLAMA_31_8B, quantization_config=quantization_config), instance_type="g6e.xlarge",
                  dtype="fp8", quantization="fp8")
    assert (result["dtype"], result["vllm_flags"]["quantization"]) == ("fp8", flag)


@pytest.mark.parametrize("quantization_config, flag", FP8_FORMATS)
@pytest.mark.parametrize("requested", ["fp8", None])
def test_vllm_launch_accepts_fp8_formats(quantization_config, flag, requested):
    config = dict(LLAMA_31_8B, quantization_config=quantization_config)
    assert vllm.validate_model_config(config, params(quantization=requested)) == []
    if requested:
        assert vllm.effective_quantization(config, requested) == flag
        assert vllm.validate_model_config(config, params(quantization=flag)) == []


@pytest.mark.parametrize("quantization_config, _flag", FP8_FORMATS)
def test_fp8_checkpoints_still_refuse_other_methods(quantization_config, _flag):
    config = dict(LLAMA_31_8B, quantization_config=quantization_config)
    errors = vllm.validate_model_config(config, params(quantization="awq"))
    assert errors and "contradicts the model" in errors[0]


def test_modelopt_fp4_is_not_taken_for_fp8():
    config = dict(LLAMA_31_8B, quantization_config={"quant_method": "modelopt", "quant_algo": "NVFP4"})
    assert vllm.effective_quantization(config, "fp8") == "fp8"
    assert vllm.validate_model_config(config, params(quantization="fp8"))
