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


def _fleet(aws, extra_vars, *options, expect_rc=0):
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "ANSIBLE_"))}
    env.update(aws.env)
    env.update({"ANSIBLE_COLLECTIONS_PATH": str(REPO / ".collections"), "ANSIBLE_NOCOLOR": "true",
                "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
                "ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/fleet.yml", "-e", json.dumps(extra_vars),
         *options],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL,
        check=False,
    )
    out = completed.stdout + completed.stderr
    assert completed.returncode == expect_rc, out
    changed = re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", out)
    return (int(changed.group(1)) if changed else None), out


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


AWX_KEY = "7f3c9a1be04d4e6b9c2a"  # a stand-in host_config_key (AWX makes them of hex digits)


class AwxCallbackStandIn:
    """AWX's provisioning callback endpoint on loopback (POST /api/v2/job_templates/42/callback/), answering each
    request with the next of `statuses`: 400 is AWX's answer while the new host is not yet in the inventory, 201
    once it launched the job."""

    def __init__(self, statuses):
        import http.server
        import threading

        self.statuses, self.bodies = list(statuses), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                outer.bodies.append((self.path, self.headers.get("Content-Type"), json.loads(self.rfile.read(length))))
                self.send_response(outer.statuses.pop(0) if outer.statuses else 500)
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/v2/job_templates/42/callback/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_exc):
        self.server.shutdown()
        self.server.server_close()


def _first_boot(user_data: str) -> subprocess.CompletedProcess:
    """What cloud-init does with the user data on the first boot: run it (here as a plain bash script)."""
    return subprocess.run(["bash", "-c", user_data], capture_output=True, text=True, timeout=120, check=False)


def test_the_launch_template_calls_awx_back_with_the_key_from_aws_and_never_prints_it(network):
    import base64

    aws, extra_vars = network
    aws.client("secretsmanager").create_secret(Name="llmserve/awx-callback", SecretString=AWX_KEY)
    with AwxCallbackStandIn([400, 201]) as awx:
        callback = {"llmserve_fleet_awx_callback_url": awx.url,
                    "llmserve_fleet_awx_host_config_key_secret": "llmserve/awx-callback",
                    "llmserve_fleet_awx_callback_timeout": 60, "llmserve_fleet_awx_callback_interval": 1}
        changed, out = _fleet(aws, dict(extra_vars, **callback), "-vvv")
        assert changed > 0 and AWX_KEY not in out

        ec2 = aws.client("ec2")
        (version,) = ec2.describe_launch_template_versions(LaunchTemplateName="llmserve-7b")["LaunchTemplateVersions"]
        user_data = base64.b64decode(version["LaunchTemplateData"]["UserData"]).decode()
        assert user_data.startswith("#!/bin/bash\n") and awx.url in user_data
        assert _fleet(aws, dict(extra_vars, **callback))[0] == 0  # the same user data: no new template version

        booted = _first_boot(user_data)
        assert booted.returncode == 0, booted.stderr
        assert "AWX callback attempt 1 got HTTP 400; retrying in 1 s" in booted.stdout
        assert "accepted on attempt 2" in booted.stdout
        assert awx.bodies == [("/api/v2/job_templates/42/callback/", "application/json",
                               {"host_config_key": AWX_KEY})] * 2
    with AwxCallbackStandIn([403]) as refusing:
        refused = _first_boot(user_data.replace(awx.url, refusing.url))
        assert refused.returncode == 1 and "refused (403)" in refused.stderr
    _fleet(aws, {"llmserve_profile": "7b", "llmserve_fleet_state": "absent", "llmserve_fleet_wait_sleep": 1})


@pytest.mark.parametrize(
    ("callback", "named"),
    [
        ({"llmserve_fleet_awx_host_config_key": AWX_KEY}, "never as a\nliteral"),
        ({"llmserve_fleet_awx_callback_url": "http://awx.example.com/api/v2/job_templates/42/callback/"}, "https://"),
        ({"llmserve_fleet_awx_callback_url": "https://awx.example.com/api/v2/job_templates/42/callback/\nx"}, "https://"),
        ({"llmserve_fleet_awx_callback_url": "https://awx.example.com/api/v2/job_templates/x/callback/"}, "https://"),
        ({"llmserve_fleet_awx_host_config_key_parameter": "/llmserve/awx"}, "exactly one of"),
        ({"llmserve_fleet_awx_host_config_key_secret": "llmserve/none"}, "is missing, empty or not"),
        ({"llmserve_fleet_awx_callback_timeout": 5}, "60 s or more"),
    ],
)
def test_bad_callback_inputs_fail_before_any_change(network, callback, named):
    aws, extra_vars = network
    aws.client("secretsmanager").create_secret(Name="llmserve/awx-callback", SecretString=AWX_KEY)
    inputs = {"llmserve_fleet_awx_callback_url": "https://awx.example.com/api/v2/job_templates/42/callback/",
              "llmserve_fleet_awx_host_config_key_secret": "llmserve/awx-callback", **callback}
    out = _fleet(aws, dict(extra_vars, **inputs), expect_rc=2)[1]
    assert named.replace("\n", " ") in " ".join(out.split()), out[-3000:]
    assert AWX_KEY not in out
    assert aws.client("ec2").describe_launch_templates()["LaunchTemplates"] == []
