"""A fleet in the local AWS becomes bench hosts that the dynamic inventory reaches (issue 13, "proven on the bench").

A Spot Fleet with an on-demand base (1 on-demand + 2 Spot over two instance types, through boto3 and the local AWS's
spot fleet extension, tests/bench/moto_ext/ec2.py) -> tests/bench/fleet_launcher.py, run as its daemon, starts one
systemd host container per instance -> `inventories/aws_ec2.yml` with the bench overlay `inventories/bench_fleet.yml`
lists them in their groups and an ad-hoc ping reaches each through community.docker.docker, and each host's own
instance metadata (the URL the overlay gives it) names its instance -> a resize to 2 removes the container and the
metadata of the instance the fleet terminated -> a cancel leaves no instance, no container and no metadata server.
A plain RunInstances instance without the llmserve:role tag (a bastion, say) never gets a container.
Needs the bench image (tests/bench/host_image.sh) and the Docker daemon (tests/bench/dockerd.sh).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bench.fleet_launcher import IMDS_PORT_BASE, VLLM_PORT_BASE, Containers, container_name, port_offset
from tests.bench.spot_bench import wait_until
from tests.integration.test_imds_emulator import get, token
from tests.integration.test_inventory_aws_ec2 import AMI, FLEET_TAG, ROLE_ARN, _plain, _run

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = REPO_ROOT / "tests" / "bench" / "fleet_launcher.py"
# Read after inventories/aws_ec2.yml (which _run always passes first): changes only how its hosts are reached.
OVERLAY = ["-i", str(REPO_ROOT / "inventories" / "bench_fleet.yml")]
LAUNCHER_INTERVAL_S = 0.5
FIRST_PASS_TIMEOUT_S = 60.0  # boto3 import, the bench image lookup, a first DescribeInstances
# Deadlines, not sleeps: on a quiet 2-core machine the hosts boot in ~3 s and go in ~1 s; other jobs on the same
# cores (load 10-17 measured) stretch that tenfold.
HOSTS_TIMEOUT_S = 120.0  # three `docker run`s and systemd booting in each
GONE_TIMEOUT_S = 60.0  # one launcher interval, then systemd's shutdown in the container
DOCKER_POLL_S = 0.5  # each poll runs docker commands: not at wait_until's default 20 per second


@pytest.fixture
def launcher(aws_clean, tmp_path) -> Any:
    """fleet_launcher.py `watch` as a daemon of its own on the local AWS; its containers removed afterwards."""
    containers = Containers(f"pytest-{os.getpid()}")
    ready, log = tmp_path / "launcher.ready", tmp_path / "launcher.log"
    command = [sys.executable, str(LAUNCHER), "watch", "--endpoint-url", aws_clean.endpoint_url]
    command += ["--launcher-id", containers.launcher_id, "--interval", str(LAUNCHER_INTERVAL_S)]
    command += ["--ready-file", str(ready)]
    with log.open("wb") as output:
        daemon = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ready.exists() or daemon.poll() is not None, FIRST_PASS_TIMEOUT_S, "the first pass")
        assert daemon.poll() is None, f"the launcher exited with {daemon.returncode}:\n{log.read_text()}"
        yield containers
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(10)
        containers.remove_all()  # whatever the test did, no host container outlives it


def _fleet(ec2) -> str:
    """1 on-demand + 2 Spot over g5.xlarge and g5.2xlarge in two zones, from a template carrying the tags."""
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{index}.0/24", AvailabilityZone=f"us-east-1{zone}")["Subnet"][
            "SubnetId"
        ]
        for index, zone in ((1, "a"), (2, "b"))
    ]
    tags = {"llmserve:role": "vllm", "llmserve:model-size": "7b"}
    template = ec2.create_launch_template(
        LaunchTemplateName="llmserve-7b",
        LaunchTemplateData={
            "ImageId": AMI,
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": key, "Value": value} for key, value in tags.items()]}
            ],
        },
    )["LaunchTemplate"]
    return ec2.request_spot_fleet(
        SpotFleetRequestConfig={
            "IamFleetRole": ROLE_ARN,
            "TargetCapacity": 3,
            "OnDemandTargetCapacity": 1,
            "AllocationStrategy": "diversified",
            "LaunchTemplateConfigs": [
                {
                    "LaunchTemplateSpecification": {"LaunchTemplateId": template["LaunchTemplateId"], "Version": "1"},
                    "Overrides": [
                        {"InstanceType": "g5.xlarge", "SubnetId": subnets[0]},
                        {"InstanceType": "g5.2xlarge", "SubnetId": subnets[1]},
                    ],
                }
            ],
        }
    )["SpotFleetRequestId"]


def _running(ec2, **filters: list[str]) -> dict[str, dict[str, Any]]:
    filters = {"instance-state-name": ["running"], **filters}
    pages = ec2.describe_instances(Filters=[{"Name": name, "Values": values} for name, values in filters.items()])
    return {i["InstanceId"]: i for reservation in pages["Reservations"] for i in reservation["Instances"]}


def _fleet_instances(ec2, fleet_id: str, count: int) -> dict[str, dict[str, Any]]:
    """The fleet's running instances once there are `count` of them, else {}."""
    found = _running(ec2, **{f"tag:{FLEET_TAG}": [fleet_id]})
    return found if len(found) == count else {}


