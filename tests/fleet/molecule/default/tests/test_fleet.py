"""playbooks/fleet.yml on the bench, then the fleet served through the dynamic inventory (issue 13), and the
spot_interruption role on its hosts.

Its instances (one on-demand, one Spot) are booted hosts that inventories/aws_ec2.yml (+ the bench overlay) reaches;
serve.yml serves the CPU profile on both and each registers in the target group; the watcher and registration units
run unprivileged and hardened, and read IMDS with tokens only; a re-run changes nothing; rolling_update.yml changes
them one at a time while clients send through the ALB (network.yml's, served by the bench's HAProxy stand-in) and
none fails, each host's registration unit deregistering before its vLLM stops and registering once it serves again;
drill_spot_interruption.yml drills the Spot host while other clients send through the ALB: every stream on it
finishes, the watcher deregisters in the poll cycle that saw the notice and stops vLLM after the last request, and
no request through the ALB fails; a start request from the watcher starts vLLM again; a resize to 1 takes that host
away. Then the boot path (issue 14), with no Ansible run: bake_image.yml makes an AMI of the host left (the
launcher commits its container, the instance store left out); an EC2 stop and start (blank instance store, the
model changed in S3 meanwhile) syncs the new version before vLLM starts and the host serves behind the ALB again; a
boot with the hosts' path to S3 cut leaves it stopped and out of the target group, saying why; absent takes the
fleet; a new instance from the baked AMI syncs, serves and registers on its own. The first serve runs at -vvv
and a leak check looks for the API key in its output, the hosts' journals, units and command lines, and the ALB's
logs. The tests run in file order and build on each other, as an operator's runbook does.
"""

import functools
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import yaml

SCENARIO = Path(__file__).resolve().parents[1]
REPO_ROOT = SCENARIO.parents[3]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from tests.bench.alb_client import AlbClient  # noqa: E402
from tests.bench.alb_load import AlbLoad, chat_request  # noqa: E402
from tests.bench.fleet_launcher import (  # noqa: E402
    IMDS_PORT_BASE, VLLM_PORT_BASE, Containers, container_name, port_offset)
from tests.bench import spot_bench  # noqa: E402  (the drill's helpers: one reading of IMDS's request log)
from tests.bench.spot_bench import wait_until  # noqa: E402  (the bench's one polling wait)
from tests.support.leaks import describe, find_leaks, host_sources  # noqa: E402

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
HOSTS_TIMEOUT_S = 120.0  # docker run and systemd boot of the hosts on a shared 2-core machine
GONE_TIMEOUT_S = 60.0  # one launcher interval, then systemd's shutdown
POLL_S = 0.5
COMMAND_TIMEOUT_S = 300
PLAYBOOK_TIMEOUT_S = 1200  # serve on hosts sharing two cores: vLLM's cold starts dominate
SERVED_MODEL = "smollm2-135m-instruct"
# The CPU profile's vLLM runs this many sequences at once (--max-num-seqs): the drill's streams, all in flight.
CONCURRENCY = yaml.safe_load((REPO_ROOT / "playbooks" / "vars" / "profiles" / "cpu.yml").read_text())[
    "llmserve_profile_concurrency"]
# The spot_interruption role's paths and units on every host (its defaults).
WATCHER = "/opt/llmserve-spot-watcher/llmserve_spot_watcher.py"
WATCHER_PYTHON = "/opt/llmserve-spot-watcher/venv/bin/python"
WATCHER_CONFIG = "/etc/llmserve/spot-watcher.json"
WATCHER_UNITS = ("llmserve-spot-watcher.service", "llmserve-vllm-stop.service", "llmserve-vllm-start.service",
                 "llmserve-alb-registration.service")
BOOT_SYNC_UNIT = "llmserve-model-sync.service"  # model_sync's boot path, root without capabilities
BOOT_SYNC_KEYS = "/etc/llmserve/model-sync-aws.json"  # where the role keeps keys it was given
MAX_EXPOSURE = 2.0  # systemd-analyze security's score of each of them
# The bench's endpoints for the roles, then this scenario's (the weights, the target group, the profile).
SERVE_VARS = ["-e", "@" + str(REPO_ROOT / "inventories" / "local" / "group_vars" / "llmserve_bench.yml")]
SERVE_VARS += ["-e", "@" + str(SCENARIO / "vars" / "serve.yml")]

CONTAINERS = Containers(INPUTS["launcher_id"])


def aws(service: str):
    return boto3.client(service, endpoint_url=AWS_ENV["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip


@functools.cache
def api_key() -> str:
    """The key vLLM requires on /v1, from the local Secrets Manager where prepare made it (never printed)."""
    return aws("secretsmanager").get_secret_value(SecretId=INPUTS["llmserve_api_key_secret"])["SecretString"]


def api_headers() -> dict[str, str]:
    """A JSON request to /v1 with the API key."""
    return {"Content-Type": "application/json", "Authorization": "Bearer " + api_key()}


def alb() -> AlbClient:
    """A client of the fleet's ALB (network.yml's HTTPS listener, served by the bench's HAProxy stand-in)."""
    return AlbClient.for_listener(EPHEMERAL / "alb" / "listeners.json", INPUTS["llmserve_network_listener_arns"]["https"],
                                  Path(INPUTS["ca_file"]))


def alb_load(max_tokens: int = 1, workers: int = 1, pause_s: float = 1.0) -> AlbLoad:
    return AlbLoad(alb(), body=chat_request("Say OK.", SERVED_MODEL, max_tokens), workers=workers,
                   headers=api_headers(), pause_s=pause_s)


def fleet_instances() -> dict[str, dict]:
    pages = aws("ec2").describe_instances(
        Filters=[{"Name": "tag-key", "Values": [FLEET_TAG]}, {"Name": "instance-state-name", "Values": ["running"]}]
    )
    return {i["InstanceId"]: i for reservation in pages["Reservations"] for i in reservation["Instances"]}


def run(tool: str, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(AWS_ENV, ANSIBLE_NOCOLOR="true")
    if "-i" in args:  # an inventory source no plugin can parse is an error, not an empty inventory
        env.update(ANSIBLE_INVENTORY_UNPARSED_FAILED="true", ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true")
    completed = subprocess.run(
        [str(Path(sys.executable).parent / tool), *args],
        cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s,
        check=False,
    )  # fmt: skip
    output = f"{completed.stdout[-4000:]}\n{completed.stderr}"
    assert completed.returncode == 0, f"{tool} {shlex.join(args)} failed:\n{output}"
    return completed.stdout


def rerun_fleet_playbook(**extra_vars: object) -> None:
    run("ansible-playbook", str(SCENARIO / "converge.yml"), "-e", json.dumps(extra_vars))


def test_each_fleet_instance_is_a_booted_host():
    instances = fleet_instances()
    assert len(instances) == 2, instances

    booted = f"booted hosts for {sorted(instances)}"
    wait_until(lambda: CONTAINERS.booted(set(instances)), HOSTS_TIMEOUT_S, booted, POLL_S)


def test_dynamic_inventory_groups_and_reaches_the_hosts():
    instances = fleet_instances()
    (fleet_id,) = {tag["Value"] for i in instances.values() for tag in i["Tags"] if tag["Key"] == FLEET_TAG}

    inventory = json.loads(run("ansible-inventory", *INVENTORY, "--list"))

    hosts = {i["PrivateIpAddress"]: i for i in instances.values()}
    on_demand = {ip for ip, i in hosts.items() if "InstanceLifecycle" not in i}
    spot = {ip for ip, i in hosts.items() if i.get("InstanceLifecycle") == "spot"}
    assert (len(on_demand), len(spot)) == (1, 1)
    assert {i["InstanceType"] for i in instances.values()} <= {"g5.xlarge", "g5.2xlarge"}
    assert set(inventory["model_size_cpu"]["hosts"]) == set(hosts)
    assert set(inventory["lifecycle_on_demand"]["hosts"]) == on_demand
    assert set(inventory["lifecycle_spot"]["hosts"]) == spot
    assert set(inventory["spot_fleet_" + fleet_id.replace("-", "_")]["hosts"]) == set(hosts)

    pinged = run("ansible", *INVENTORY, "model_size_cpu", "-m", "ansible.builtin.ping", "--one-line")
    answered = {line.split(" | ")[0] for line in pinged.splitlines() if " | SUCCESS => " in line}
    assert answered == set(hosts), pinged


def vllm_port(instance: dict) -> int:
    """Where the host of this instance serves (the overlay's vllm_service_port)."""
    return VLLM_PORT_BASE + port_offset(instance["PrivateIpAddress"])


def target_states() -> dict[tuple[str, int], str]:
    """{(instance id, port): state} of every target the fleet's target group lists."""
    (arn,) = INPUTS["llmserve_target_group_arns"]
    answer = aws("elbv2").describe_target_health(TargetGroupArn=arn)
    return {
        (item["Target"]["Id"], item["Target"]["Port"]): item["TargetHealth"]["State"]
        for item in answer["TargetHealthDescriptions"]
    }


def healthy_ports() -> set[int]:
    return {port for (_instance, port), state in target_states().items() if state == "healthy"}


def ask(port: int, question: str, max_tokens: int, timeout_s: float = 60) -> str:
    request = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
               "temperature": 0}  # fmt: skip
    with urllib.request.urlopen(
        urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(request).encode(),
                               headers=api_headers()),
        timeout=timeout_s,
    ) as response:  # fmt: skip
        return json.load(response)["choices"][0]["message"]["content"]


def serve(playbook: str, *options: str, **extra_vars: object) -> str:
    return run(
        "ansible-playbook", *options, *INVENTORY, str(REPO_ROOT / "playbooks" / playbook), *SERVE_VARS,
        "-e", json.dumps({"llmserve_serve_size": "cpu", **extra_vars}), timeout_s=PLAYBOOK_TIMEOUT_S,
    )  # fmt: skip


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP of an ansible-playbook run: {host: {ok: N, changed: N, ...}}, the fleet's hosts only (the survey
    guard's play also runs on localhost)."""
    tail = output[output.rindex("PLAY RECAP"):]
    return {
        match.group(1): {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(2))}
        for match in re.finditer(r"^(\S+)\s+: (.*)$", tail, re.MULTILINE)
        if match.group(1) != "localhost"
    }


def test_serve_on_every_host_through_the_dynamic_inventory():
    instances = fleet_instances()
    output = serve("serve.yml", "-vvv")
    assert set(recap(output)) == {i["PrivateIpAddress"] for i in instances.values()}
    for instance in instances.values():
        answer = ask(vllm_port(instance), "What is the capital of France?", 24)
        print(f"{instance['InstanceId']} ({instance['InstanceType']}): {answer!r}")
        assert "Paris" in answer
    # Each host's registration unit put it in the target group once vLLM answered /health; the ALB's health checks
    # (the stand-in's, reported to the local AWS) found it healthy.
    wait_until(lambda: target_states() == {(i["InstanceId"], vllm_port(i)): "healthy" for i in instances.values()},
               HOSTS_TIMEOUT_S, "every host healthy behind the ALB", POLL_S)
    status, _headers, body = alb().request(
        "POST", "/v1/chat/completions", chat_request("What is the capital of France?", SERVED_MODEL, 24),
        api_headers())
    assert status == 200 and "Paris" in json.loads(body)["choices"][0]["message"]["content"], (status, body[:300])
    assert alb().request("GET", "/metrics")[0] == 404

    # The leak check over that -vvv run: the key in none of the play output, the hosts' journals, unit files,
    # systemctl show, command lines, or the load balancer's logs.
    sources = {"play output (-vvv)": output}
    for instance_id in instances:
        sources.update(host_sources(lambda script, name=container_name(instance_id): docker_exec(name, script),
                                    ["vllm.service", "llmserve-spot-watcher.service",
                                     "llmserve-alb-registration.service"], instance_id))
    for log in ("access.log", "haproxy.log"):
        sources["ALB stand-in " + log] = (EPHEMERAL / "alb" / log).read_text() if (EPHEMERAL / "alb" / log).exists() else ""
    leaks = find_leaks({"API key": api_key()}, sources)
    print(f"leak check: {len(sources)} sources, {sum(len(text) for text in sources.values())} characters")
    assert not leaks, describe(leaks)


def imds_url(instance: dict) -> str:
    """The instance's own IMDS emulator (the launcher's), with its control API under /_emulator."""
    return f"http://127.0.0.1:{IMDS_PORT_BASE + port_offset(instance['PrivateIpAddress'])}"


def journal(container: str, unit: str, since: float) -> str:
    """What a unit logged since an epoch second, message only."""
    return docker_exec(container, f"journalctl --unit {unit} --output cat --no-pager --since @{int(since)}")


def journal_events(container: str, unit: str, since: float) -> list[str]:
    """The `event=NAME` steps a unit logged since an epoch second."""
    return re.findall(r" event=(\S+)", journal(container, unit, since))


def spot_instance() -> dict:
    (spot,) = [i for i in fleet_instances().values() if i.get("InstanceLifecycle") == "spot"]
    return spot


def test_watcher_and_registration_units_run_unprivileged_hardened_and_imdsv2_only():
    for instance in fleet_instances().values():
        container = container_name(instance["InstanceId"])
        # The boot path ran when serve.yml started vLLM, and found the model the play had just synced.
        assert unit_value(container, BOOT_SYNC_UNIT, "ActiveState") == "active"
        assert "up to date: version=" in journal(container, BOOT_SYNC_UNIT, 0)
        assert unit_value(container, BOOT_SYNC_UNIT, "CapabilityBoundingSet") == ""
        # S3 credentials come from the instance profile (the host's IMDS), as on EC2: no keys kept on the host, so
        # none in the images baked from it.
        assert docker_exec(container, f"test -e {BOOT_SYNC_KEYS} && echo kept || echo none").strip() == "none"
        active = docker_exec(container, "systemctl is-active llmserve-spot-watcher.service llmserve-vllm-stop.path "
                                        "llmserve-vllm-start.path vllm.service; systemctl is-enabled "
                                        "llmserve-spot-watcher.service")  # fmt: skip
        assert active.split() == ["active"] * 4 + ["enabled"], active
        registration = docker_exec(container,
                                   "systemctl show llmserve-alb-registration.service -p ActiveState,SubState")
        assert sorted(registration.split()) == ["ActiveState=active", "SubState=exited"], registration
        # The watcher: its own user, no capabilities, ahead of vLLM for the CPU (Nice in its cgroup, CPUWeight
        # across units; vLLM's unit keeps 100).
        status = docker_exec(container, "cat /proc/$(systemctl show llmserve-spot-watcher.service -p MainPID --value)"
                                        "/status; id -u llmserve-spot")  # fmt: skip
        uid = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1)
        assert uid != "0" and status.splitlines()[-1] == uid, status
        assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE), status
        priority = docker_exec(container, "systemctl show llmserve-spot-watcher.service -p Nice,CPUWeight")
        assert sorted(priority.split()) == ["CPUWeight=1000", "Nice=-5"]
        assert "watching" in journal_events(container, "llmserve-spot-watcher.service", 0)
        for unit in (*WATCHER_UNITS, BOOT_SYNC_UNIT):
            report = docker_exec(container, f"systemd-analyze security --no-pager {unit}")
            score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", report).group(1))
            assert score <= MAX_EXPOSURE, f"{instance['InstanceId']} {unit}: exposure {score}"
        with urllib.request.urlopen(imds_url(instance) + "/_emulator/requests", timeout=10) as answer:
            reads = [entry for entry in json.load(answer) if entry["method"] == "GET"]
        assert reads, "nothing read IMDS"
        assert [entry for entry in reads if entry["path"].startswith("/latest/meta-data/iam/security-credentials/")]
        assert [entry for entry in reads if not entry["had_token"]] == []


def docker_exec(container: str, script: str) -> str:
    completed = subprocess.run(["docker", "exec", container, "sh", "-c", script], capture_output=True, text=True,
                               timeout=COMMAND_TIMEOUT_S, check=False)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_serving_again_changes_nothing():
    counts = recap(serve("serve.yml"))
    assert len(counts) == 2
    assert {host: count["changed"] for host, count in counts.items()} == {host: 0 for host in counts}
    assert all(count["failed"] == 0 and count["unreachable"] == 0 for count in counts.values())


class TargetWatch:
    """Records which targets the local AWS reports healthy, about once a second, while a play runs."""

    def __init__(self):
        self.rounds = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._done.is_set():
            self.rounds.append({"at": time.time(), "healthy": healthy_ports()})
            self._done.wait(1.0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(60)


def test_rolling_update_keeps_one_host_serving_at_all_times():
    instances = fleet_instances()
    ports = {vllm_port(i): i for i in instances.values()}
    started = time.time()
    # A request every 2.5 s per worker: each answer keeps the serving vLLM's worker spinning for a second, and the
    # restarting host needs the other core.
    with TargetWatch() as watch, alb_load(pause_s=2.5) as load:
        output = serve("rolling_update.yml", llmserve_profile_max_model_len=1024)
        time.sleep(1.0)
    assert set(recap(output)) == {i["PrivateIpAddress"] for i in instances.values()}

    out_of_service = {port: [r["at"] for r in watch.rounds if port not in r["healthy"]] for port in ports}
    print("rolling update, " + load.summary() + "; "
          + ", ".join(f"port {port} out of service in {len(times)} rounds" for port, times in out_of_service.items()))
    assert len(load.outcomes) >= 20, load.summary()
    # Every request a client sent through the load balancer was answered, while each host restarted in turn.
    assert load.failed() == []
    # Both hosts were taken out (one at a time), and both are back with the new flag.
    assert all(out_of_service.values()), out_of_service
    first, second = (set(times) for times in out_of_service.values())
    assert not first & second
    assert healthy_ports() >= set(ports)
    inventory_host = {i["PrivateIpAddress"]: port for port, i in ports.items()}
    shown = run("ansible", *INVENTORY, "model_size_cpu", "-m", "ansible.builtin.command",
                "-a", "systemctl show vllm.service -p ExecStart --value", "--one-line")  # fmt: skip
    for address, port in inventory_host.items():
        (line,) = [line for line in shown.splitlines() if line.startswith(address + " | ")]
        assert "--max-model-len 1024" in line or "--max-model-len=1024" in line, line
        assert "Paris" in ask(port, "What is the capital of France?", 24)
    # On each host the registration unit took the target out before vLLM got its SIGTERM, and put it back once
    # /health answered; the watcher counted the planned stop and stayed idle.
    for instance in instances.values():
        container = container_name(instance["InstanceId"])
        steps = journal_events(container, "llmserve-alb-registration.service", started - 1)
        assert steps.index("deregistered") < steps.index("planned_stop_drained") < steps.index("registered"), steps
        state = json.loads(docker_exec(container, f"{WATCHER_PYTHON} {WATCHER} status --config {WATCHER_CONFIG}"))
        assert state["phase"] == "idle" and state["planned_stops"] >= 1, state


def test_spot_drill_through_the_alb_fails_no_request(tmp_path):
    """playbooks/drill_spot_interruption.yml (bench mode) on the Spot host, with vLLM's key from the local Secrets
    Manager as on AWS, while other clients send through the ALB: the watcher deregisters it (the stand-in drains
    it: in-flight requests finish, new ones go to the other host) and stops vLLM once idle."""
    spot = spot_instance()
    spot_port, container = vllm_port(spot), container_name(spot["InstanceId"])
    report_file = tmp_path / "drill.json"
    drill = {
        "spot_drill_mode": "bench", "spot_drill_model": SERVED_MODEL, "spot_drill_imds_control_url": imds_url(spot),
        "spot_drill_requests": CONCURRENCY, "spot_drill_max_tokens": 48, "spot_drill_report_file": str(report_file),
        "llmserve_api_key_secret": INPUTS["llmserve_api_key_secret"],
    }  # fmt: skip

    with alb_load(max_tokens=16, workers=2) as load:
        time.sleep(5.0)  # both hosts take requests
        run("ansible-playbook", *INVENTORY, "-l", spot["PrivateIpAddress"],
            str(REPO_ROOT / "playbooks" / "drill_spot_interruption.yml"), "-e", json.dumps(drill),
            timeout_s=PLAYBOOK_TIMEOUT_S)  # fmt: skip
        time.sleep(5.0)  # the other host goes on serving alone
    report = json.loads(report_file.read_text())
    notice_at = float(report["notice_at"])
    in_flight = [o for o in load.outcomes if o.at < notice_at < o.at + o.seconds]
    after = [o for o in load.outcomes if o.at > notice_at]
    print("drill report:", json.dumps({key: value for key, value in report.items() if key != "watcher_steps"}))
    print(f"spot drill, {load.summary()}; {len(in_flight)} in flight at the notice, {len(after)} sent after it")
    # Through the load balancer: nothing failed, before, during or after the drain.
    assert load.failed() == []
    assert after
    # On the Spot host: every stream was in flight at the notice and finished, with one DeregisterTargets.
    assert report["requests"] == CONCURRENCY and report["in_flight_at_notice"] == CONCURRENCY
    assert float(report["last_request_ended_at"]) > notice_at
    assert report["requests_completed"] == CONCURRENCY and report["requests_failed"] == 0
    assert report["error_chunks"] == 0
    assert report["notice_to_deregistered_s"] is not None and report["deregister_calls"] == 1
    assert target_states().get((spot["InstanceId"], spot_port)) in (None, "draining")

    # vLLM stopped through systemd (the path unit), after the last request ended and not a fixed time later.
    shown = docker_exec(container, "systemctl show vllm.service -p ActiveState,InactiveEnterTimestamp --timestamp=unix")
    assert "ActiveState=inactive" in shown
    stopped_at = float(re.search(r"InactiveEnterTimestamp=@(\d+)", shown).group(1))
    assert stopped_at >= int(float(report["last_request_ended_at"]))
    watcher_log = journal(container, "llmserve-spot-watcher.service", notice_at - 1)
    steps = re.findall(r" event=(\S+)", watcher_log)
    expected = ["notice", "deregistered", "alb_out_of_service", "requests_drained", "vllm_stop_requested",
                "vllm_stopped", "drain_finished"]
    assert [step for step in steps if step in expected] == expected
    # Stopped because vLLM reported nothing in flight, with no timer in between.
    assert steps[steps.index("requests_drained") + 1] == "vllm_stop_requested"
    assert re.search(r"event=requests_drained running=0 waiting=0", watcher_log)
    # DeregisterTargets went out in the poll cycle that saw the notice (the seconds: `make benchmark-spot-drill`).
    between = [
        spot_bench.event_epoch({"time": re.search(rf"^(\S+) event={name}", watcher_log, re.MULTILINE).group(1)})
        for name in ("notice", "deregister_sent")
    ]
    with urllib.request.urlopen(imds_url(spot) + "/_emulator/requests", timeout=10) as answer:
        assert spot_bench.notice_reads_between(json.load(answer), *between) == 0
    stop_service = docker_exec(container, "systemctl show llmserve-vllm-stop.service -p Result,ExecMainStartTimestamp "
                                          "--timestamp=unix")  # fmt: skip
    assert "Result=success" in stop_service
    assert float(re.search(r"ExecMainStartTimestamp=@(\d+)", stop_service).group(1)) >= int(notice_at)
    # The registration unit, stopped with vLLM, saw the watcher's drain and did not deregister again.
    assert "planned_stop_skipped" in journal_events(container, "llmserve-alb-registration.service", notice_at - 1)
    assert docker_exec(container, "ls /var/lib/llmserve-spot-watcher").split().count("stop-vllm.request") == 0


def test_a_start_request_from_the_watcher_starts_vllm_again():
    """What the watcher writes when a Spot stop or hibernate resumed on this boot (as its own unprivileged user, in
    its own folder) has systemd start vLLM; the request is then removed. (When the watcher writes it: tests/unit
    and tests/integration.)"""
    container = container_name(spot_instance()["InstanceId"])
    request = "/var/lib/llmserve-spot-watcher/start-vllm.request"
    assert docker_exec(container, "systemctl show vllm.service -p ActiveState --value").strip() == "inactive"
    write_request = f"import json; json.dump({{'unit': 'vllm.service', 'reason': 'test'}}, open('{request}', 'w'))"
    docker_exec(container, f"runuser -u llmserve-spot -- {WATCHER_PYTHON} -c {shlex.quote(write_request)}")
    wait_until(lambda: docker_exec(container, f"test -e {request} && echo waiting || true").strip() == "", 30,
               "the start service to remove the request", POLL_S)
    state = docker_exec(container, "systemctl show vllm.service -p ActiveState --value").strip()
    assert state in ("activating", "active"), state
    assert docker_exec(container, "systemctl show llmserve-vllm-start.service -p Result --value").strip() == "success"
    # Stopped again before it serves: the resize that follows takes this host away, and its cores are shared.
    docker_exec(container, "systemctl stop vllm.service")


def test_resize_to_one_takes_one_host_away_cleanly():
    before = fleet_instances()

    rerun_fleet_playbook(llmserve_fleet_target_capacity=1)

    after = fleet_instances()
    assert len(after) == len(before) - 1 and set(after) < set(before)
    wait_until(lambda: CONTAINERS.instance_ids() == set(after), GONE_TIMEOUT_S, f"only hosts {sorted(after)}", POLL_S)
    (gone,) = [instance for instance_id, instance in before.items() if instance_id not in after]
    states = target_states()
    # The host went out of service in the drill (its watcher deregistered it): the local AWS, as AWS, keeps it
    # draining for the deregistration delay, or has let it go.
    assert states.get((gone["InstanceId"], vllm_port(gone))) in (None, "draining"), states
    assert {key: state for key, state in states.items() if key[0] in after} == {
        (i["InstanceId"], vllm_port(i)): "healthy" for i in after.values()
    }


BOOT_TIMEOUT_S = 600.0  # a stop, a boot, the sync and vLLM's cold start on shared cores
MODEL_PREFIX = INPUTS["llmserve_model_uri"].removeprefix("s3://").split("/", 1)
MODEL_CURRENT = "/mnt/nvme/models/SmolLM2-135M-Instruct/current"
S3_RELAY = [sys.executable, str(REPO_ROOT / "tests" / "bench" / "tcp_relay.py"), "--listen", "127.0.0.1:18411",
            "--target", "127.0.0.1:18410", "--pid-file", str(EPHEMERAL / "s3_relay.pid")]
BAKED = {}  # what test_bake_image_of_the_serving_host made, for the tests after it


def the_serving_host() -> dict:
    (instance,) = fleet_instances().values()
    return instance


def unit_value(container: str, unit: str, prop: str) -> str:
    return docker_exec(container, f"systemctl show {unit} -p {prop} --value").strip()


def ec2_state(instance_id: str) -> str:
    answer = aws("ec2").describe_instances(InstanceIds=[instance_id])
    return answer["Reservations"][0]["Instances"][0]["State"]["Name"]


def stop_instance(instance: dict) -> None:
    """An EC2 stop: the launcher shuts the host down (its units deregister it) and keeps its root volume."""
    aws("ec2").stop_instances(InstanceIds=[instance["InstanceId"]])
    wait_until(lambda: [host.state for host in CONTAINERS.hosts() if host.instance_id == instance["InstanceId"]]
               == ["exited"], GONE_TIMEOUT_S, f"{instance['InstanceId']} shut down", POLL_S)
    assert (instance["InstanceId"], vllm_port(instance)) not in {
        key for key, state in target_states().items() if state in ("initial", "healthy")}


def host_runs(instance_id: str) -> bool:
    """The instance's container runs and its systemd answers on the bus (it may still be starting: the boot sync
    holds multi-user.target). Until the bus is up, systemctl prints "offline" and fails."""
    if [host.state for host in CONTAINERS.hosts() if host.instance_id == instance_id] != ["running"]:
        return False
    completed = subprocess.run(["docker", "exec", container_name(instance_id), "systemctl", "is-system-running"],
                               capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)  # fmt: skip
    return completed.stdout.strip() not in ("", "offline")


def start_instance(instance: dict) -> None:
    aws("ec2").start_instances(InstanceIds=[instance["InstanceId"]])
    wait_until(lambda: host_runs(instance["InstanceId"]), HOSTS_TIMEOUT_S, f"{instance['InstanceId']} booted", POLL_S)


def serves_on_its_own(instance: dict) -> None:
    """With nothing typed on the host: healthy behind the ALB (the registration unit registered it after /health)
    and answering."""
    key = (instance["InstanceId"], vllm_port(instance))
    wait_until(lambda: target_states().get(key) == "healthy", BOOT_TIMEOUT_S, f"{key} healthy behind the ALB", 2.0)
    answer = ask(vllm_port(instance), "What is the capital of France?", 24)
    print(f"{instance['InstanceId']} after boot: {answer!r}")
    assert "Paris" in answer


def synced_before_vllm(container: str) -> None:
    """The boot path's order: the sync unit finished before vLLM's process started (monotonic clock, same boot)."""
    synced = int(unit_value(container, "llmserve-model-sync.service", "ExecMainExitTimestampMonotonic"))
    started = int(unit_value(container, "vllm.service", "ExecMainStartTimestampMonotonic"))
    assert 0 < synced < started, (synced, started)
    assert unit_value(container, "llmserve-model-sync.service", "Result") == "success"


def test_bake_image_of_the_serving_host():
    """playbooks/bake_image.yml on the host that serves: an AMI in the local AWS that the bench commits from the
    host's container (the instance store, a tmpfs, left out); a re-run finds it by name and changes nothing."""
    instance = the_serving_host()
    arguments = ["-e", json.dumps({"bake_image_instance_id": instance["InstanceId"], "bake_image_name": "llmserve-cpu-baked",
                                   "bake_image_no_reboot": True})]
    output = run("ansible-playbook", str(REPO_ROOT / "playbooks" / "bake_image.yml"), *arguments)
    assert "changed=1" in output, output[-2000:]
    (image,) = aws("ec2").describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["llmserve-cpu-baked"]}])["Images"]
    tags = {tag["Key"]: tag["Value"] for tag in image.get("Tags", [])}
    assert (image["SourceInstanceId"], tags["llmserve:source-instance"], tags["llmserve:weights"]) == (
        instance["InstanceId"], instance["InstanceId"], "synced-at-boot")
    assert "changed=0" in run("ansible-playbook", str(REPO_ROOT / "playbooks" / "bake_image.yml"), *arguments)
    wait_until(lambda: CONTAINERS.baked_image(image["ImageId"]) is not None, 120, "the launcher's commit", POLL_S)
    # The weights were on the instance store: not in the image.
    listing = subprocess.run(["docker", "run", "--rm", "--entrypoint", "ls", CONTAINERS.image_tag(image["ImageId"]),
                              "-A", "/mnt/nvme"], capture_output=True, text=True, timeout=60, check=False)
    assert listing.returncode == 0 and listing.stdout.strip() == "", listing
    BAKED.update(image_id=image["ImageId"], instance=instance)


def test_a_stop_and_start_syncs_the_s3_version_of_now_before_vllm_and_serves_again():
    """The instance store is blank after a stop; the model changed in S3 meanwhile. The boot path syncs the new
    version, then vLLM starts, then the host registers: no Ansible run."""
    instance = the_serving_host()
    container = container_name(instance["InstanceId"])
    stop_instance(instance)
    bucket, prefix = MODEL_PREFIX
    marker = f"changed while down {time.time()}"
    aws("s3").put_object(Bucket=bucket, Key=f"{prefix}/README-llmserve.md", Body=marker.encode())
    since = time.time()
    start_instance(instance)
    serves_on_its_own(instance)
    synced_before_vllm(container)
    assert docker_exec(container, f"cat {MODEL_CURRENT}/README-llmserve.md") == marker
    log = journal(container, "llmserve-model-sync.service", since)
    print(log[-1500:])
    assert "synced: version=" in log and "(was none)" in log, log


def test_a_boot_with_s3_unreachable_leaves_the_host_out_and_says_why():
    instance = the_serving_host()
    container = container_name(instance["InstanceId"])
    stop_instance(instance)
    relay_pid = int((EPHEMERAL / "s3_relay.pid").read_text())
    os.kill(relay_pid, 15)
    relay_pid_file = EPHEMERAL / "s3_relay.pid"
    wait_until(lambda: not relay_pid_file.exists(), 30, "the S3 path cut", POLL_S)
    try:
        since = time.time()
        start_instance(instance)
        wait_until(lambda: unit_value(container, "llmserve-model-sync.service", "ActiveState") == "failed", 180,
                   "the boot sync to give up", 2.0)
        assert unit_value(container, "vllm.service", "ActiveState") == "inactive"
        assert unit_value(container, "llmserve-alb-registration.service", "ActiveState") == "inactive"
        log = journal(container, "llmserve-model-sync.service", since)
        print(log[-1500:])
        assert "cannot reach S3" in log and "vllm.service does not start and this host stays out of its target groups" in log
        states = target_states()
        assert states.get((instance["InstanceId"], vllm_port(instance))) in (None, "draining", "unused"), states
    finally:
        subprocess.Popen(S3_RELAY, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        wait_until((EPHEMERAL / "s3_relay.pid").exists, 30, "the S3 path back", POLL_S)


def test_absent_leaves_no_instance_and_no_host():
    rerun_fleet_playbook(llmserve_fleet_state="absent")

    assert fleet_instances() == {}
    wait_until(lambda: not CONTAINERS.instance_ids(), GONE_TIMEOUT_S, "no host container left", POLL_S)


def test_a_new_instance_from_the_baked_image_serves_with_no_ansible_run():
    """RunInstances from the baked AMI: the host boots with an empty instance store, syncs the weights, starts vLLM
    and registers. (It takes the gone host's private address: on the bench the per-host vLLM and IMDS ports follow
    the address, and the image carries the source host's; on AWS every host uses port 8000 and 169.254.169.254.)"""
    source = BAKED["instance"]
    launched = aws("ec2").run_instances(
        ImageId=BAKED["image_id"], MinCount=1, MaxCount=1, InstanceType=source["InstanceType"],
        SubnetId=source["SubnetId"], PrivateIpAddress=source["PrivateIpAddress"],
        SecurityGroupIds=INPUTS["llmserve_fleet_security_group_ids"],
        IamInstanceProfile={"Name": INPUTS["llmserve_fleet_instance_profile"]},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "llmserve:role", "Value": "vllm"}, {"Key": "llmserve:model-size", "Value": "cpu"}]}],
    )["Instances"][0]
    try:
        container = container_name(launched["InstanceId"])
        wait_until(lambda: host_runs(launched["InstanceId"]), HOSTS_TIMEOUT_S, "the new host booted", POLL_S)
        serves_on_its_own(launched)
        synced_before_vllm(container)
        assert docker_exec(container, f"test -f {MODEL_CURRENT}/config.json && echo present").strip() == "present"
    finally:
        aws("ec2").terminate_instances(InstanceIds=[launched["InstanceId"]])
        wait_until(lambda: not CONTAINERS.instance_ids(), GONE_TIMEOUT_S, "no host container left", POLL_S)
