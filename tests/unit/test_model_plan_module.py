"""model_plan's main(): arguments, results, failures, and documentation that matches the argument spec."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.llmserve.aws.plugins.modules import model_plan
from module_harness import capture_exit
from module_harness import run_main

REPO = Path(__file__).resolve().parents[2]

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


@pytest.fixture(autouse=True)
def exits_raise(monkeypatch):
    capture_exit(monkeypatch)


def run(**args):
    return run_main(model_plan.main, args)


def test_plans_70b_fp16_on_p4d_and_changes_nothing():
    outcome = run(parameters_b=70, dtype="float16", max_model_len=8192, concurrency=16)
    result = outcome.result
    assert not outcome.failed and result["changed"] is False and result["fits"] is True
    assert (result["instance_type"], result["tensor_parallel_size"]) == ("p4d.24xlarge", 8)
    assert result["vllm_args"][:2] == ["--tensor-parallel-size", "8"]
    for key in ("weights_gib", "kv_cache_gib", "required_gib_per_gpu", "hourly_cost_usd", "candidates",
                "cost_per_mtok_usd", "gpu_check"):
        assert result[key] is not None
    assert len(result["candidates"]) == 29
    assert sum(1 for entry in result["candidates"] if entry["reason"].startswith("chosen:")) == 1


def test_check_mode_gives_the_same_plan():
    normal = run(parameters_b=13, dtype="float16", concurrency=8).result
    checked = run(parameters_b=13, dtype="float16", concurrency=8, _ansible_check_mode=True).result
    assert checked == normal


def test_reads_config_json_from_a_file_or_the_model_directory(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_31_8B))
    from_file = run(model_config=str(tmp_path / "config.json"), instance_type="g5.xlarge").result
    from_dir = run(model_config=str(tmp_path), instance_type="g5.xlarge").result
    assert from_file["model"]["parameters"] == from_dir["model"]["parameters"] == 8030261248
    assert from_file["model"]["shape_is_estimate"] is False
    assert from_file["dtype"] == "bfloat16"  # the checkpoint's torch_dtype


def test_model_config_that_cannot_be_read_names_the_option_and_the_fix(tmp_path):
    outcome = run(model_config=str(tmp_path / "missing" / "config.json"))
    assert outcome.failed and outcome.result["msg"].startswith("model_config: cannot read")
    assert "Fix: point model_config at the model's config.json" in outcome.result["msg"]
    (tmp_path / "config.json").write_text("{not json")
    outcome = run(model_config=str(tmp_path))
    assert outcome.failed and "is not valid JSON" in outcome.result["msg"]


def test_parameters_b_and_model_config_are_mutually_exclusive_and_one_is_required(tmp_path):
    both = run(parameters_b=8, model_config=str(tmp_path))
    assert both.failed and "mutually exclusive: parameters_b|model_config" in both.result["msg"]
    neither = run(dtype="float16")
    assert neither.failed and "one of the following is required: parameters_b, model_config" in neither.result["msg"]


def test_a_profile_that_does_not_fit_fails_with_the_arithmetic_and_what_would():
    outcome = run(parameters_b=405, dtype="bfloat16", instance_type="p5.48xlarge", tensor_parallel_size=8)
    result = outcome.result
    assert outcome.failed and result["fits"] is False and result["changed"] is False
    assert result["msg"].startswith("405.0B parameters as bfloat16, max_model_len 4096 x concurrency 1 does not "
                                    "fit p5.48xlarge: needs 99.92 GiB per GPU at TP 8")
    assert "dtype=fp8 quantization=fp8 fits p5.48xlarge" in result["msg"]
    assert result["suggestions"]["quantization_fp8"]["instance_type"] == "p5.48xlarge"
    assert [entry["instance_type"] for entry in result["candidates"]] == ["p5.48xlarge"]


def test_a_profile_that_fits_returns_that_instance():
    result = run(parameters_b=405, dtype="fp8", instance_type="p5.48xlarge", tensor_parallel_size=8,
                 max_model_len=8192, concurrency=16).result
    assert (result["instance_type"], result["tensor_parallel_size"]) == ("p5.48xlarge", 8)
    assert result["vllm_flags"]["quantization"] == "fp8"


def test_bad_values_fail_naming_the_parameter():
    assert "instance type(s) x9.huge not in the catalog" in run(parameters_b=8, instance_type="x9.huge").result["msg"]
    assert "parameters_b must be a positive number" in run(parameters_b=-1).result["msg"]
    bad_choice = run(parameters_b=8, dtype="float8")
    assert bad_choice.failed and "dtype" in bad_choice.result["msg"]


def test_break_even_is_returned_when_an_api_price_is_given():
    result = run(parameters_b=8, dtype="float16", instance_type="g5.xlarge", api_price_per_mtok=30).result
    assert result["break_even"]["break_even_tokens_per_day"] == 804800


def documented_options():
    return yaml.safe_load(model_plan.DOCUMENTATION)["options"]


def test_documentation_matches_the_argument_spec():
    options = documented_options()
    assert set(options) == set(model_plan.ARGUMENT_SPEC)
    for name, spec in model_plan.ARGUMENT_SPEC.items():
        doc = options[name]
        assert doc["type"] == spec["type"], name
        assert doc.get("default") == spec.get("default"), name
        assert doc.get("choices") == spec.get("choices"), name
        assert doc.get("elements") == spec.get("elements"), name
    yaml.safe_load(model_plan.EXAMPLES)
    yaml.safe_load(model_plan.RETURN)


def test_return_documents_every_key_a_plan_returns():
    result = run(parameters_b=8, dtype="float16", instance_type="g5.xlarge", api_price_per_mtok=1).result
    documented = set(yaml.safe_load(model_plan.RETURN))
    assert set(result) - {"changed"} <= documented


def test_ansible_doc_renders_the_module():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"))
    ansible_doc = str(Path(sys.executable).parent / "ansible-doc")  # the venv's, next to this interpreter
    completed = subprocess.run([ansible_doc, "--json", "llmserve.aws.model_plan"], capture_output=True, text=True,
                               env=env, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    doc = json.loads(completed.stdout)["llmserve.aws.model_plan"]["doc"]
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "none"
    assert set(doc["options"]) == set(model_plan.ARGUMENT_SPEC)
