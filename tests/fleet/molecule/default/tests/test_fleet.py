"""playbooks/fleet.yml on the bench: its instances are booted hosts the dynamic inventory reaches; a resize to 2 takes
one away, absent takes them all. The tests run in file order; the last two change the fleet through fleet.yml
(converge.yml re-run with extra vars, as an operator would run it)."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import boto3

SCENARIO = Path(__file__).resolve().parents[1]
REPO_ROOT = SCENARIO.parents[3]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from tests.bench.fleet_launcher import Containers  # noqa: E402
from tests.bench.spot_bench import wait_until  # noqa: E402  (the bench's one polling wait)

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INPUTS = json.loads((EPHEMERAL / "fleet_inputs.json").read_text())
AWS_ENV = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:18410",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
# The production inventory, then the bench overlay that changes only how its hosts are reached.
INVENTORY = ["-i", str(REPO_ROOT / "inventories" / "aws_ec2.yml")]
INVENTORY += ["-i", str(REPO_ROOT / "inventories" / "bench_fleet.yml")]
FLEET_TAG = "aws:ec2spot:fleet-request-id"
HOSTS_TIMEOUT_S = 120.0  # docker run and systemd boot of three hosts on a shared 2-core machine
GONE_TIMEOUT_S = 60.0  # one launcher interval, then systemd's shutdown
POLL_S = 0.5
COMMAND_TIMEOUT_S = 300

CONTAINERS = Containers(INPUTS["launcher_id"])


def ec2():
    return boto3.client("ec2", endpoint_url=AWS_ENV["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip


def fleet_instances() -> dict[str, dict]:
    pages = ec2().describe_instances(
        Filters=[{"Name": "tag-key", "Values": [FLEET_TAG]}, {"Name": "instance-state-name", "Values": ["running"]}]
    )
    return {i["InstanceId"]: i for reservation in pages["Reservations"] for i in reservation["Instances"]}


def run(tool: str, *args: str) -> str:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(AWS_ENV, ANSIBLE_NOCOLOR="true")
    if "-i" in args:  # an inventory source no plugin can parse is an error, not an empty inventory
        env.update(ANSIBLE_INVENTORY_UNPARSED_FAILED="true", ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true")
    completed = subprocess.run(
        [str(Path(sys.executable).parent / tool), *args],
        cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    output = f"{completed.stdout[-4000:]}\n{completed.stderr}"
    assert completed.returncode == 0, f"{tool} {shlex.join(args)} failed:\n{output}"
    return completed.stdout


def rerun_fleet_playbook(**extra_vars: object) -> None:
    run("ansible-playbook", str(SCENARIO / "converge.yml"), "-e", json.dumps(extra_vars))


def test_each_fleet_instance_is_a_booted_host():
    instances = fleet_instances()
    assert len(instances) == 3, instances

    booted = f"booted hosts for {sorted(instances)}"
    wait_until(lambda: CONTAINERS.booted(set(instances)), HOSTS_TIMEOUT_S, booted, POLL_S)


def test_dynamic_inventory_groups_and_reaches_the_hosts():
    instances = fleet_instances()
    (fleet_id,) = {tag["Value"] for i in instances.values() for tag in i["Tags"] if tag["Key"] == FLEET_TAG}

    inventory = json.loads(run("ansible-inventory", *INVENTORY, "--list"))

    hosts = {i["PrivateIpAddress"]: i for i in instances.values()}
    on_demand = {ip for ip, i in hosts.items() if "InstanceLifecycle" not in i}
    spot = {ip for ip, i in hosts.items() if i.get("InstanceLifecycle") == "spot"}
    assert (len(on_demand), len(spot)) == (1, 2)
    assert {i["InstanceType"] for i in instances.values()} == {"g5.xlarge", "g5.2xlarge"}
    assert set(inventory["model_size_cpu"]["hosts"]) == set(hosts)
    assert set(inventory["lifecycle_on_demand"]["hosts"]) == on_demand
    assert set(inventory["lifecycle_spot"]["hosts"]) == spot
    assert set(inventory["spot_fleet_" + fleet_id.replace("-", "_")]["hosts"]) == set(hosts)

    pinged = run("ansible", *INVENTORY, "model_size_cpu", "-m", "ansible.builtin.ping", "--one-line")
    answered = {line.split(" | ")[0] for line in pinged.splitlines() if " | SUCCESS => " in line}
    assert answered == set(hosts), pinged


def test_resize_to_two_takes_one_host_away():
    before = set(fleet_instances())

    rerun_fleet_playbook(llmserve_fleet_target_capacity=2)

    after = set(fleet_instances())
    assert len(after) == 2 and after < before
    wait_until(lambda: CONTAINERS.instance_ids() == after, GONE_TIMEOUT_S, f"only hosts {sorted(after)}", POLL_S)


def test_absent_leaves_no_instance_and_no_host():
    rerun_fleet_playbook(llmserve_fleet_state="absent")

    assert fleet_instances() == {}
    wait_until(lambda: not CONTAINERS.instance_ids(), GONE_TIMEOUT_S, "no host container left", POLL_S)
