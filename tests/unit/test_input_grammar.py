"""Every value that reaches a unit, an environment file or vLLM's argv: whole-string grammars, one table per class.

Each row is a value an attacker or a typo could send; the check must name the option. Rows with a trailing newline
are the ones a `$`-anchored pattern used to let through (a newline in a unit file starts a new directive).
"""

import pytest

from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar
from ansible_collections.llmserve.aws.plugins.module_utils import _vllm as vllm

from test_vllm_validation import params

INJECTION = "vllm\nExecStartPre=+/bin/sh -c 'id > /tmp/pwned'"


@pytest.mark.parametrize("option, value", [
    ("group", INJECTION), ("group", "vllm\n"), ("group", "Root Users"), ("group", "-vllm"), ("group", "a" * 40),
    ("user", INJECTION), ("user", "vllm\n"), ("user", "0day"), ("user", "vllm;id"),
    ("host", "0.0.0.0\nExecStartPre=+/bin/id"), ("host", "127.0.0.1 --api-key x"), ("host", "-h"), ("host", "a_b.c"),
    ("name", "vllm\n"), ("name", "../../etc/x"), ("name", "a..b"), ("name", "x.service"),
    ("venv", "/opt/vllm/venv\n"), ("venv", "/opt/../root/venv"), ("venv", "opt/venv"), ("venv", "/opt/my venv"),
    ("model", "/srv/models/../../root"), ("model", "/srv/models/x\n"), ("model", "org/name\n"),
    ("model", "org/../name"), ("model", "not a hub id"), ("model", "org/name/extra"), ("model", "--api-key"),
    ("served_model_name", "tiny\nExecStartPre=+/bin/id"), ("restart_schedule", "Sun\nExecStartPre=+/bin/id"),
    ("memory_max", "20G\n"), ("quantization", "awq\n"), ("quantization", "fp9"), ("quantization", "awq --api-key x"),
])
def test_values_reaching_the_unit_or_argv_are_refused(option, value):
    errors = vllm.validate_params(params(**{option: value}))
    assert errors and any(option in error for error in errors), errors


@pytest.mark.parametrize("option, value", [
    ("group", "video"), ("user", "vllm"), ("user", "_vllm"), ("host", "127.0.0.1"), ("host", "::"),
    ("host", "fe80::1"), ("host", "ip-10-0-0-1.ec2.internal"), ("model", "meta-llama/Llama-3.1-8B-Instruct"),
    ("model", "/srv/models/tiny/current"), ("quantization", "fbgemm_fp8"), ("quantization", "compressed-tensors"),
    ("quantization", "none"), ("quantization", "awq_marlin"), ("memory_max", "80%"), ("name", "vllm-8b"),
])
def test_valid_values_pass(option, value):
    assert vllm.validate_params(params(api_key="sk-unit", **{option: value})) == []


@pytest.mark.parametrize("arguments, flag", [
    (["--api-key", "sk"], "--api-key"), (["--api_key", "sk"], "--api-key"), (["--api-key=sk"], "--api-key"),
    (["--api_key=sk"], "--api-key"), (["--api-k", "sk"], "--api-key"), (["--hf_token=t"], "--hf-token"),
    (["--config", "/tmp/flags.yaml"], "--config"), (["--config=/tmp/flags.yaml"], "--config"),
    (["--conf", "/tmp/f.yaml"], "--config"), (["--max_model_len=100000"], "--max-model-len"),
    (["--max-model"], "--max-model-len"), (["--tensor_parallel_size", "4"], "--tensor-parallel-size"),
    (["-tp=4"], "--tensor-parallel-size"), (["-t", "4"], "--tensor-parallel-size"), (["-qfp8"], "--quantization"),
    (["-q=awq"], "--quantization"), (["--quantization=awq"], "--quantization"),
    (["--served_model_name", "x"], "--served-model-name"),
    (["--host=0.0.0.0"], "--host"), (["--no-enforce-eager"], "--enforce-eager"),
    (["--no_enforce_eager"], "--enforce-eager"), (["--PORT"], None), (["--model.x=1"], "--model"),
])
def test_extra_args_refusal_holds_for_every_spelling(arguments, flag):
    errors = vllm.validate_params(params(extra_args=arguments))
    if flag is None:  # argparse is case-sensitive: --PORT is not --port, vLLM itself rejects it
        assert errors == []
        return
    assert errors and flag in errors[0], errors


@pytest.mark.parametrize("arguments", [
    ["--enable-prefix-caching"], ["--kv-cache-dtype", "fp8"], ["--kv_cache_dtype=fp8"], ["--max-loras", "2"],
    ["--config-format", "hf"], ["-O3"], ["--compilation-config.level", "3"], ["--tool-call-parser", "llama3_json"],
])
def test_extra_args_other_flags_pass(arguments):
    assert vllm.validate_params(params(extra_args=arguments)) == []


@pytest.mark.parametrize("name", [
    "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "OPENAI_API_KEY", "GITHUB_TOKEN", "DB_PASSWORD",
    "MYPASSWORD", "SIGNING_KEY", "WANDB_API_KEY", "SERVICE_CREDENTIALS", "PRIVATE_PEM", "VLLM_API_KEY",
])
def test_environment_refuses_secret_looking_names(name):
    errors = vllm.validate_params(params(environment={name: "x"}))
    assert errors and name in errors[0] and ("secret_environment" in errors[0] or "0600" in errors[0]), errors
    assert vllm.validate_params(params(secret_environment={name: "x"})) == [] or name == "VLLM_API_KEY"


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "VLLM_CPU_KVCACHE_SPACE", "HF_HUB_OFFLINE",
                                  "CUDA_VISIBLE_DEVICES", "PWD", "KEYBOARD_LAYOUT"])
def test_environment_accepts_plain_names(name):
    assert vllm.validate_params(params(environment={name: "1"})) == []


@pytest.mark.parametrize("option, value", [
    ("api_key", "sk\nExecStartPre=+/bin/id"), ("hf_token", "hf_\r"), ("secret_environment", {"DB_PASSWORD": "a\nB=c"}),
])
def test_secrets_with_control_characters_are_refused_without_echoing_them(option, value):
    errors = vllm.validate_params(params(**{option: value}))
    assert errors
    assert "ExecStartPre" not in " ".join(errors) and "B=c" not in " ".join(errors)


@pytest.mark.parametrize("check, value, valid", [
    (grammar.absolute_path, "/", True), (grammar.absolute_path, "/a/./b", False), (grammar.absolute_path, "/a//b", False),
    (grammar.path_component, "..", False), (grammar.path_component, "x" * 300, False),
    (grammar.path_component, "model.safetensors", True), (grammar.relative_path, "a/../b", False),
    (grammar.relative_path, "tokenizer/vocab.json", True), (grammar.finite_number, float("nan"), False),
    (grammar.finite_number, float("inf"), False), (grammar.finite_number, "cheap", False),
    (grammar.finite_number, True, False), (grammar.finite_number, "1.5", True),
    (grammar.hub_id, "a" * 97 + "/b", False), (grammar.hub_id, "org/name.git", False),
])
def test_shared_grammar(check, value, valid):
    assert (check("option", value) is None) == valid
