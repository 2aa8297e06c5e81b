"""The sizing filters: direct calls and their docs against their signatures (through a real ansible-playbook run:
tests/integration/test_sizing_filter_playbook.py)."""

import inspect
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".collections"))  # llmserve.aws importable as ansible_collections.* (make collections)

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.llmserve.aws.plugins.filter import sizing as sizing_filters  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._sizing import model_spec  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._sizing import planner  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._sizing import request  # noqa: E402
from tests.support.playbook import run_ansible  # noqa: E402

QWEN25_7B = {
    "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


def test_filters_are_registered_under_their_documented_names():
    filters = sizing_filters.FilterModule().filters()
    assert set(filters) == {"model_memory_gib", "plan_instance"}
    for name in filters:
        assert (REPO / "plugins" / "filter" / ("%s.yml" % name)).is_file()


def test_model_memory_gib_is_the_planner_s_per_gpu_requirement():
    """70B FP16 over 8 GPUs at 8192 x 16: 16.30 (weights) + 5.00 (KV) + 3.05 (overhead) = 24.34 GiB, the same
    number model_plan reports for p4d.24xlarge."""
    per_gpu = sizing_filters.model_memory_gib(70, dtype="float16", max_model_len=8192, concurrency=16,
                                              tensor_parallel_size=8)
    plan = planner.plan(model_spec.model_from_parameters(70), {"dtype": "float16", "max_model_len": 8192,
                                                               "concurrency": 16, "instance_type": "p4d.24xlarge"})
    assert per_gpu == plan["required_gib_per_gpu"] == 24.34


def test_model_memory_gib_on_h100_profiles_larger_batches():
    """vLLM serves with 8192 batched tokens and 1024 sequences on H100s, 2048 and 256 elsewhere: a larger peak."""
    elsewhere = sizing_filters.model_memory_gib(8, dtype="float16")
    on_h100 = sizing_filters.model_memory_gib(8, dtype="float16", instance_type="p5.48xlarge")
    assert on_h100 > elsewhere + 1.0


def test_model_memory_gib_accepts_a_loaded_config_json():
    per_gpu = sizing_filters.model_memory_gib(QWEN25_7B, max_model_len=32768, tensor_parallel_size=2)
    assert per_gpu == round(planner.required_memory_gib(model_spec.parse_hf_config(QWEN25_7B),
                                                        {"max_model_len": 32768}, 2), 2)


@pytest.mark.parametrize("value,message", [
    ("70", "got a string"),
    (True, "got a boolean"),
    ([70], "got list"),
])
def test_inputs_that_are_neither_a_count_nor_a_config_are_refused(value, message):
    with pytest.raises(AnsibleFilterError, match=message):
        sizing_filters.model_memory_gib(value)


def test_plan_instance_returns_the_module_s_plan():
    plan = sizing_filters.plan_instance(13, dtype="float16", concurrency=8,
                                        instance_types=["g5.xlarge", "g5.12xlarge", "g5.48xlarge"])
    assert (plan["instance_type"], plan["tensor_parallel_size"]) == ("g5.12xlarge", 4)
    assert " ".join(plan["vllm_args"]) == ("--tensor-parallel-size 4 --max-model-len 4096 "
                                           "--gpu-memory-utilization 0.9 --dtype float16")


def test_plan_instance_fails_with_what_would_fit():
    with pytest.raises(AnsibleFilterError) as caught:
        sizing_filters.plan_instance(405, dtype="bfloat16", instance_type="p5.48xlarge")
    assert "plan_instance: 405.0B parameters as bfloat16" in str(caught.value)
    assert "dtype=fp8 quantization=fp8 fits p5.48xlarge" in str(caught.value)
    with pytest.raises(AnsibleFilterError, match="unknown option"):
        sizing_filters.plan_instance(8, context_length=4096)


@pytest.fixture(scope="module")
def filter_docs():
    """What ansible-doc renders for both filters, from their YAML files."""
    names = ["llmserve.aws.model_memory_gib", "llmserve.aws.plan_instance"]
    completed = run_ansible("ansible-doc", "-t", "filter", "--json", *names, timeout_s=60)
    assert completed.returncode == 0, completed.stderr
    rendered = json.loads(completed.stdout)
    return dict((name.rsplit(".", 1)[1], rendered[name]["doc"]) for name in names)


def test_model_memory_gib_doc_matches_its_signature(filter_docs):
    doc = filter_docs["model_memory_gib"]
    signature = inspect.signature(sizing_filters.model_memory_gib)
    keywords = [name for name in signature.parameters if name != "value"]
    assert set(doc["options"]) == set(keywords) | {"_input"}
    for name in keywords:
        assert doc["options"][name].get("default") == signature.parameters[name].default, name


def test_plan_instance_doc_lists_every_option_the_planner_takes(filter_docs):
    doc = filter_docs["plan_instance"]
    assert set(doc["options"]) == set(request.normalize_request({})) | {"_input"}
    defaults = request.normalize_request({})
    for name, option in doc["options"].items():
        if name != "_input":
            assert option.get("default") == defaults[name], name
