"""inventories/aws_ec2.yml, run by the real `ansible-inventory` (amazon.aws.aws_ec2) against the local AWS.

The fleet is built the way the project builds it on AWS: on-demand 7B hosts from RunInstances, a 13B spot host
from RunInstances with InstanceMarketOptions, 70B spot hosts from a Spot Fleet whose launch template carries the
tags, and a 405B host in a second region; plus hosts the inventory must leave out or flag. AWS behaviour this
relies on that moto 5.2.5 lacks comes from tests/bench/moto_ext (ec2.py): fleet instances launched from their
launch template's tags with InstanceLifecycle=spot and the aws:ec2spot:fleet-request-id tag.
The inventory file itself names no endpoint: AWS_ENDPOINT_URL in the environment sends botocore here.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
INVENTORY = REPO_ROOT / "inventories" / "aws_ec2.yml"
AMI = "ami-12c6146b"  # one of moto's built-in AMIs
ROLE_ARN = "arn:aws:iam::123456789012:role/llmserve-spot-fleet"
FLEET_TAG = "aws:ec2spot:fleet-request-id"
COMMAND_TIMEOUT_S = 120
# Options that would tie the file to one endpoint or one set of credentials: they belong in the environment.
ENVIRONMENT_ONLY_OPTIONS = {
    "endpoint_url",
    "aws_endpoint_url",
    "endpoint",
    "access_key",
    "aws_access_key",
    "aws_access_key_id",
    "secret_key",
    "aws_secret_key",
    "aws_secret_access_key",
    "session_token",
    "aws_session_token",
    "profile",
    "aws_profile",
}


def _tool(name: str) -> str:
    """The Ansible CLI next to this interpreter (the control venv), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found next to {sys.executable} or on PATH; run `make venv`")
    return found


def _ansible_env(aws) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "ANSIBLE_"))  # nothing from the caller's AWS or Ansible set-up
    }
    env.update(aws.env)
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT / ".collections"),
            # A source that no plugin can parse is an error, not a warning and an empty inventory.
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true",
            "ANSIBLE_NOCOLOR": "true",
        }
    )
    return env


