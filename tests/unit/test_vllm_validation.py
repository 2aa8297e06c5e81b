"""_vllm.py: the checks vllm_launch makes before it writes anything."""

import pytest

from ansible_collections.llmserve.aws.plugins.module_utils import _vllm as vllm

LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"], "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 8192, "rope_scaling": None,
}
LLAMA_8B_AWQ = dict(LLAMA_8B, quantization_config={"quant_method": "awq", "bits": 4, "group_size": 128})
QWEN_GPTQ = {"num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768,
             "quantization_config": {"quant_method": "gptq", "bits": 4}}
LLAMA_31_LONG = dict(LLAMA_8B, max_position_embeddings=131072,
                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192})
YARN = {"num_attention_heads": 16, "max_position_embeddings": 32768,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
LINEAR_ROPE = {"num_attention_heads": 16, "max_position_embeddings": 4096,
               "rope_scaling": {"type": "linear", "factor": 2}}
MULTIMODAL = {"text_config": {"num_attention_heads": 40, "max_position_embeddings": 4096}, "vision_config": {}}
BENCH_TINY = {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
              "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}}


def params(**overrides):
    # Loopback, so that a missing api_key is no error here (test_api_key_* below cover the other addresses).
    base = {"name": "vllm", "model": "/srv/models/llama", "served_model_name": None, "host": "127.0.0.1", "port": 8000,
            "tensor_parallel_size": None, "pipeline_parallel_size": None, "max_model_len": None,
            "gpu_memory_utilization": None, "quantization": None, "dtype": None, "max_num_batched_tokens": None,
            "max_num_seqs": None, "enforce_eager": False, "api_key": None, "hf_token": None,
            "secret_environment": None, "environment": None, "shutdown_timeout": 90, "extra_args": [],
            "venv": "/opt/vllm/venv", "user": "vllm", "group": None, "device": "gpu", "limit_nofile": 65536,
            "memory_max": None, "restart_sec": 10, "start_limit_burst": 3, "start_limit_interval_sec": 600}
    base.update(overrides)
    return base


def test_valid_defaults_have_no_errors():
    assert vllm.validate_params(params()) == []


@pytest.mark.parametrize("utilization", [0, -0.1, 1.01, 2])
def test_gpu_memory_utilization_outside_zero_one(utilization):
    errors = vllm.validate_params(params(gpu_memory_utilization=utilization))
    assert errors == ["gpu_memory_utilization %s must be in (0, 1]: it is the fraction of each GPU's memory vLLM "
                      "may use" % utilization]


@pytest.mark.parametrize("utilization", [0.01, 0.9, 1.0])
def test_gpu_memory_utilization_inside(utilization):
    assert vllm.validate_params(params(gpu_memory_utilization=utilization)) == []


@pytest.mark.parametrize("argument, option", [
    ("--api-key", "api_key"), ("--api-key=sk-123", "api_key"), ("--port", "port"), ("-tp", "tensor_parallel_size"),
    ("--max-model-len=4096", "max_model_len"), ("--shutdown-timeout", "shutdown_timeout"),
])
def test_extra_args_may_not_carry_managed_flags_or_secrets(argument, option):
    errors = vllm.validate_params(params(extra_args=[argument]))
    assert len(errors) == 1
    assert "set the option %s instead" % option in errors[0]
    if option == "api_key":
        assert "keeps the secret off the command line" in errors[0]


def test_extra_args_may_carry_other_flags():
    assert vllm.validate_params(params(extra_args=["--enable-prefix-caching", "--kv-cache-dtype", "fp8"])) == []


def test_secrets_may_not_go_through_plain_environment():
    errors = vllm.validate_params(params(environment={"VLLM_API_KEY": "x", "HF_TOKEN": "y", "OK_VAR": "1"}))
    assert errors == [
        "environment must not set HF_TOKEN: use the option hf_token, which keeps it in the 0600 environment file",
        "environment must not set VLLM_API_KEY: use the option api_key, which keeps it in the 0600 environment file",
    ]


@pytest.mark.parametrize("overrides, fragment", [
    ({"name": "vllm.service"}, "plain unit name"),
    ({"name": "../etc"}, "plain unit name"),
    ({"port": 70000}, "outside 1..65535"),
    ({"tensor_parallel_size": 0}, "tensor_parallel_size must be at least 1"),
    ({"shutdown_timeout": -1}, "must not be negative"),
    ({"memory_max": "lots"}, "not a systemd size"),
    ({"venv": "relative/venv"}, "absolute path"),
    ({"model": "/srv/my models/x"}, "must not contain whitespace"),
    ({"environment": {"BAD-NAME": "1"}}, "not an environment variable name"),
    ({"secret_environment": {"TOKEN": "a\nb"}}, "control character"),
    ({"extra_args": ["--x\n"]}, "control character"),
    ({"model": ""}, "model is required"),
])
def test_bad_options(overrides, fragment):
    errors = vllm.validate_params(params(**overrides))
    assert any(fragment in error for error in errors), errors


@pytest.mark.parametrize("size", ["20G", "512M", "80%", "infinity", "1073741824", "1.5T"])
def test_memory_max_sizes(size):
    assert vllm.validate_params(params(memory_max=size)) == []


@pytest.mark.parametrize("model, files", [
    ("/srv/models/llama-3-8b.Q4_K_M.gguf", None),
    ("/srv/models/smollm2", ["SmolLM2-135M-Instruct.Q4_1.gguf", "README.md"]),
    ("TheBloke/Llama-2-7B-GGUF", None),
    ("bartowski/Qwen2.5-7B-Instruct-gguf", None),
])
def test_gguf_is_refused_with_the_way_out(model, files):
    assert vllm.gguf_refusal(model, files) == "vLLM does not serve GGUF; use llama.cpp's server or a safetensors model"


@pytest.mark.parametrize("model, files", [
    ("/srv/models/llama", ["config.json", "model.safetensors"]),
    ("/srv/models/both", ["model.gguf", "model-00001-of-00002.safetensors"]),
    ("meta-llama/Llama-3.1-8B-Instruct", None),
    ("someone/gguf-tools-demo", None),
])
def test_other_models_pass_the_gguf_check(model, files):
    assert vllm.gguf_refusal(model, files) is None


@pytest.mark.parametrize("config, requested", [
    (LLAMA_8B_AWQ, "awq"), (LLAMA_8B_AWQ, "awq_marlin"), (LLAMA_8B_AWQ, "AWQ"), (QWEN_GPTQ, "gptq_marlin"),
    (LLAMA_8B, "fp8"), (LLAMA_8B, "bitsandbytes"), (LLAMA_8B, "none"), (LLAMA_8B_AWQ, None),
    ({"num_attention_heads": 8, "compression_config": {"format": "pack-quantized"}}, "compressed-tensors"),
])
def test_quantization_that_fits_the_checkpoint(config, requested):
    assert vllm.validate_model_config(config, params(quantization=requested)) == []


def test_quantization_contradicting_the_checkpoint():
    assert vllm.validate_model_config(LLAMA_8B_AWQ, params(quantization="gptq")) == [
        "quantization gptq contradicts the model: its config.json says quant_method awq"]
    assert vllm.validate_model_config(LLAMA_8B, params(quantization="awq")) == [
        "quantization awq contradicts the model: its config.json has no quantization_config, so it is not a awq "
        "checkpoint (only fp8, bitsandbytes, experts_int8 quantize an unquantized model while loading)"]


@pytest.mark.parametrize("config, size, ok", [
    (LLAMA_8B, 1, True), (LLAMA_8B, 2, True), (LLAMA_8B, 8, True), (LLAMA_8B, 3, False), (LLAMA_8B, 16, True),
    (QWEN_GPTQ, 4, True), (QWEN_GPTQ, 8, False), (MULTIMODAL, 8, True), (MULTIMODAL, 3, False),
    (BENCH_TINY, 4, True), (BENCH_TINY, 3, False),
])
def test_tensor_parallel_must_divide_the_heads(config, size, ok):
    errors = vllm.validate_model_config(config, params(tensor_parallel_size=size))
    assert (errors == []) is ok, errors


def test_tensor_parallel_error_lists_the_sizes_that_work():
    assert vllm.validate_model_config(LLAMA_8B, params(tensor_parallel_size=3)) == [
        "tensor_parallel_size 3 does not divide the model's 32 attention heads; use one of 1, 2, 4, 8, 16, 32"]


def test_key_value_heads_that_do_not_split():
    config = {"num_attention_heads": 24, "num_key_value_heads": 8, "max_position_embeddings": 4096}
    errors = vllm.validate_model_config(config, params(tensor_parallel_size=12))
    assert errors == ["tensor_parallel_size 12 and the model's 8 key-value heads do not split evenly "
                      "(one must divide the other)"]


@pytest.mark.parametrize("config, maximum", [
    (LLAMA_8B, 8192), (LLAMA_31_LONG, 131072), (YARN, 131072), (LINEAR_ROPE, 8192), (MULTIMODAL, 4096),
    (BENCH_TINY, 2048), ({"n_positions": 1024, "num_attention_heads": 12}, 1024), ({"num_attention_heads": 1}, None),
    ({"max_position_embeddings": 4096, "seq_length": 2048}, 2048),
])
def test_model_max_length(config, maximum):
    assert vllm.model_max_length(config) == maximum


def test_max_model_len_above_the_model():
    assert vllm.validate_model_config(BENCH_TINY, params(max_model_len=2048)) == []
    assert vllm.validate_model_config(BENCH_TINY, params(max_model_len=4096)) == [
        "max_model_len 4096 is above the model's maximum of 2048 (config.json); lower it, or set environment "
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 if you know the model extrapolates"]
    allowed = params(max_model_len=4096, environment={"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"})
    assert vllm.validate_model_config(BENCH_TINY, allowed) == []


def test_every_problem_is_reported_at_once():
    errors = vllm.validate_model_config(LLAMA_8B, params(quantization="gptq", tensor_parallel_size=5,
                                                         max_model_len=100000))
    assert len(errors) == 3


BEYOND_LOOPBACK = ["0.0.0.0", "::", "10.0.1.7", "fe80::1", "169.254.169.254", "ip-10-0-1-7.ec2.internal",
                   "localhost.example.com", "128.0.0.1"]
LOOPBACK = ["127.0.0.1", "127.8.9.10", "::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "localhost", "LOCALHOST"]


@pytest.mark.parametrize("host", BEYOND_LOOPBACK)
def test_api_key_is_required_beyond_loopback(host):
    assert vllm.validate_params(params(host=host)) == [
        "api_key is required when vLLM listens beyond loopback (host=%s): set api_key (the role's "
        "vllm_service_api_key; serve.yml reads it from AWS with llmserve_api_key_secret or "
        "llmserve_api_key_parameter), or listen on 127.0.0.1 behind a local proxy; allow_no_api_key=true "
        "(vllm_service_allow_no_api_key) is for a test bench only" % host]


@pytest.mark.parametrize("host", BEYOND_LOOPBACK)
def test_a_key_or_the_bench_opt_out_lets_vllm_listen_beyond_loopback(host):
    assert vllm.validate_params(params(host=host, api_key="sk-1")) == []
    assert vllm.validate_params(params(host=host, allow_no_api_key=True)) == []


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_needs_no_api_key(host):
    assert vllm.validate_params(params(host=host)) == []
