"""The sizing planner against hand arithmetic, AWS's own instance data, and every placement in the seed's text.

The seed (issue 7): "FP16 ~2 GB per billion parameters, 4-bit ~0.5 GB; 7-8B on g5.xlarge (1x A10G 24 GB); 13B on
g5.2xlarge with AWQ/GPTQ or g5.12xlarge (4x A10G) FP16 with TP 4; 70B on p4d.24xlarge (8x A100 40 GB) FP16 TP 8 or
g5.48xlarge with 4-bit; 405B on p5.48xlarge (8x H100 80 GB)". Each seed test reproduces the placement where the
arithmetic confirms it and says why where it does not; the docstrings carry the numbers.

Hand arithmetic in these tests uses the constants below, written out again on purpose (not imported), so a change
to the planner's model shows up here as a failure to explain.
"""

import functools
import gzip
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".collections"))  # llmserve.aws importable as ansible_collections.* (make collections)

from ansible_collections.llmserve.aws.plugins.module_utils._sizing import catalog  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._sizing import errors  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._sizing import memory  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._sizing import model_spec  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._sizing import planner  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._sizing import precision  # noqa: E402

GIB = 2 ** 30
KIB = 2 ** 10
# vLLM's budget base (CUDA-visible total) per GPU, MiB, as the catalog documents it.
A10G_CUDA_MIB = 22589
A100_40_CUDA_MIB = 40448
H100_CUDA_MIB = 81121
H200_CUDA_MIB = 143165
UTILIZATION = 0.9
G5_FAMILY = ["g5.xlarge", "g5.2xlarge", "g5.4xlarge", "g5.8xlarge", "g5.16xlarge", "g5.12xlarge", "g5.24xlarge",
             "g5.48xlarge"]

# Published config.json files (the fields the planner reads), as on the Hugging Face hub.
LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "rope_theta": 500000.0,
}
LLAMA_2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "max_position_embeddings": 4096, "tie_word_embeddings": False, "torch_dtype": "float16",
}
LLAMA_2_13B_AWQ = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824,
    "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40, "vocab_size": 32000,
    "max_position_embeddings": 4096, "torch_dtype": "float16",
    "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                            "version": "gemm"},
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "max_position_embeddings": 32768, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "sliding_window": 131072, "use_sliding_window": False,
}
MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
    "max_position_embeddings": 32768, "num_local_experts": 8, "num_experts_per_tok": 2, "torch_dtype": "bfloat16",
}


def plan(parameters_b=None, config=None, **request):
    model = model_spec.model_from_parameters(parameters_b) if config is None else model_spec.parse_hf_config(config)
    return planner.plan(model, request)


def nothing_fits(parameters_b=None, config=None, **request):
    with pytest.raises(errors.SizingError) as caught:
        plan(parameters_b, config, **request)
    return caught.value


def candidate(result, instance_type):
    return next(entry for entry in result["candidates"] if entry["instance_type"] == instance_type)


def overhead_gib(intermediate, hidden, vocab, tp, batched_tokens=2048, max_num_seqs=256):
    """1 GiB non-torch (+1.5 GiB NCCL when TP > 1) + activation peak + sampler, as the module docstring states."""
    activation = batched_tokens * (4 * intermediate / tp + 4 * hidden) * 2
    sampler = max_num_seqs * vocab * 4 * 3
    return 1.0 + (1.5 if tp > 1 else 0.0) + (activation + sampler) / GIB


# --- The catalog against AWS's own data -------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def aws_instance_types():
    """EC2 DescribeInstanceTypes as AWS answers it, in the copy moto ships (real data, not a mock)."""
    import moto

    path = Path(moto.__file__).parent / "ec2" / "resources" / "instance_types.json.gz"
    with gzip.open(path, "rt") as handle:
        return json.load(handle)


@pytest.mark.parametrize("instance_type", sorted(catalog.CATALOG))
def test_catalog_hardware_matches_describe_instance_types(instance_type):
    aws = aws_instance_types()[instance_type]
    entry = catalog.CATALOG[instance_type]
    gpu_info = aws["GpuInfo"]["Gpus"][0]
    assert entry["gpu_count"] == gpu_info["Count"]
    assert catalog.GPUS[entry["gpu"]]["aws_memory_mib"] == gpu_info["MemoryInfo"]["SizeInMiB"]
    assert gpu_info["Name"] in catalog.GPUS[entry["gpu"]]["name"]
    assert entry["vcpus"] == aws["VCpuInfo"]["DefaultVCpus"]
    assert entry["memory_gib"] * 1024 == aws["MemoryInfo"]["SizeInMiB"]
    disks = aws["InstanceStorageInfo"]["Disks"][0]
    assert (entry["nvme_disks"], entry["nvme_gb_each"]) == (disks["Count"], disks["SizeInGB"])
    assert aws["InstanceStorageInfo"]["NvmeSupport"] == "required"


def test_catalog_covers_the_families_the_issue_names():
    families = set(entry["family"] for entry in catalog.CATALOG.values())
    assert {"g5", "g6", "g6e", "p4d", "p4de", "p5", "p5e"} <= families
    assert {"g5.xlarge", "g5.2xlarge", "g5.12xlarge", "g5.48xlarge", "p4d.24xlarge", "p5.48xlarge"} <= set(
        catalog.CATALOG)


