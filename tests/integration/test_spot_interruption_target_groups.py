"""spot_interruption's managed target groups (spot_interruption_manage_target_groups, for fleets without
network.yml) against the local AWS: the role's control-node tasks make each group health-checked on /health with
a deregistration delay under the 2-minute Spot notice, a second run changes nothing, and a run never touches the
targets the hosts registered themselves (the registration unit owns them).

The hosts' side (watcher, registration unit, drill) runs on the fleet scenario's hosts (tests/fleet), against the
target group network.yml makes; this file covers the role's other source of target groups.
"""

import json
import re
import sys

from tests.support.playbook import ansible_env, run_playbook

COMMAND_TIMEOUT_S = 180
VLLM_PORT = 8000
GROUP = "llmserve-managed"
# The role's tasks that make the groups, run as the role runs them: once, on the control node.
PLAYBOOK = """
- name: Managed target groups
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The role's target groups
      ansible.builtin.include_role:
        name: llmserve.aws.spot_interruption
        tasks_from: alb.yml
    - name: Show what the role serves behind
      ansible.builtin.debug:
        msg: "ARNS={{ _spot_interruption_managed_target_group_arns | join(' ') }}"
"""


def _converge(aws, tmp_path, vpc_id):
    playbook = tmp_path / "managed_groups.yml"
    playbook.write_text(PLAYBOOK)
    extra_vars = {
        "spot_interruption_target_groups": [{"name": GROUP, "vpc_id": vpc_id}],
        "spot_interruption_vllm_port": VLLM_PORT,
        "spot_interruption_deregistration_delay": 60,
        "spot_interruption_aws_region": aws.region,
        "spot_interruption_aws_endpoint_url": aws.endpoint_url,
    }
    completed = run_playbook(
        "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
        "-e", json.dumps(extra_vars), str(playbook),
        env=ansible_env(drop_prefixes=("AWS_",), **aws.env), timeout_s=COMMAND_TIMEOUT_S,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    changed = int(re.search(r"localhost\s*:.*changed=(\d+)", completed.stdout).group(1))
    (arns,) = re.findall(r"ARNS=([^\"\n]*)", completed.stdout)
    return changed, arns.split()


def test_managed_group_health_checks_drains_under_the_notice_and_leaves_targets_alone(aws_clean, tmp_path):
    ec2, elbv2 = aws_clean.client("ec2"), aws_clean.client("elbv2")
    vpc_id = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]

    changed, arns = _converge(aws_clean, tmp_path, vpc_id)

    assert changed == 1
    (group,) = elbv2.describe_target_groups(Names=[GROUP])["TargetGroups"]
    assert arns == [group["TargetGroupArn"]]
    assert (group["Protocol"], group["Port"], group["TargetType"], group["VpcId"]) == ("HTTP", VLLM_PORT, "instance",
                                                                                       vpc_id)
    assert (group["HealthCheckPath"], group["HealthCheckPort"], group["Matcher"]["HttpCode"]) == ("/health",
                                                                                                  "traffic-port", "200")
    assert group["HealthCheckIntervalSeconds"] == 10
    attributes = {item["Key"]: item["Value"] for item in
                  elbv2.describe_target_group_attributes(TargetGroupArn=group["TargetGroupArn"])["Attributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "60"

    # A host registers itself (its registration unit); the role's next run keeps it and changes nothing.
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    elbv2.register_targets(TargetGroupArn=group["TargetGroupArn"], Targets=[{"Id": instance, "Port": VLLM_PORT}])

    changed, arns = _converge(aws_clean, tmp_path, vpc_id)

    assert changed == 0 and arns == [group["TargetGroupArn"]]
    health = elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
    assert [(item["Target"]["Id"], item["Target"]["Port"]) for item in health] == [(instance, VLLM_PORT)]
