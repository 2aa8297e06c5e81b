"""llmserve.aws.spot_fleet against the local AWS: create, resize and cancel each in the 4-step pattern (check ->
changed, apply -> changed, check -> ok, apply -> ok), an immutable change refused with nothing changed, and bad
input refused before anything is created.

The module runs in this process (tests/unit/module_harness.py) with AWS_ENDPOINT_URL pointing at the local AWS.
AWS behaviour it relies on that moto 5.2.5 lacks comes from tests/bench/moto_ext/ec2_fleet_requests.py
(ClientToken idempotency, the on-demand base, ModifySpotFleetRequest of both capacities, cancelled requests
staying describable) and ec2.py (one pool per override, `submitted` before `active`).
"""

from typing import Any

import pytest

from ansible_collections.llmserve.aws.plugins.modules import spot_fleet
from tests.unit.module_harness import capture_exit, run_main

ROLE = "llmserve-spot-fleet"
ROLE_ARN = f"arn:aws:iam::123456789012:role/{ROLE}"
TEMPLATE = "llmserve-fleet-test"


@pytest.fixture
def fleet_aws(aws_clean, monkeypatch):
    for name, value in aws_clean.env.items():
        monkeypatch.setenv(name, value)
    capture_exit(monkeypatch)
    ec2, iam = aws_clean.client("ec2"), aws_clean.client("iam")
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument="{}")
    ec2.create_launch_template(
        LaunchTemplateName=TEMPLATE,
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"},
    )
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    return aws_clean, ec2, subnet


def _args(subnet: str, **changes: Any) -> dict[str, Any]:
    args = {
        "name": "test-7b",
        "target_capacity": 3,
        "on_demand_target_capacity": 1,
        "iam_fleet_role": ROLE_ARN,
        "launch_template": {"name": TEMPLATE, "version": "$Latest"},
        "overrides": [
            {"instance_type": "g5.xlarge", "weighted_capacity": 1, "subnet_id": subnet},
            {"instance_type": "g5.2xlarge", "weighted_capacity": 1, "subnet_id": subnet},
        ],
        "allocation_strategy": "diversified",
        "tags": {"llmserve:model-size": "7b"},
        "wait_sleep": 1,
        "wait_timeout": 30,
    }
    args.update(changes)
    return args


def _run(args: dict[str, Any], check: bool = False):
    return run_main(spot_fleet.main, dict(args, _ansible_check_mode=check, _ansible_diff=True))


def _four_steps(args: dict[str, Any]) -> dict[str, Any]:
    outcomes = []
    for check in (True, False, True, False):
        exited = _run(args, check)
        assert not exited.failed, exited.result["msg"]
        outcomes.append(exited.result)
    assert [o["changed"] for o in outcomes] == [True, True, False, False]
    # check mode predicts the capacities the apply then reports
    for key in ("target_capacity", "on_demand_target_capacity"):
        assert outcomes[0]["diff"]["after"].get(key) == outcomes[1]["diff"]["after"].get(key)
    return outcomes[1]


def _lifecycles(result: dict[str, Any]) -> list[str]:
    return sorted(i["lifecycle"] for i in result["instances"])


def test_create_resize_cancel_each_in_four_steps(fleet_aws):
    aws, ec2, subnet = fleet_aws
    created = _four_steps(_args(subnet))
    assert created["state"] == "active" and created["activity_status"] == "fulfilled"
    assert created["fulfilled_capacity"] == 3
    assert _lifecycles(created) == ["on-demand", "spot", "spot"]
    assert {i["instance_type"] for i in created["instances"]} == {"g5.xlarge", "g5.2xlarge"}
    assert all(i["private_ip_address"] and i["availability_zone"] for i in created["instances"])
    assert created["waited"]["waited_for"].endswith("active and fulfilled")
    fleet_id = created["spot_fleet_request_id"]

    resized = _four_steps(_args(subnet, target_capacity=2))
    assert resized["spot_fleet_request_id"] == fleet_id  # in place, not a new request
    assert resized["diff"]["before"]["target_capacity"] == 3 and resized["diff"]["after"]["target_capacity"] == 2
    assert _lifecycles(resized) == ["on-demand", "spot"]

    cancelled = _four_steps({"name": "test-7b", "state": "absent", "wait_sleep": 1, "wait_timeout": 30})
    assert cancelled["state"] == "cancelled" and cancelled["instances"] == []
    live = [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]
    assert live == []


def test_immutable_change_fails_naming_the_fields_and_changes_nothing(fleet_aws):
    aws, ec2, subnet = fleet_aws
    created = _run(_args(subnet))
    assert not created.failed, created.result["msg"]
    before = ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]

    changed = _args(subnet, allocation_strategy="capacityOptimized", target_capacity=5)
    changed["overrides"] = changed["overrides"][:1]
    refused = _run(changed)

    assert refused.failed
    assert "allocation_strategy, overrides cannot change" in refused.result["msg"]
    assert "must be replaced" in refused.result["msg"] and "Nothing was changed" in refused.result["msg"]
    after = ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert [f["SpotFleetRequestConfig"] for f in after] == [f["SpotFleetRequestConfig"] for f in before]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"iam_fleet_role": "arn:aws:iam::123456789012:role/no-such-role"}, "no such IAM role"),
        ({"iam_fleet_role": "llmserve-spot-fleet"}, "iam_fleet_role='llmserve-spot-fleet' is not valid"),
        ({"target_capacity": -1, "on_demand_target_capacity": 0}, "target_capacity=-1 must not be negative"),
        ({"on_demand_target_capacity": 4}, "on_demand_target_capacity=4 is more than target_capacity=3"),
        ({"name": "test\n7b"}, "name contains a control character"),
        ({"tags": {"team": "ml\x1b[31m"}}, "contains a control character"),
        ({"launch_template": {"name": "no-such-template"}}, "no such launch template"),
        ({"overrides": [{"instance_type": "g5.huge"}, {"instance_type": "g5.xlarge"}]}, "EC2 does not offer"),
        ({"overrides": [{"instance_type": "g5.xlarge", "weighted_capacity": 0}]}, "weighted_capacity=0.0 must be"),
        ({"valid_until": "next tuesday"}, "valid_until='next tuesday' is not an ISO 8601 time"),
    ],
)
def test_bad_input_fails_before_anything_is_created(fleet_aws, changes, message):
    aws, ec2, subnet = fleet_aws
    refused = _run(_args(subnet, **changes))
    assert refused.failed
    assert message in refused.result["msg"]
    assert ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"] == []