@pytest.mark.parametrize("gpu_key", sorted(catalog.GPUS))
def test_planner_memory_is_the_smallest_of_aws_nvidia_smi_and_cuda(gpu_key):
    """vLLM's budget starts from CUDA's total, below nvidia-smi's (driver reserve) and at most AWS's figure.

    A10G: AWS 22888 MiB, nvidia-smi 23028 MiB, CUDA 22.06 GiB = 22589 MiB: the planner uses 22589.
    """
    gpu = catalog.GPUS[gpu_key]
    assert gpu["cuda_memory_mib"] < gpu["nvidia_smi_memory_mib"]
    assert gpu["cuda_memory_mib"] < gpu["aws_memory_mib"]
    assert 300 <= gpu["nvidia_smi_memory_mib"] - gpu["cuda_memory_mib"] <= catalog.DRIVER_RESERVE_ESTIMATE_MIB
    assert gpu["cuda_memory_source"]


def test_prices_quoted_estimated_and_assumed_are_told_apart():
    for name, entry in catalog.CATALOG.items():
        prices = entry["prices"]
        if name == "p5e.48xlarge":
            assert prices == {"on_demand": None, "spot": None, "reserved_1yr": None}
            continue
        assert 0 < prices["spot"] < prices["on_demand"]
        assert 0 < prices["reserved_1yr"] < prices["on_demand"]
        assert entry["spot_is_assumption"] is True
    quoted = {"g5.xlarge": 0.634, "g5.12xlarge": 3.573, "g6.xlarge": 0.524, "g6e.xlarge": 1.172,
              "p4d.24xlarge": 13.921}
    for name, price in quoted.items():
        assert catalog.CATALOG[name]["prices"]["reserved_1yr"] == price
        assert catalog.CATALOG[name]["reserved_1yr_is_estimate"] is False
    assert catalog.CATALOG["g5.48xlarge"]["reserved_1yr_is_estimate"] is True
    assert catalog.CATALOG["g5.48xlarge"]["prices"]["reserved_1yr"] == pytest.approx(16.288 * 0.63, abs=1e-4)


# --- Arithmetic ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,published_b", [
    ("Llama-3.2-1B", 1.24), ("Llama-3.2-3B", 3.21), ("Llama-3.1-8B", 8.03), ("Llama-2-13B", 13.0),
    ("Qwen2.5-32B", 32.8), ("Llama-3.1-70B", 70.6), ("Llama-3.1-405B", 405.9),
])
def test_reference_shapes_reproduce_their_published_parameter_counts(name, published_b):
    row = next(row for row in model_spec.REFERENCE_SHAPES if row[0] == name)
    counted = model_spec.count_parameters(*row[2:10])
    assert counted / 1e9 == pytest.approx(published_b, rel=0.01)


def test_config_json_gives_the_published_parameter_count_and_shape():
    llama = model_spec.parse_hf_config(LLAMA_31_8B)
    assert llama["parameters"] == 8030261248  # Meta's card: 8.03B
    assert (llama["head_dim"], llama["num_key_value_heads"], llama["shape_is_estimate"]) == (128, 8, False)
    mixtral = model_spec.parse_hf_config(MIXTRAL_8X7B)
    assert mixtral["parameters"] / 1e9 == pytest.approx(46.7, rel=0.005)  # all eight experts are resident
    assert any("mixture of experts" in note for note in mixtral["notes"])


@pytest.mark.parametrize("config,bytes_per_token", [
    (LLAMA_31_8B, 2 * 32 * 8 * 128 * 2),  # 128 KiB: grouped-query attention, 8 KV heads
    (LLAMA_2_7B, 2 * 32 * 32 * 128 * 2),  # 512 KiB: every head has its own K and V
    (QWEN25_7B, 2 * 28 * 4 * 128 * 2),  # 56 KiB
])
def test_kv_cache_bytes_per_token_is_2_x_layers_x_kv_heads_x_head_dim_x_bytes(config, bytes_per_token):
    model = model_spec.parse_hf_config(config)
    assert memory.kv_cache_bytes_per_token(model) == bytes_per_token
    assert memory.kv_cache_bytes_per_token(model, "fp8") == bytes_per_token // 2


def test_kv_heads_are_replicated_when_tensor_parallel_exceeds_them():
    """Qwen2.5-7B has 4 KV heads: at TP 2 each GPU keeps 2, at TP 4 one; never less than one."""
    model = model_spec.parse_hf_config(QWEN25_7B)
    per_token = 2 * 28 * 128 * 2
    assert memory.kv_cache_bytes_per_token(model, tensor_parallel_size=2) == per_token * 2
    assert memory.kv_cache_bytes_per_token(model, tensor_parallel_size=4) == per_token * 1
    assert memory.kv_cache_bytes_per_token(model, tensor_parallel_size=8) == per_token * 1


