"""Fleet instance types from the planner: same GPU model and count as the profile, fitting, weighted, ranked."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.aws.plugins.filter.fleet_types import fleet_instance_types
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import CATALOG

PROFILE_7B = dict(dtype="bfloat16", quantization="none", max_model_len=8192, concurrency=2,
                  gpu_memory_utilization=0.9, tensor_parallel_size=1)


def test_7b_fleet_is_every_single_a10g_type_cheapest_per_token_first():
    types = fleet_instance_types(8, "g5.xlarge", **PROFILE_7B)
    names = [t["instance_type"] for t in types]
    assert names[:3] == ["g5.xlarge", "g5.2xlarge", "g5.4xlarge"]
    expected = {n for n, i in CATALOG.items() if i["gpu"] == "A10G" and i["gpu_count"] == 1}
    assert set(names) == expected
    costs = [t["cost_per_mtok_usd"] for t in types]
    assert costs == sorted(costs)
    assert all(t["weighted_capacity"] == 1 and t["tensor_parallel_size"] == 1 for t in types)  # same GPU, same speed


def test_spot_prices_rank_by_default_and_overrides_reorder():
    spot = fleet_instance_types(8, "g5.xlarge", **PROFILE_7B)
    assert spot[0]["hourly_cost_usd"] == CATALOG["g5.xlarge"]["prices"]["spot"]
    cheap_big = fleet_instance_types(8, "g5.xlarge", price_overrides={"g5.4xlarge": 0.3}, **PROFILE_7B)
    assert cheap_big[0]["instance_type"] == "g5.4xlarge"


def test_multi_gpu_reference_keeps_gpu_count():
    types = fleet_instance_types(70, "p4d.24xlarge", dtype="bfloat16", max_model_len=4096, concurrency=4)
    assert {t["instance_type"] for t in types} == {"p4d.24xlarge"}


def test_nothing_fits_names_each_rejected_type():
    with pytest.raises(AnsibleFilterError, match="no instance type with 1 x A10G holds this profile: g5.16xlarge"):
        fleet_instance_types(70, "g5.xlarge", dtype="bfloat16", tensor_parallel_size=1)


@pytest.mark.parametrize(("value", "reference", "options", "message"), [
    ("8", "g5.xlarge", {}, "expected a parameter count"),
    (True, "g5.xlarge", {}, "expected a parameter count"),
    (8, "g5.mega", {}, "g5.mega not in the catalog"),
    (8, "g5.xlarge", {"instance_types": ["g6.xlarge"]}, "instance_types is not an option here"),
    (8, "g5.xlarge", {"concurrency": 0}, "concurrency must be at least 1"),
])
def test_bad_input_names_the_problem(value, reference, options, message):
    with pytest.raises(AnsibleFilterError, match=message):
        fleet_instance_types(value, reference, **options)