def _metadata_of(url: str) -> dict[str, str] | None:
    """What the host at this IMDS URL says it is, or None when nothing serves there."""
    try:
        imds_token = token(url)
    except OSError:
        return None
    return {
        key: get(url, f"/latest/meta-data/{path}", imds_token)[2]
        for key, path in (("instance_id", "instance-id"), ("lifecycle", "instance-life-cycle"))
    }


def test_fleet_instances_become_hosts_the_dynamic_inventory_reaches(aws_clean, launcher):
    ec2 = aws_clean.client("ec2")
    bastion = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    fleet_id = _fleet(ec2)
    fleet_group = "spot_fleet_" + fleet_id.replace("-", "_")

    fleet = wait_until(lambda: _fleet_instances(ec2, fleet_id, count=3), 10, "the fleet's 3 instances")
    booted = f"a booted host for each of {sorted(fleet)}"
    wait_until(lambda: launcher.booted(set(fleet)), HOSTS_TIMEOUT_S, booted, DOCKER_POLL_S)
    assert bastion["InstanceId"] not in launcher.instance_ids()  # no llmserve:role tag, not in the inventory

    inventory = _plain(json.loads(_run(aws_clean, *OVERLAY, "--list")))
    hostvars = inventory["_meta"]["hostvars"]
    by_instance = {variables["ec2_instance_id"]: host for host, variables in hostvars.items()}
    assert set(by_instance) == set(fleet)
    on_demand = {by_instance[i] for i, instance in fleet.items() if "InstanceLifecycle" not in instance}
    spot = {by_instance[i] for i, instance in fleet.items() if instance.get("InstanceLifecycle") == "spot"}
    assert (len(on_demand), len(spot)) == (1, 2)
    assert set(inventory["model_size_7b"]["hosts"]) == on_demand | spot
    assert set(inventory["lifecycle_on_demand"]["hosts"]) == on_demand
    assert set(inventory["lifecycle_spot"]["hosts"]) == spot
    assert set(inventory[fleet_group]["hosts"]) == on_demand | spot
    assert {fleet[i]["InstanceType"] for i in fleet} == {"g5.xlarge", "g5.2xlarge"}
    for instance_id, host in by_instance.items():
        assert hostvars[host]["ansible_connection"] == "community.docker.docker"
        assert hostvars[host]["ansible_host"] == container_name(instance_id)
    # One network for all hosts: each its own ports, as the overlay composes them and the launcher serves them.
    offsets = {host: port_offset(hostvars[host]["ec2_private_ip_address"]) for host in by_instance.values()}
    assert len(set(offsets.values())) == 3
    for host, offset in offsets.items():
        assert hostvars[host]["vllm_service_port"] == VLLM_PORT_BASE + offset
        assert hostvars[host]["llmserve_bench_imds_url"] == f"http://127.0.0.1:{IMDS_PORT_BASE + offset}"

    metadata_urls = {i: hostvars[host]["llmserve_bench_imds_url"] for i, host in by_instance.items()}
    # The launcher serves metadata right after it starts the containers, in the same pass.
    wait_until(lambda: all(map(_metadata_of, metadata_urls.values())), 10, "every host's metadata", DOCKER_POLL_S)
    for instance_id, url in metadata_urls.items():
        lifecycle = "spot" if by_instance[instance_id] in spot else "on-demand"
        assert _metadata_of(url) == {"instance_id": instance_id, "lifecycle": lifecycle}, url

    pinged = _run(aws_clean, *OVERLAY, "all", "-m", "ansible.builtin.ping", "--one-line", tool="ansible")
    answered = {line.split(" | ")[0] for line in pinged.splitlines() if " | SUCCESS => " in line}
    assert answered == on_demand | spot, pinged

    ec2.modify_spot_fleet_request(SpotFleetRequestId=fleet_id, TargetCapacity=2)
    remaining = set(_fleet_instances(ec2, fleet_id, count=2))
    assert remaining < set(fleet)
    left = f"only hosts {sorted(remaining)}"
    wait_until(lambda: launcher.instance_ids() == remaining, GONE_TIMEOUT_S, left, DOCKER_POLL_S)
    (gone,) = set(fleet) - remaining
    assert _metadata_of(metadata_urls[gone]) is None
    assert _metadata_of(metadata_urls[next(iter(remaining))]) is not None

    ec2.cancel_spot_fleet_requests(SpotFleetRequestIds=[fleet_id], TerminateInstances=True)
    ec2.terminate_instances(InstanceIds=[bastion["InstanceId"]])
    wait_until(lambda: not launcher.instance_ids(), GONE_TIMEOUT_S, "no host container left", DOCKER_POLL_S)
    assert _running(ec2) == {}
    assert all(_metadata_of(url) is None for url in metadata_urls.values())
