"""spot_fleet's pure parts: input validation and which fields of a live request differ from the wanted one."""

import datetime

import pytest

from ansible_collections.llmserve.aws.plugins.module_utils import _spot_fleet as sf

ROLE = "arn:aws:iam::123456789012:role/fleet"


def params(**changes):
    values = {
        "name": "llmserve-7b", "state": "present", "target_capacity": 3, "on_demand_target_capacity": 1,
        "iam_fleet_role": ROLE, "launch_template": {"name": "llmserve-7b", "id": None, "version": "$Latest"},
        "overrides": [{"instance_type": "g5.xlarge", "weighted_capacity": 1, "subnet_id": "subnet-0123456789abcdef0",
                       "availability_zone": None, "priority": None}],
        "allocation_strategy": "capacityOptimized", "on_demand_allocation_strategy": "lowestPrice",
        "fleet_type": "maintain", "instance_interruption_behavior": "terminate", "replace_unhealthy_instances": False,
        "terminate_instances_with_expiration": False, "valid_until": None, "tags": {"team": "ml"},
        "wait_timeout": 900, "wait_sleep": 5,
    }
    values.update(changes)
    return values


def live(config):
    """A live request as DescribeSpotFleetRequests shows it: tags beside the config, echoed by id and as AWS does."""
    shown = {k: v for k, v in config.items() if k not in ("TagSpecifications", "ClientToken")}
    shown["Tags"] = config["TagSpecifications"][0]["Tags"]
    shown["FulfilledCapacity"] = 3.0
    return shown


def test_same_request_has_no_immutable_difference_and_capacity_is_not_immutable():
    wanted = sf.desired_config(params(), 0)
    assert sf.immutable_differences(live(wanted), wanted, "lt-0123456789abcdef0") == []
    resized = sf.desired_config(params(target_capacity=9, on_demand_target_capacity=2), 0)
    assert sf.immutable_differences(live(wanted), resized, "lt-0123456789abcdef0") == []


def test_aws_defaults_and_number_forms_compare_equal():
    current = live(sf.desired_config(params(), 0))
    for key in ("Type", "OnDemandAllocationStrategy", "ReplaceUnhealthyInstances"):
        del current[key]  # AWS leaves out what the request left at its default
    current["LaunchTemplateConfigs"][0]["Overrides"][0]["WeightedCapacity"] = 1  # int vs float
    assert sf.immutable_differences(current, sf.desired_config(params(), 0), "lt-1") == []


def test_template_given_by_name_matches_the_same_template_echoed_by_id():
    current = live(sf.desired_config(params(), 0))
    echoed_by_id = {"LaunchTemplateId": "lt-1", "Version": "$Latest"}
    current["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"] = echoed_by_id
    assert sf.immutable_differences(current, sf.desired_config(params(), 0), "lt-1") == []
    assert sf.immutable_differences(current, sf.desired_config(params(), 0), "lt-2") == ["launch_template"]


@pytest.mark.parametrize(("changes", "fields"), [
    ({"allocation_strategy": "lowestPrice"}, ["allocation_strategy"]),
    ({"fleet_type": "request", "replace_unhealthy_instances": True}, ["fleet_type", "replace_unhealthy_instances"]),
    ({"overrides": []}, ["overrides"]),
    ({"launch_template": {"name": "llmserve-7b", "id": None, "version": "2"}}, ["launch_template"]),
    ({"valid_until": "2031-01-01T00:00:00Z"}, ["valid_until"]),
    ({"tags": {"team": "research"}}, ["tags"]),
    ({"iam_fleet_role": "arn:aws:iam::123456789012:role/other"}, ["iam_fleet_role"]),
])
def test_each_immutable_field_is_named(changes, fields):
    current = live(sf.desired_config(params(), 0))
    assert sf.immutable_differences(current, sf.desired_config(params(**changes), 0), "lt-1") == fields


def test_client_token_is_stable_per_name_and_generation():
    assert sf.client_token("a", 0) == sf.client_token("a", 0)
    assert len({sf.client_token("a", 0), sf.client_token("a", 1), sf.client_token("b", 0)}) == 3
    assert len(sf.client_token("x" * 100, 7)) <= 64  # EC2's limit


def test_valid_until_is_utc_whatever_the_offset():
    assert sf.parse_valid_until("2030-01-31T02:00:00+02:00") == datetime.datetime(2030, 1, 31, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(("changes", "message"), [
    ({"target_capacity": None}, "target_capacity is required"),
    ({"target_capacity": -2}, "target_capacity=-2 must not be negative"),
    ({"on_demand_target_capacity": -1}, "on_demand_target_capacity=-1 must not be negative"),
    ({"on_demand_target_capacity": 5}, "on_demand_target_capacity=5 is more than target_capacity=3"),
    ({"iam_fleet_role": "arn:aws:iam::12:role/x"}, "iam_fleet_role='arn:aws:iam::12:role/x' is not valid"),
    ({"iam_fleet_role": "arn:aws:iam::123456789012:user/x"}, "iam_fleet_role="),
    ({"name": "-leading"}, "name='-leading' is not valid"),
    ({"name": "a\tb"}, "name contains a control character"),
    ({"launch_template": {"id": None, "name": None, "version": "$Default"}}, "launch_template needs id or name"),
    ({"launch_template": {"id": "lt-XYZ", "name": None, "version": "$Default"}}, "launch_template.id="),
    ({"launch_template": {"id": None, "name": "t1x", "version": "latest"}}, "launch_template.version="),
    ({"overrides": [{"instance_type": "G5 XL"}]}, "overrides[0].instance_type="),
    ({"overrides": [{"subnet_id": "sub-1"}]}, "overrides[0].subnet_id="),
    ({"overrides": [{"availability_zone": "east"}]}, "overrides[0].availability_zone="),
    ({"overrides": [{"priority": -1}]}, "overrides[0].priority=-1 must not be negative"),
    ({"tags": {"k\x00": "v"}}, "contains a control character"),
    ({"wait_timeout": 0}, "wait_timeout=0 must be a positive"),
])
def test_validation_names_the_parameter(changes, message):
    with pytest.raises(sf.FleetInputError) as error:
        sf.validate(params(**changes))
    assert message in str(error.value)


def test_connection_secrets_are_not_checked_or_repeated():
    # AWS connection options are Ansible's to validate; a message quoting them would leak a secret.
    sf.validate(params(secret_key="s3cr\x01t"))


def test_absent_needs_only_a_valid_name():
    sf.validate({"name": "llmserve-7b", "state": "absent"})