def _run(aws, *args: str, tool: str = "ansible-inventory") -> str:
    completed = subprocess.run(
        [_tool(tool), "-i", str(INVENTORY), *args],
        check=False,
        cwd=REPO_ROOT,
        env=_ansible_env(aws),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert completed.returncode == 0, f"{tool} {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


def _plain(value: Any) -> Any:
    """ansible-core 2.19 writes untrusted strings as {"__ansible_unsafe": "..."} in --list output."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _parse_graph(text: str) -> dict[str, set[str]]:
    """`ansible-inventory --graph` as {group: direct members}; groups keep their '@', hosts have none."""
    members: dict[str, set[str]] = {}
    parents: list[str] = []
    for line in text.splitlines():
        if line.startswith("@"):  # the root, "@all:"
            parents = [line.rstrip(":")]
            members[parents[0]] = set()
            continue
        marker = line.find("|--")
        if marker < 0:
            continue
        depth = (marker - 2) // 3 + 1  # "  |--" is depth 1, "  |  |--" depth 2, ...
        name = line[marker + 3 :].rstrip(":")
        del parents[depth:]
        members[parents[-1]].add(name)
        if name.startswith("@"):
            members.setdefault(name, set())
            parents.append(name)
    return members


def _tags(**tags: str) -> list[dict[str, Any]]:
    return [{"ResourceType": "instance", "Tags": [{"Key": key, "Value": value} for key, value in tags.items()]}]


def _launch(ec2, subnet: str, count: int, instance_type: str, tags: list[dict[str, Any]], **extra: Any) -> list[str]:
    reservation = ec2.run_instances(
        ImageId=AMI,
        MinCount=count,
        MaxCount=count,
        InstanceType=instance_type,
        SubnetId=subnet,
        TagSpecifications=tags,
        **extra,
    )
    return [instance["InstanceId"] for instance in reservation["Instances"]]


def _subnet(ec2, vpc_cidr: str, subnet_cidr: str, zone: str) -> str:
    vpc = ec2.create_vpc(CidrBlock=vpc_cidr)["Vpc"]["VpcId"]
    return ec2.create_subnet(VpcId=vpc, CidrBlock=subnet_cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]


def _private_ips(ec2) -> dict[str, str]:
    reservations = ec2.describe_instances()["Reservations"]
    return {
        instance["InstanceId"]: instance["PrivateIpAddress"]
        for reservation in reservations
        for instance in reservation["Instances"]
    }


@pytest.fixture
def fleet(aws_clean) -> dict[str, Any]:
    """A small llmserve fleet in two regions, plus instances the inventory must not list. Returns, per role in
    the test, the instances' private IPs (the inventory's host names)."""
    aws_clean.configure(spot_fleet_delay_s=0)  # the fleet's instances exist as soon as it is requested
    east, west = aws_clean.client("ec2"), aws_clean.client("ec2", region_name="us-west-2")
    subnet = _subnet(east, "10.0.0.0/16", "10.0.1.0/24", "us-east-1a")

    serving_7b = _launch(east, subnet, 2, "g5.xlarge", _tags(**{"llmserve:role": "vllm", "llmserve:model-size": "7b"}))
    spot_13b = _launch(
        east,
        subnet,
        1,
        "g5.12xlarge",
        _tags(**{"llmserve:role": "vllm", "llmserve:model-size": "13b"}),
        InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
    )
    template = east.create_launch_template(
        LaunchTemplateName="llmserve-70b",
        LaunchTemplateData={
            "ImageId": AMI,
            "InstanceType": "p4d.24xlarge",
            "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": subnet}],
            "TagSpecifications": _tags(**{"llmserve:role": "vllm", "llmserve:model-size": "70b"}),
        },
    )["LaunchTemplate"]
    fleet_id = east.request_spot_fleet(
        SpotFleetRequestConfig={
            "IamFleetRole": ROLE_ARN,
            "TargetCapacity": 2,
            "AllocationStrategy": "capacityOptimized",
            "LaunchTemplateConfigs": [
                {
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateId": template["LaunchTemplateId"],
                        "Version": "$Latest",
                    },
                    "Overrides": [{"InstanceType": "p4d.24xlarge", "SubnetId": subnet}],
                }
            ],
        }
    )["SpotFleetRequestId"]
    # A managed host whose size tag was forgotten: listed, and flagged in model_size_untagged.
    unsized = _launch(east, subnet, 1, "g6e.xlarge", _tags(**{"llmserve:role": "vllm"}))
    # Not ours (no llmserve:role tag), and one of ours that is stopped: neither may be listed.
    foreign = _launch(east, subnet, 1, "t3.micro", _tags(Name="bastion", **{"llmserve:model-size": "7b"}))
    stopped = _launch(east, subnet, 1, "g5.xlarge", _tags(**{"llmserve:role": "vllm", "llmserve:model-size": "7b"}))
    east.stop_instances(InstanceIds=stopped)

    west_subnet = _subnet(west, "10.1.0.0/16", "10.1.1.0/24", "us-west-2a")
    # Reached through SSM Session Manager: the tag names the connection's S3 transfer bucket.
    serving_405b = _launch(
        west,
        west_subnet,
        1,
        "p5.48xlarge",
        _tags(**{"llmserve:role": "vllm", "llmserve:model-size": "405b", "llmserve:ssm-bucket": "llmserve-ssm"}),
    )

    ips = _private_ips(east) | _private_ips(west)
    fleet_instances = east.describe_spot_fleet_instances(SpotFleetRequestId=fleet_id)["ActiveInstances"]
    spot_70b = [instance["InstanceId"] for instance in fleet_instances]
    assert len(spot_70b) == 2, f"the spot fleet launched {fleet_instances}"

    def hosts(ids: list[str]) -> set[str]:
        return {ips[instance_id] for instance_id in ids}

    return {
        "fleet_id": fleet_id,
        "ids": {ips[i]: i for i in serving_7b + spot_13b + spot_70b + unsized + serving_405b},
        "7b": hosts(serving_7b),
        "13b": hosts(spot_13b),
        "70b": hosts(spot_70b),
        "405b": hosts(serving_405b),
        "unsized": hosts(unsized),
        "left_out": hosts(foreign + stopped),
    }


def test_inventory_file_is_for_real_aws():
    config = yaml.safe_load(INVENTORY.read_text())

    assert config["plugin"] == "amazon.aws.aws_ec2"
    assert not ENVIRONMENT_ONLY_OPTIONS & set(config), "endpoint and credentials belong in the environment"
    assert config["cache"] is False
    assert config["regions"], "an empty list would query every region"
    assert config["filters"] == {"instance-state-name": "running", "tag-key": "llmserve:role"}
    assert config["hostnames"] == ["private-ip-address"]
    assert config["strict"] is True


def test_graph_groups_by_model_size_role_lifecycle_type_and_region(fleet, aws_clean):
    graph = _parse_graph(_run(aws_clean, "--graph"))

    def hosts_of(group: str) -> set[str]:
        assert f"@{group}" in graph, f"no group {group} in:\n{json.dumps(sorted(graph), indent=1)}"
        return graph[f"@{group}"]

    on_demand = fleet["7b"] | fleet["405b"] | fleet["unsized"]
    spot = fleet["13b"] | fleet["70b"]
    everyone = on_demand | spot
    assert hosts_of("model_size_7b") == fleet["7b"]
    assert hosts_of("model_size_13b") == fleet["13b"]
    assert hosts_of("model_size_70b") == fleet["70b"]
    assert hosts_of("model_size_405b") == fleet["405b"]
    assert hosts_of("model_size_untagged") == fleet["unsized"]
    assert hosts_of("role_vllm") == everyone
    assert hosts_of("lifecycle_spot") == spot
    assert hosts_of("lifecycle_on_demand") == on_demand
    assert hosts_of("instance_type_g5_xlarge") == fleet["7b"]
    assert hosts_of("instance_type_g5_12xlarge") == fleet["13b"]
    assert hosts_of("instance_type_p4d_24xlarge") == fleet["70b"]
    assert hosts_of("instance_type_p5_48xlarge") == fleet["405b"]
    assert hosts_of("instance_type_g6e_xlarge") == fleet["unsized"]
    assert hosts_of("region_us_east_1") == everyone - fleet["405b"]
    assert hosts_of("region_us_west_2") == fleet["405b"]
    fleet_group = "spot_fleet_" + fleet["fleet_id"].replace("-", "_")
    assert hosts_of(fleet_group) == fleet["70b"]
    # Each family hangs under its parent group.
    assert hosts_of("model_sizes") == {f"@model_size_{size}" for size in ("7b", "13b", "70b", "405b", "untagged")}
    assert hosts_of("lifecycles") == {"@lifecycle_spot", "@lifecycle_on_demand"}
    assert hosts_of("spot_fleets") == {f"@{fleet_group}"}
    assert hosts_of("roles") == {"@role_vllm"}
    listed = {member for members in graph.values() for member in members if not member.startswith("@")}
    assert listed == everyone
    assert not fleet["left_out"] & listed


def test_list_sets_connection_address_and_profile_variables(fleet, aws_clean):
    inventory = _plain(json.loads(_run(aws_clean, "--list", "--export")))
    hostvars = inventory["_meta"]["hostvars"]

    assert set(hostvars) == set(fleet["ids"])
    for host, instance_id in fleet["ids"].items():
        variables = hostvars[host]
        assert variables["ansible_host"] == host
        assert variables["ansible_host"] == variables["ec2_private_ip_address"]
        assert variables["ec2_instance_id"] == instance_id
        assert variables["llmserve_host_role"] == "vllm"
        assert "tags" not in variables, "EC2 attributes must arrive prefixed (ec2_tags), not as play keywords"
    for size in ("7b", "13b", "70b", "405b"):
        for host in fleet[size]:
            assert hostvars[host]["llmserve_host_model_size"] == size
    for host in fleet["unsized"]:
        assert hostvars[host]["llmserve_host_model_size"] == ""
    for host in fleet["13b"] | fleet["70b"]:
        assert hostvars[host]["llmserve_host_lifecycle"] == "spot"
        assert hostvars[host]["ec2_instance_lifecycle"] == "spot"
    for host in fleet["7b"] | fleet["405b"]:
        assert hostvars[host]["llmserve_host_lifecycle"] == "on-demand"
        assert "ec2_instance_lifecycle" not in hostvars[host]  # EC2 reports none for on-demand instances
    for host in fleet["70b"]:
        assert hostvars[host]["ec2_tags"][FLEET_TAG] == fleet["fleet_id"]
    assert set(inventory["model_size_7b"]["hosts"]) == fleet["7b"]
    # community.aws.aws_ssm's variables for every host; the connection itself only for the tagged ones.
    for host, instance_id in fleet["ids"].items():
        assert hostvars[host]["ansible_aws_ssm_instance_id"] == instance_id
        assert hostvars[host]["ansible_aws_ssm_region"] == ("us-west-2" if host in fleet["405b"] else "us-east-1")
        assert hostvars[host]["ansible_aws_ssm_bucket_name"] == ("llmserve-ssm" if host in fleet["405b"] else "")
    assert set(inventory["connection_ssm"]["hosts"]) == fleet["405b"]
    group_vars = yaml.safe_load((INVENTORY.parent / "group_vars" / "connection_ssm.yml").read_text())
    assert group_vars == {"ansible_connection": "community.aws.aws_ssm"}


def test_groups_combine_in_host_patterns(fleet, aws_clean):
    # The pattern a spot interruption drill or a 70B rollout limits itself to.
    output = _run(aws_clean, "model_size_70b:model_size_13b:&lifecycle_spot", "--list-hosts", tool="ansible")

    listed = {line.strip() for line in output.splitlines()[1:] if line.strip()}
    assert output.splitlines()[0].strip() == "hosts (3):"
    assert listed == fleet["70b"] | fleet["13b"]