def test_tensor_parallel_sizes_must_divide_the_heads_and_be_powers_of_two():
    """28 attention heads: TP 8 does not divide them, so an 8-GPU instance can only run TP 1, 2 or 4."""
    assert memory.valid_tensor_parallel_sizes(model_spec.parse_hf_config(QWEN25_7B), 8) == [1, 2, 4]
    assert memory.valid_tensor_parallel_sizes(model_spec.parse_hf_config(LLAMA_31_8B), 8) == [1, 2, 4, 8]
    assert memory.valid_tensor_parallel_sizes(model_spec.parse_hf_config(LLAMA_31_8B), 4) == [1, 2, 4]
    result = plan(config=QWEN25_7B, dtype="bfloat16", instance_type="g5.48xlarge", tensor_parallel_size=4)
    assert result["tensor_parallel_size"] == 4
    error = nothing_fits(config=QWEN25_7B, instance_type="g5.48xlarge", tensor_parallel_size=8)
    assert "does not divide the model's 28 attention heads" in error.message


def test_rule_of_thumb_fp16_two_gb_per_billion_holds_exactly():
    """FP16/BF16: 2 bytes a parameter, so 2 GB (not GiB) per billion: 70B -> 140 GB = 130.39 GiB."""
    for parameters_b in (7, 13, 70, 405):
        model = model_spec.model_from_parameters(parameters_b)
        weights = memory.weights_bytes(model, precision.resolve_precision(model, "float16"))
        assert weights / 1e9 == pytest.approx(2.0 * parameters_b, rel=1e-9)
    assert plan(70, dtype="float16", instance_type="p4d.24xlarge")["weights_gib"] == pytest.approx(130.39, abs=0.01)


def test_rule_of_thumb_four_bit_half_a_gb_per_billion_only_holds_for_large_models():
    """4-bit is 0.5 B/param plus a fp16 scale and packed zero per 128 weights (+0.0195 B), and vLLM keeps the
    embedding and LM head in 16-bit. 70B: (70 - 2.10) x 0.5195 + 2.10 x 2 = 39.5 GB, 0.56 GB per billion (rule of
    thumb off by 13 %). 8B: (8.03 - 1.05) x 0.5195 + 1.05 x 2 = 5.73 GB, 0.71 GB per billion (off by 43 %): the
    128K-token vocabulary is an eighth of a small model."""
    per_param = 0.5 + 2.5 / 128
    seventy = model_spec.model_from_parameters(70)
    awq = precision.resolve_precision(seventy, quantization="awq")
    embed70 = 2 * 128256 * 8192
    assert awq["bytes_per_quantized_param"] == pytest.approx(per_param)
    expected70 = (70e9 - embed70) * per_param + embed70 * 2
    assert memory.weights_bytes(seventy, awq) == pytest.approx(expected70)
    assert expected70 / 1e9 / 70 == pytest.approx(0.564, abs=0.001)
    llama8 = model_spec.parse_hf_config(LLAMA_31_8B)
    weights8 = memory.weights_bytes(llama8, precision.resolve_precision(llama8, "int4", "awq"))
    assert weights8 / 1e9 == pytest.approx(5.73, abs=0.01)
    assert weights8 / 1e9 / 8.03 > 0.7


# --- The seed's placements -----------------------------------------------------------------------------------------

def test_seed_7_8b_fp16_fits_one_a10g_at_light_load():
    """Seed: 7-8B on g5.xlarge (1x A10G 24 GB). Confirmed for a light load.

    8B FP16 weights 8e9 x 2 B = 14.90 GiB; KV 2 x 32 x 8 x 128 x 2 B = 128 KiB/token, 4096 tokens = 0.50 GiB;
    overhead 1 GiB + activations (2048 tokens x (4 x 14336 + 4 x 4096) x 2 B = 0.28 GiB) + sampler
    (256 x 128256 x 4 B x 3 = 0.37 GiB) = 1.65 GiB. Total 17.05 GiB of 22.06 x 0.9 = 19.85 GiB: fits, with 3.30 GiB
    of KV room = 27068 tokens: 6 sequences of 4096, or 3 of 8192.
    """
    result = plan(8, dtype="float16", instance_types=G5_FAMILY)
    weights = 8e9 * 2 / GIB
    kv = 131072 * 4096 / GIB
    overhead = overhead_gib(14336, 4096, 128256, 1)
    budget = A10G_CUDA_MIB / 1024 * UTILIZATION
    assert (result["instance_type"], result["tensor_parallel_size"]) == ("g5.xlarge", 1)
    assert result["weights_gib"] == pytest.approx(weights, abs=0.005)
    assert result["kv_cache_gib"] == pytest.approx(kv, abs=0.005)
    assert result["overhead_gib_per_gpu"] == pytest.approx(overhead, abs=0.005)
    assert result["required_gib_per_gpu"] == pytest.approx(weights + kv + overhead, abs=0.01)
    assert result["available_gib_per_gpu"] == pytest.approx(budget, abs=0.005)
    room_tokens = (budget - weights - overhead) * GIB / 131072
    assert result["max_concurrency_at_max_model_len"] == int(room_tokens) // 4096
    assert result["vllm_args"] == ["--tensor-parallel-size", "1", "--max-model-len", "4096",
                                   "--gpu-memory-utilization", "0.9", "--dtype", "float16"]
    assert result["hourly_cost_usd"] == 1.006


