"""playbooks/fleet.yml against the local AWS: the 7b profile's fleet converges, a second run changes nothing, a new
target capacity resizes the same request in place, and absent removes it.

The network issue's outputs (subnets, security group, instance profile, fleet role) are made here with boto3.
AWS behaviour the run relies on that moto 5.2.5 lacks comes from tests/bench/moto_ext/ (ec2.py: one pool per
override and launch-template tags on fleet instances; ec2_fleet_requests.py: ClientToken, the on-demand base,
in-place ModifySpotFleetRequest).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT_S = 180


@pytest.fixture
def network(aws_clean):
    ec2, iam = aws_clean.client("ec2"), aws_clean.client("iam")
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{n}.0/24", AvailabilityZone=f"us-east-1{zone}")["Subnet"][
            "SubnetId"
        ]
        for n, zone in ((1, "a"), (2, "b"))
    ]
    group = ec2.create_security_group(GroupName="llmserve-fleet", Description="fleet", VpcId=vpc)["GroupId"]
    role = iam.create_role(RoleName="llmserve-spot-fleet", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    iam.create_instance_profile(InstanceProfileName="llmserve-instance")
    return aws_clean, {
        "llmserve_profile": "7b",
        "llmserve_fleet_subnet_ids": subnets,
        "llmserve_fleet_security_group_ids": [group],
        "llmserve_fleet_instance_profile": "llmserve-instance",
        "llmserve_fleet_role_arn": role,
        "llmserve_fleet_image_id": "ami-12c6146b",
        "llmserve_fleet_target_capacity": 3,
        "llmserve_fleet_on_demand_capacity": 1,
        "llmserve_fleet_max_types": 2,
        "llmserve_fleet_wait_sleep": 1,
    }


def _fleet(aws, extra_vars):
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "ANSIBLE_"))}
    env.update(aws.env)
    env.update({"ANSIBLE_COLLECTIONS_PATH": str(REPO / ".collections"), "ANSIBLE_NOCOLOR": "true",
                "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
                "ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/fleet.yml", "-e", json.dumps(extra_vars)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL,
        check=False,
    )
    out = completed.stdout + completed.stderr
    assert completed.returncode == 0, out
    return int(re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", out).group(1)), out


def _live_instances(ec2):
    return [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]


def test_fleet_converges_is_idempotent_and_resizes_in_place(network):
    aws, extra_vars = network
    ec2 = aws.client("ec2")
    changed, out = _fleet(aws, extra_vars)
    assert changed > 0
    assert "g5.xlarge, g5.2xlarge in 2 subnet(s)" in out  # the planner's two cheapest per 1M tokens
    fleets = ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert len(fleets) == 1
    config = fleets[0]["SpotFleetRequestConfig"]
    assert (config["TargetCapacity"], config["OnDemandTargetCapacity"]) == (3, 1)
    assert len(config["LaunchTemplateConfigs"][0]["Overrides"]) == 4
    instances = _live_instances(ec2)
    assert sorted(i.get("InstanceLifecycle", "on-demand") for i in instances) == ["on-demand", "spot", "spot"]
    for instance in instances:
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags["llmserve:role"] == "vllm" and tags["llmserve:model-size"] == "7b"
        assert tags["aws:ec2spot:fleet-request-id"] == fleets[0]["SpotFleetRequestId"]
    template = ec2.describe_launch_template_versions(LaunchTemplateName="llmserve-7b")["LaunchTemplateVersions"]
    data = template[0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["BlockDeviceMappings"][0]["Ebs"]["VolumeType"] == "gp3"
    assert {s["ResourceType"] for s in data["TagSpecifications"]} == {"instance", "volume"}

    assert _fleet(aws, extra_vars)[0] == 0
    assert len(ec2.describe_launch_template_versions(LaunchTemplateName="llmserve-7b")["LaunchTemplateVersions"]) == 1

    changed = _fleet(aws, dict(extra_vars, llmserve_fleet_target_capacity=2))[0]
    assert changed == 1
    after = ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert [f["SpotFleetRequestId"] for f in after] == [fleets[0]["SpotFleetRequestId"]]
    assert after[0]["SpotFleetRequestConfig"]["TargetCapacity"] == 2
    assert len(_live_instances(ec2)) == 2

    _fleet(aws, {"llmserve_profile": "7b", "llmserve_fleet_state": "absent", "llmserve_fleet_wait_sleep": 1})
    assert _live_instances(ec2) == []
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []
