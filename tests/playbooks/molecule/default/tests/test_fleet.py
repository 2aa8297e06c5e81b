"""The 7B serve playbook (CPU profile) on two bench hosts, then playbooks/rolling_update.yml across them.

The hosts share this machine's network: the tests reach each vLLM and the local AWS on 127.0.0.1. They run in
file order; the last one changes the fleet (a new --max-model-len on both hosts).
"""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
import testinfra

SCENARIO = Path(__file__).resolve().parents[1]
REPO_ROOT = SCENARIO.parents[3]
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
FLEET = json.loads((EPHEMERAL / "fleet.json").read_text())
PORTS = {"llmserve-fleet-a": 18401, "llmserve-fleet-b": 18403}
SERVED_MODEL = "smollm2-135m-instruct"
REGISTRATION_UNIT = "llmserve-alb-registration.service"


def elbv2():
    return boto3.client(
        "elbv2",
        endpoint_url="http://127.0.0.1:18400",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def target_states():
    """{port: state} of every target the group holds (ports name the hosts here)."""
    answer = elbv2().describe_target_health(TargetGroupArn=FLEET["target_group_arn"])
    return {item["Target"]["Port"]: item["TargetHealth"]["State"] for item in answer["TargetHealthDescriptions"]}


def ask(port, question, max_tokens, timeout_s=60):
    request = {
        "model": SERVED_MODEL,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    with urllib.request.urlopen(
        urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(request).encode(),
            headers={"Content-Type": "application/json"},
        ),
        timeout=timeout_s,
    ) as response:
        return json.load(response)["choices"][0]["message"]["content"]


def unit_show(host, unit, *properties):
    output = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {name}" for name in properties))
    return dict(line.split("=", 1) for line in output.splitlines())


@pytest.mark.parametrize("name", sorted(PORTS))
def test_each_host_serves_the_model_and_answers(name):
    answer = ask(PORTS[name], "What is the capital of France?", 24)
    print(f"{name}: {answer!r}")
    assert "Paris" in answer


def test_each_host_is_in_service_in_the_target_group():
    assert target_states() == {port: "healthy" for port in PORTS.values()}
    instance_ids = {item["Target"]["Id"] for item in elbv2().describe_target_health(
        TargetGroupArn=FLEET["target_group_arn"])["TargetHealthDescriptions"]}
    assert instance_ids == set(FLEET["instance_ids"].values())


def test_units_are_up_on_each_host(host):
    assert host.service("vllm.service").is_running
    assert host.service("llmserve-spot-watcher.service").is_running
    registration = unit_show(host, REGISTRATION_UNIT, "ActiveState", "SubState")
    assert registration == {"ActiveState": "active", "SubState": "exited"}


class LoadBalancerProbe:
    """Plays the load balancer during the update: each round reads the target group, sends one short completion
    to every target it reports healthy, and records who answered."""

    def __init__(self):
        self.rounds = []
        self.failures = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._done.is_set():
            states = target_states()
            healthy = sorted(port for port, state in states.items() if state == "healthy")
            answered = []
            for port in healthy:
                try:
                    ask(port, "Say OK.", 1, timeout_s=30)
                    answered.append(port)
                except (urllib.error.URLError, OSError) as error:
                    # A real load balancer stops sending to a target once it is draining: a failure counts only
                    # when the target was still in service after it.
                    still = target_states().get(port) == "healthy"
                    self.failures.append({"port": port, "error": str(error), "still_healthy": still})
            self.rounds.append({"at": time.time(), "states": states, "answered": answered})
            # About one request a second per target: steady traffic, without starving the restarting host's
            # vLLM of the two cores it shares with the serving one.
            self._done.wait(1.0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(60)


def bench_host(name):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def test_rolling_update_keeps_one_host_serving_at_all_times():
    """Runs once (no `host` fixture): the update and its prober span both hosts."""
    before = {name: unit_show(bench_host(name), "vllm.service", "MainPID")["MainPID"] for name in PORTS}
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(REPO_ROOT / "playbooks" / "rolling_update.yml"),
        "-e",
        json.dumps({"llmserve_hosts": "llmserve_bench", "llmserve_profile_max_model_len": 1024}),
    ]
    with LoadBalancerProbe() as probe:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
        time.sleep(1.0)
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]

    out_of_service = {
        port: [r["at"] for r in probe.rounds if r["states"].get(port) != "healthy"] for port in PORTS.values()
    }
    print(
        f"prober: {len(probe.rounds)} rounds, failures {probe.failures}, "
        + ", ".join(f"port {port} out of service in {len(times)} rounds" for port, times in out_of_service.items())
    )
    assert len(probe.rounds) >= 20
    # Every round found a target in service that answered: never a moment without a serving host.
    assert [r for r in probe.rounds if not r["answered"]] == []
    assert [failure for failure in probe.failures if failure["still_healthy"]] == []
    # Both hosts were taken out (one at a time), and both are back.
    assert all(out_of_service.values()), out_of_service
    a_out, b_out = (set(times) for times in out_of_service.values())
    assert not a_out & b_out
    assert target_states() == {port: "healthy" for port in PORTS.values()}
    for name, port in PORTS.items():
        after = unit_show(bench_host(name), "vllm.service", "MainPID", "ExecStart")
        assert after["MainPID"] != before[name], f"{name}: vLLM was not restarted"
        assert "--max-model-len 1024" in after["ExecStart"] or "--max-model-len=1024" in after["ExecStart"]
        assert "Paris" in ask(port, "What is the capital of France?", 24)