def test_seed_8b_fp16_with_8k_context_and_16_sequences_does_not_fit_an_a10g():
    """Seed's 7-8B on g5.xlarge does NOT hold at 8192 tokens x 16 sequences: that KV cache alone is
    131072 tokens x 128 KiB = 16 GiB, next to 14.90 GiB of weights on a 19.85 GiB budget. The failure says what
    would fit, computed: 2 A10Gs (g5.12xlarge, TP 2), a single L40S (g6e.xlarge), FP8 weights or KV cache, or
    the context/concurrency the 3.30 GiB of KV room allows (1691 tokens x 16, or 3 x 8192)."""
    error = nothing_fits(8, dtype="float16", max_model_len=8192, concurrency=16, instance_type="g5.xlarge")
    room_tokens = int((A10G_CUDA_MIB / 1024 * UTILIZATION - 8e9 * 2 / GIB - overhead_gib(14336, 4096, 128256, 1))
                      * GIB // 131072)
    assert "g5.xlarge" in error.message and "KV cache 16.00" in error.message
    suggestions = error.details["suggestions"]
    assert suggestions["shorter_context"]["max_model_len"] == room_tokens // 16
    assert suggestions["lower_concurrency"]["concurrency"] == room_tokens // 8192 == 3
    assert suggestions["more_gpus"]["instance_type"] == "g5.12xlarge"
    assert suggestions["more_gpus"]["tensor_parallel_size"] == 2
    assert suggestions["other_instance"]["instance_type"] == "g6e.xlarge"
    assert "max_model_len <= %d at concurrency 16" % (room_tokens // 16) in error.message
    # Doubling concurrency halves the context that fits: the advice is computed, not canned.
    doubled = nothing_fits(8, dtype="float16", max_model_len=8192, concurrency=32, instance_type="g5.xlarge")
    assert doubled.details["suggestions"]["shorter_context"]["max_model_len"] == room_tokens // 32


def test_seed_7b_with_8k_context_depends_on_grouped_query_attention():
    """"7B FP16 on an A10G with 8K context": a GQA 7-8B (8 KV heads, 128 KiB/token) holds 8192 x 5 sequences in the
    5.16 GiB left next to 13.04 GiB of 7B weights. Llama-2-7B (32 KV heads, 512 KiB/token) caps at 4096 positions,
    so vLLM refuses 8K at all; at 4096 its KV room (19.85 - 12.55 weights - 1.32 overhead = 5.98 GiB) is 12.2K
    tokens: 2 sequences, not 5."""
    gqa = plan(7, dtype="float16", max_model_len=8192, concurrency=5, instance_type="g5.xlarge")
    assert gqa["max_concurrency_at_max_model_len"] == 5
    nothing_fits(7, dtype="float16", max_model_len=8192, concurrency=6, instance_type="g5.xlarge")
    error = nothing_fits(config=LLAMA_2_7B, max_model_len=8192, instance_type="g5.xlarge")
    assert "max_position_embeddings 4096" in error.message and "max_model_len <= 4096" in error.message
    mha = plan(config=LLAMA_2_7B, max_model_len=4096, concurrency=2, instance_type="g5.xlarge")
    assert mha["kv_cache_bytes_per_token"] == 512 * KIB
    assert mha["max_concurrency_at_max_model_len"] == 2


def test_seed_13b_awq_fits_g5_2xlarge_but_g5_xlarge_is_the_same_gpu_for_less():
    """Seed: 13B on g5.2xlarge with AWQ/GPTQ. It fits: Llama-2-13B AWQ is 12.69B linear params x 0.5195 B +
    0.33B embedding/head params x 2 B = 6.74 GiB. But g5.2xlarge and g5.xlarge have the same single A10G: the
    2xlarge only adds vCPUs and host RAM, which serving a 7 GB checkpoint does not need, so the planner picks
    g5.xlarge ($1.006 vs $1.212). Across the catalog, g6.xlarge (one 24 GB L4, $0.8048) is cheaper still, at half
    the A10G's memory bandwidth."""
    on_seed = plan(config=LLAMA_2_13B_AWQ, instance_type="g5.2xlarge")
    assert on_seed["weights_gib"] == pytest.approx(
        ((13015864320 - 2 * 32000 * 5120) * (0.5 + 2.5 / 128) + 2 * 32000 * 5120 * 2) / GIB, abs=0.005)
    assert on_seed["vllm_flags"]["quantization"] == "awq" and on_seed["vllm_flags"]["dtype"] == "float16"
    g5 = plan(config=LLAMA_2_13B_AWQ, instance_types=G5_FAMILY)
    assert g5["instance_type"] == "g5.xlarge"
    assert candidate(g5, "g5.2xlarge")["kept"] is True
    assert plan(config=LLAMA_2_13B_AWQ)["instance_type"] == "g6.xlarge"
    gptq = plan(13, quantization="gptq", instance_types=G5_FAMILY)
    assert (gptq["instance_type"], gptq["dtype"]) == ("g5.xlarge", "int4")


def test_seed_13b_fp16_on_g5_12xlarge_at_tp_4():
    """Seed: 13B FP16 on g5.12xlarge with TP 4. Confirmed within g5 for 8 sequences of 4096: 24.21 GiB of
    weights fit no single A10G; at TP 4 each GPU holds 6.05 GiB of weights + 6.25 GiB of KV (800 KiB/token, no
    GQA, / 4) + 2.72 GiB overhead = 15.03 of 19.85 GiB. TP 2 would need 12.5 GiB of KV per GPU and fails, so 4.
    At one sequence TP 2 already fits (the planner takes the smallest TP). Across the catalog one L40S
    (g6e.xlarge, 44 GiB, $1.861) holds 13B FP16 for a single sequence at a third of g5.12xlarge's $5.672."""
    result = plan(13, dtype="float16", concurrency=8, instance_types=G5_FAMILY)
    assert (result["instance_type"], result["tensor_parallel_size"]) == ("g5.12xlarge", 4)
    expected = 13e9 * 2 / GIB / 4 + 819200 * 4096 * 8 / GIB / 4 + overhead_gib(13824, 5120, 32000, 4)
    assert result["required_gib_per_gpu"] == pytest.approx(expected, abs=0.01)
    assert candidate(result, "g5.xlarge")["reason"].startswith("needs ")
    light = plan(13, dtype="float16", instance_types=G5_FAMILY)
    assert (light["instance_type"], light["tensor_parallel_size"]) == ("g5.12xlarge", 2)
    assert any("2 of g5.12xlarge's 4 GPUs are used" in note for note in light["notes"])
    anywhere = plan(13, dtype="float16")
    assert (anywhere["instance_type"], anywhere["tensor_parallel_size"]) == ("g6e.xlarge", 1)


def test_seed_70b_fp16_on_p4d_at_tp_8():
    """Seed: 70B FP16 on p4d.24xlarge (8x A100 40 GB) at TP 8. Confirmed, and it is the cheapest in the whole
    catalog at 8192 x 16: 130.39 GiB of weights / 8 = 16.30 GiB + KV 40 GiB / 8 = 5 GiB (8 KV heads, one per GPU)
    + 3.05 GiB = 24.34 of 35.55 GiB. TP 4 (32.6 GiB of weights per GPU) does not fit a 40 GB A100. 8x A10G
    (g5.48xlarge) falls short at 19.85 GiB; 8x L40S (g6e.48xlarge, $30.13) and p4de/p5 fit but cost more."""
    result = plan(70, dtype="float16", max_model_len=8192, concurrency=16)
    assert (result["instance_type"], result["tensor_parallel_size"]) == ("p4d.24xlarge", 8)
    expected = 70e9 * 2 / GIB / 8 + 327680 * 8192 * 16 / GIB / 8 + overhead_gib(28672, 8192, 128256, 8)
    assert result["required_gib_per_gpu"] == pytest.approx(expected, abs=0.01)
    assert result["available_gib_per_gpu"] == pytest.approx(A100_40_CUDA_MIB / 1024 * UTILIZATION, abs=0.005)
    assert candidate(result, "g5.48xlarge")["kept"] is False
    assert candidate(result, "g6e.48xlarge")["kept"] is True
    assert nothing_fits(70, dtype="float16", instance_type="p4d.24xlarge", tensor_parallel_size=4)
    assert result["gpu_check"]["min_memory_mib"] <= catalog.GPUS["A100-40GB"]["nvidia_smi_memory_mib"]


def test_seed_70b_4bit_on_g5_48xlarge_only_when_the_kv_cache_needs_eight_gpus():
    """Seed: 70B on g5.48xlarge with 4-bit. AWQ weights are 36.77 GiB. At 8192 x 16 the KV cache is 40 GiB: on
    g5.12xlarge (4x A10G) each GPU would hold 9.19 + 10 + 3.10 GiB > 19.85, so within g5 it takes g5.48xlarge
    (TP 8: 4.60 + 5 + 3.05 = 12.64 GiB) - confirmed. At 4096 x 4 (5 GiB of KV) g5.12xlarge suffices for a third of
    the price. Across the catalog, 4x L40S (g6e.12xlarge, $10.49) beats g5.48xlarge ($16.29) at 8192 x 16."""
    heavy = plan(70, quantization="awq", max_model_len=8192, concurrency=16, instance_types=G5_FAMILY)
    assert (heavy["instance_type"], heavy["tensor_parallel_size"], heavy["dtype"]) == ("g5.48xlarge", 8, "int4")
    assert heavy["weights_gib"] == pytest.approx(
        ((70e9 - 2 * 128256 * 8192) * (0.5 + 2.5 / 128) + 2 * 128256 * 8192 * 2) / GIB, abs=0.005)
    assert candidate(heavy, "g5.12xlarge")["kept"] is False
    assert "KV cache 10.00" in candidate(heavy, "g5.12xlarge")["reason"]
    light = plan(70, quantization="awq", max_model_len=4096, concurrency=4, instance_types=G5_FAMILY)
    assert (light["instance_type"], light["tensor_parallel_size"]) == ("g5.12xlarge", 4)
    assert plan(70, quantization="awq", max_model_len=8192, concurrency=16)["instance_type"] == "g6e.12xlarge"


def test_seed_405b_on_p5_needs_fp8():
    """Seed: 405B on p5.48xlarge (8x H100 80 GB). NOT in FP16/BF16: 405e9 x 2 B = 754 GiB, 94.3 GiB per GPU at
    TP 8 against 79.22 x 0.9 = 71.3 GiB. The failure says what would: FP8 on the same p5 (how Meta ships
    Llama-3.1-405B-Instruct-FP8), 16 H100s over 2 nodes, or 8x H200 (p5en.48xlarge). Weights alone exceed the
    budget, so it also says a shorter context cannot help."""
    error = nothing_fits(405, dtype="bfloat16", instance_type="p5.48xlarge")
    suggestions = error.details["suggestions"]
    assert suggestions["quantization_fp8"]["instance_type"] == "p5.48xlarge"
    assert suggestions["more_gpus"] == {"gpus": 16, "gpu": "NVIDIA H100 80GB HBM3", "tensor_parallel_size": 8,
                                        "pipeline_parallel_size": 2, "nodes": 2, "instance_type": "p5.48xlarge"}
    assert suggestions["other_instance"]["instance_type"] == "p5en.48xlarge"
    assert "shorter context or fewer sequences cannot help" in error.message
    assert "94.30" in error.message and "71.30" in error.message
    fp8 = plan(405, dtype="fp8", max_model_len=8192, concurrency=16, instance_type="p5.48xlarge")
    assert (fp8["tensor_parallel_size"], fp8["vllm_flags"]["quantization"]) == (8, "fp8")
    embed = 2 * 128256 * 16384
    weights = ((405e9 - embed) * 1 + embed * 2) / GIB
    overhead = overhead_gib(53248, 16384, 128256, 8, batched_tokens=8192, max_num_seqs=1024)
    assert fp8["required_gib_per_gpu"] == pytest.approx(weights / 8 + 516096 * 8192 * 16 / GIB / 8 + overhead,
                                                        abs=0.01)
    assert fp8["required_gib_per_gpu"] < H100_CUDA_MIB / 1024 * UTILIZATION


def test_405b_bf16_fits_one_h200_node():
    """8x H200 (139.81 GiB CUDA-visible each) hold 405B in BF16: 94.30 weights + 0.25 KV + 5.37 overhead = 99.92 GiB
    per GPU of 125.83. p5e and p5en both fit; p5e has no us-east-1 on-demand price, so p5en is chosen unless
    price_overrides prices p5e."""
    result = plan(405, dtype="bfloat16")
    assert (result["instance_type"], result["tensor_parallel_size"]) == ("p5en.48xlarge", 8)
    assert result["available_gib_per_gpu"] == pytest.approx(H200_CUDA_MIB / 1024 * UTILIZATION, abs=0.005)
    unpriced = candidate(result, "p5e.48xlarge")
    assert unpriced["kept"] is True and "no on_demand price" in unpriced["reason"]
    priced = plan(405, dtype="bfloat16", price_overrides={"p5e.48xlarge": 60.0})
    assert (priced["instance_type"], priced["price_source"]) == ("p5e.48xlarge", "price_overrides")


# --- Cost ---------------------------------------------------------------------------------------------------------

def test_seed_break_even_remark_against_an_api_price():
    """Seed: self-hosting pays off above ~1M tokens/day sustained. One g5.xlarge costs 24 x $1.006 = $24.14 a day
    whatever it serves, so 1M tokens/day beats the API only when the API charges over $24.14 per 1M tokens. Against
    a small-model API at $0.20 the break-even is 120.7M tokens/day, more than the ~18M a day one A10G generates at
    8 sequences: it never pays off. Against $30 per 1M tokens the break-even is 804,800 tokens/day."""
    cheap_api = plan(8, dtype="float16", instance_type="g5.xlarge", max_model_len=2048, concurrency=8,
                     api_price_per_mtok=0.2)["break_even"]
    assert cheap_api["self_hosted_cost_per_day_usd"] == pytest.approx(24.14)
    assert cheap_api["break_even_tokens_per_day"] == math.ceil(1.006 * 24 / 0.2 * 1e6)
    assert cheap_api["self_hosting_can_win"] is False
    assert cheap_api["cheaper_than_api_at_1m_tokens_per_day"] is False
    dear_api = plan(8, dtype="float16", instance_type="g5.xlarge", api_price_per_mtok=30)["break_even"]
    assert dear_api["break_even_tokens_per_day"] == math.ceil(1.006 * 24 / 30 * 1e6) == 804800
    assert dear_api["cheaper_than_api_at_1m_tokens_per_day"] is True


def test_cost_per_million_tokens_follows_the_throughput_given():
    """$/1M tokens = hourly / (tokens/s x 3600) x 1e6: p4d at 1000 tokens/s is 21.957642 / 3.6 = $6.0993."""
    result = plan(70, dtype="float16", instance_type="p4d.24xlarge", tokens_per_second=1000)
    assert result["tokens_per_second_source"] == "given"
    assert result["cost_per_mtok_usd"] == pytest.approx(21.957642 / 3.6, abs=1e-4)


def test_throughput_estimate_is_the_decode_bandwidth_roofline():
    """One decode step on an A10G reads 14.90 GiB of weights + 1 sequence x 2048 tokens x 128 KiB; at 600 GB/s x
    0.75 that is 27.7 tokens/s (vLLM users report about 28 for Llama-3-8B FP16 on an A10G)."""
    result = plan(8, dtype="float16", instance_type="g5.xlarge")
    step_bytes = 8e9 * 2 + 2048 * 131072
    assert result["tokens_per_second"] == pytest.approx(600e9 * 0.75 / step_bytes, abs=0.1)


def test_token_cost_can_prefer_a_pricier_faster_gpu():
    """By $/hour an 8B FP16 goes to g6.xlarge (L4, $0.80, 300 GB/s); by $/1M tokens to g5.xlarge (A10G, $1.006,
    600 GB/s): twice the tokens for 25 % more money."""
    assert plan(8, dtype="float16")["instance_type"] == "g6.xlarge"
    by_tokens = plan(8, dtype="float16", optimize_for="token_cost")
    assert by_tokens["instance_type"] == "g5.xlarge"
    assert "by estimated $/1M tokens" in candidate(by_tokens, "g5.xlarge")["reason"]


def test_spot_and_reserved_prices_say_where_they_come_from():
    spot = plan(8, dtype="float16", instance_type="g5.xlarge", pricing="spot")
    assert (spot["hourly_cost_usd"], spot["price_source"]) == (0.636, "assumption")
    reserved = plan(8, dtype="float16", instance_type="g5.xlarge", pricing="reserved_1yr")
    assert (reserved["hourly_cost_usd"], reserved["price_source"]) == (0.634, "catalog")
    estimated = plan(8, dtype="float16", instance_type="g5.2xlarge", pricing="reserved_1yr")
    assert estimated["price_source"] == "estimate"


# --- Memory details -------------------------------------------------------------------------------------------------

def test_cuda_graphs_need_room_outside_the_budget_unless_eager():
    """At gpu_memory_utilization 0.97 an A10G keeps 0.66 GiB outside vLLM's budget, less than CUDA graphs take."""
    error = nothing_fits(8, dtype="float16", gpu_memory_utilization=0.97, instance_type="g5.xlarge")
    assert "CUDA graphs" in error.message and "enforce_eager" in error.message
    eager = plan(8, dtype="float16", gpu_memory_utilization=0.97, enforce_eager=True, instance_type="g5.xlarge")
    assert eager["vllm_args"][-1] == "--enforce-eager"


def test_fp8_kv_cache_halves_the_kv_cache_and_adds_the_flag():
    auto = plan(8, dtype="float16", max_model_len=8192, concurrency=4, instance_type="g6e.xlarge")
    fp8 = plan(8, dtype="float16", max_model_len=8192, concurrency=4, instance_type="g6e.xlarge", kv_cache_dtype="fp8")
    assert fp8["kv_cache_gib"] == pytest.approx(auto["kv_cache_gib"] / 2)
    assert fp8["vllm_flags"]["kv_cache_dtype"] == "fp8"


def test_fp8_on_ampere_is_weight_only():
    result = plan(8, dtype="fp8", instance_type="g5.xlarge")
    assert any("weight-only" in note for note in result["notes"])
    assert not any("weight-only" in note for note in plan(8, dtype="fp8", instance_type="g6e.xlarge")["notes"])


def test_pcie_tensor_parallelism_is_called_out():
    result = plan(13, dtype="float16", concurrency=8, instance_type="g5.12xlarge")
    assert any("PCIe" in note for note in result["notes"])


def test_gpu_check_requirements_are_in_nvidia_smi_terms():
    """gpu_validate compares nvidia-smi's memory.total, so the planner hands it required / utilization plus the
    driver's reserve on that GPU (A10G: 23028 - 22589 = 439 MiB): 17.05 GiB / 0.9 + 439 MiB = 19838 MiB."""
    result = plan(8, dtype="float16", instance_type="g5.xlarge")
    required_bytes = 8e9 * 2 + 131072 * 4096 + overhead_gib(14336, 4096, 128256, 1) * GIB
    need = math.ceil(required_bytes / 0.9 / 2 ** 20 + (23028 - 22589))
    assert result["gpu_check"] == {"tensor_parallel_size": 1, "min_memory_mib": need,
                                   "required_memory_gib": round(need / 1024.0, 2), "min_compute_capability": "7.0",
                                   "min_cuda_version": "12.4"}
    assert need <= 23028  # an A10G passes the check it is planned for


def test_required_memory_gib_helper_matches_the_plan():
    model = model_spec.model_from_parameters(70)
    request = {"dtype": "float16", "max_model_len": 8192, "concurrency": 16}
    result = planner.plan(model, dict(request, instance_type="p4d.24xlarge"))
    assert planner.required_memory_gib(model, request, 8) == pytest.approx(result["required_gib_per_gpu"], abs=0.005)
    qwen = model_spec.parse_hf_config(QWEN25_7B)
    with pytest.raises(errors.SizingError, match="tensor_parallel_size 8 does not divide the model's 28 attention"):
        planner.required_memory_gib(qwen, {}, 8)


# --- Inputs and their errors ----------------------------------------------------------------------------------------

def test_parameters_only_plans_say_the_shape_is_an_estimate():
    result = plan(70, dtype="float16", instance_type="p4d.24xlarge")
    assert result["model"]["shape_is_estimate"] is True
    assert result["model"]["reference_model"] == "Llama-3.1-70B"
    assert any(note.startswith("estimate: Llama-3.1-70B's shape") for note in result["notes"])
    assert model_spec.model_from_parameters(13)["reference_model"] == "Llama-2-13B"
    assert model_spec.model_from_parameters(7)["reference_model"] == "Llama-3.1-8B"
    assert model_spec.model_from_parameters(405)["reference_model"] == "Llama-3.1-405B"


def test_checkpoint_quantization_config_sets_the_precision_and_rejects_contradictions():
    model = model_spec.parse_hf_config(LLAMA_2_13B_AWQ)
    assert precision.resolve_precision(model)["dtype"] == "int4"
    with pytest.raises(errors.SizingError, match="dtype=float16 contradicts the checkpoint's quantization_config"):
        precision.resolve_precision(model, "float16")
    with pytest.raises(errors.SizingError, match="quantization=gptq contradicts"):
        precision.resolve_precision(model, quantization="gptq")


@pytest.mark.parametrize("dtype,quantization,fix", [
    ("int4", None, "set quantization=awq or gptq"),
    ("int8", "none", "set quantization=gptq"),
    ("float16", "awq", "set dtype=int4 or leave dtype out"),
    ("int8", "awq", "for 8-bit weights use quantization=gptq"),
    ("bfloat16", "fp8", "set dtype=fp8"),
])
def test_contradictory_precision_names_the_parameters_and_the_fix(dtype, quantization, fix):
    model = model_spec.model_from_parameters(8)
    with pytest.raises(errors.SizingError) as caught:
        precision.resolve_precision(model, dtype, quantization)
    assert fix in caught.value.message and ("dtype=%s" % dtype) in caught.value.message


def test_default_precision_follows_the_checkpoint():
    assert precision.resolve_precision(model_spec.parse_hf_config(LLAMA_31_8B))["dtype"] == "bfloat16"
    assert precision.resolve_precision(model_spec.parse_hf_config(LLAMA_2_7B))["dtype"] == "float16"
    assert precision.resolve_precision(model_spec.model_from_parameters(8), quantization="fp8")["dtype"] == "fp8"


@pytest.mark.parametrize("request_options,message", [
    ({"max_model_len": 0}, "max_model_len must be at least 1"),
    ({"concurrency": 0}, "concurrency must be at least 1"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization must be above 0 and at most 1"),
    ({"tensor_parallel_size": 3}, "tensor_parallel_size must be a power of two"),
    ({"instance_types": ["g5.xlarge", "m5.large"]}, "instance type(s) m5.large not in the catalog"),
    ({"price_overrides": {"p5e.48xlarge": 0}}, "price_overrides[p5e.48xlarge] must be a positive"),
    ({"pricing": "savings_plan"}, "pricing=savings_plan is not one of"),
    ({"api_price_per_mtok": -1}, "api_price_per_mtok must be a positive number"),
])
def test_bad_requests_name_the_parameter(request_options, message):
    error = nothing_fits(8, **request_options)
    assert message in error.message


@pytest.mark.parametrize("config,message", [
    ({"hidden_size": 4096}, "lacks num_hidden_layers, num_attention_heads, vocab_size"),
    (dict(LLAMA_31_8B, kv_lora_rank=512), "multi-head latent attention"),
    (dict(LLAMA_31_8B, quantization_config={"quant_method": "bitsandbytes"}), "quant_method 'bitsandbytes'"),
    (dict(LLAMA_31_8B, quantization_config={"quant_method": "awq", "bits": 8}), "AWQ with 8-bit"),
])
def test_config_json_errors_say_what_is_missing_or_unsupported(config, message):
    with pytest.raises(errors.SizingError) as caught:
        model_spec.parse_hf_config(config)
    assert message in caught.value.message


def test_multimodal_config_is_sized_from_its_text_config():
    wrapped = {"model_type": "mllama", "text_config": dict(LLAMA_31_8B), "torch_dtype": "bfloat16",
               "quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic"}}
    model = model_spec.parse_hf_config(wrapped)
    assert model["parameters"] == 8030261248
    assert model["quantization_config"]["method"] == "fp8"
    assert any("text_config" in note for note in model["notes"])


def test_compressed_tensors_checkpoints_map_to_their_bits():
    fp8 = {"quant_method": "compressed-tensors",
           "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}}}
    w4 = {"quant_method": "compressed-tensors",
          "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int", "group_size": 128}}}}
    fp8_plan = plan(config=dict(LLAMA_31_8B, quantization_config=fp8), instance_type="g6e.xlarge")
    assert (fp8_plan["dtype"], fp8_plan["vllm_flags"]["quantization"]) == ("fp8", "compressed-tensors")
    w4_plan = plan(config=dict(LLAMA_31_8B, quantization_config=w4), instance_type="g6e.xlarge")
    assert w4_plan["dtype"] == "int4"
