"""spot_interruption on the systemd host: the units, the registration lifecycle and the drill, for real.

The host shares the network with this machine, so the tests read moto (127.0.0.1:18310) and vLLM directly and
drive the IMDS emulator that runs inside the host. They run in file order; the drill comes last (it stops vLLM).
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import yaml

SCENARIO = Path(__file__).resolve().parents[1]
REPO_ROOT = SCENARIO.parents[3]
BENCH = yaml.safe_load((SCENARIO / "vars" / "bench.yml").read_text())
INSTANCE = json.loads((Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "instance.json").read_text())
WATCHER = "/opt/llmserve-spot-watcher/llmserve_spot_watcher.py"
PYTHON = "/opt/llmserve-spot-watcher/venv/bin/python"
CONFIG = "/etc/llmserve/spot-watcher.json"
UNITS = ("llmserve-spot-watcher.service", "llmserve-vllm-stop.service", "llmserve-vllm-start.service",
         "llmserve-alb-registration.service")
MAX_EXPOSURE = 2.0

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from tests.bench import spot_bench  # noqa: E402  (the drill's own helpers: one reading of IMDS's request log)
from tests.support.wait import wait_until  # noqa: E402


def aws(service):
    return boto3.client(
        service,
        endpoint_url=BENCH["spot_interruption_bench_moto_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def target_group_arn():
    name = BENCH["spot_interruption_bench_target_group_name"]
    return aws("elbv2").describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"]


def target_state():
    answer = aws("elbv2").describe_target_health(
        TargetGroupArn=target_group_arn(),
        Targets=[{"Id": INSTANCE["instance_id"], "Port": BENCH["spot_interruption_bench_vllm_port"]}],
    )
    return answer["TargetHealthDescriptions"][0]["TargetHealth"]["State"]


def journal(host, unit, since=None):
    command = f"journalctl --unit {unit} --output cat --no-pager"
    if since is not None:
        command += f" --since @{int(since)}"
    return host.check_output(command)


def events(text):
    return [match.group(1) for match in re.finditer(r" event=(\S+)", text)]


def test_units_run_and_the_watcher_is_unprivileged(host):
    assert host.service("llmserve-spot-watcher.service").is_running
    assert host.service("llmserve-spot-watcher.service").is_enabled
    assert host.service("llmserve-vllm-stop.path").is_running
    assert host.service("llmserve-vllm-start.path").is_running
    assert host.service("vllm.service").is_running
    registration = host.check_output("systemctl show llmserve-alb-registration.service -p ActiveState,SubState")
    assert "ActiveState=active" in registration and "SubState=exited" in registration
    main_pid = host.check_output("systemctl show llmserve-spot-watcher.service -p MainPID --value")
    status = host.file(f"/proc/{main_pid}/status").content_string
    uid = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1)
    assert uid != "0"
    assert host.user("llmserve-spot").uid == int(uid)
    assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE)
    assert "event=watching" in journal(host, "llmserve-spot-watcher.service")
    # Ahead of vLLM for the CPU, within its cgroup (Nice) and across units (CPUWeight; vLLM's unit keeps 100).
    priority = host.check_output("systemctl show llmserve-spot-watcher.service -p Nice,CPUWeight")
    assert sorted(priority.splitlines()) == ["CPUWeight=1000", "Nice=-5"]


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_hardened(host, unit):
    output = host.run(f"systemd-analyze security --no-pager {unit}")
    assert output.rc == 0, output.stderr
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", output.stdout).group(1))
    print(f"{unit}: exposure {score}")
    assert score <= MAX_EXPOSURE


def test_registered_with_the_managed_target_group(host):
    elbv2 = aws("elbv2")
    (group,) = elbv2.describe_target_groups(Names=[BENCH["spot_interruption_bench_target_group_name"]])["TargetGroups"]
    assert group["HealthCheckPath"] == "/health"
    assert group["Port"] == BENCH["spot_interruption_bench_vllm_port"]
    attributes = {
        item["Key"]: item["Value"]
        for item in elbv2.describe_target_group_attributes(TargetGroupArn=group["TargetGroupArn"])["Attributes"]
    }
    assert attributes["deregistration_delay.timeout_seconds"] == "5"
    assert target_state() == "healthy"
    config = json.loads(host.file(CONFIG).content_string)
    assert config["target_group_arns"] == [group["TargetGroupArn"]]
    assert host.file(CONFIG).mode == 0o640


def test_the_watcher_used_only_imdsv2(host):
    requests = json.loads(host.check_output(f"curl -sf {BENCH['spot_interruption_bench_imds_url']}/_emulator/requests"))
    reads = [entry for entry in requests if entry["method"] == "GET"]
    assert reads, "nothing read IMDS"
    assert [entry for entry in reads if not entry["had_token"]] == []


def test_planned_restart_of_vllm_deregisters_first_then_registers_when_healthy(host):
    """`systemctl restart vllm` (a planned stop): the registration unit deregisters before vLLM gets SIGTERM and
    registers again once /health answers."""
    started = time.time()
    seen = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.append((time.time(), target_state()))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    restart = host.run("systemctl restart vllm.service")
    assert restart.rc == 0, restart.stderr
    health = f"curl -sf http://127.0.0.1:{BENCH['spot_interruption_bench_vllm_port']}/health"
    wait_until(lambda: host.run(health).rc == 0, 240, "vLLM healthy again", interval_s=0.1)
    wait_until(
        lambda: seen and seen[-1][1] == "healthy" and any(state != "healthy" for _when, state in seen),
        120,
        "the target out of service, then back",
        interval_s=0.1,
    )
    done.set()
    watcher.join(5)
    registration = journal(host, "llmserve-alb-registration.service", since=started - 1)
    steps = events(registration)
    assert steps.index("deregistered") < steps.index("planned_stop_drained") < steps.index("registered")
    registration_state = host.check_output("systemctl show llmserve-alb-registration.service -p ActiveState,SubState")
    assert "ActiveState=active" in registration_state and "SubState=exited" in registration_state
    state = json.loads(host.check_output(f"{PYTHON} {WATCHER} status --config {CONFIG}"))
    assert state["phase"] == "idle" and state["planned_stops"] >= 1


def test_drill_all_streams_finish_target_leaves_within_two_seconds_vllm_stops_after_the_last(host, tmp_path):
    """The issue's drill, through playbooks/drill_spot_interruption.yml in bench mode."""
    report_file = tmp_path / "drill.json"
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(REPO_ROOT / "playbooks" / "drill_spot_interruption.yml"),
        "-e",
        json.dumps(
            {
                "spot_drill_mode": "bench",
                "spot_drill_model": BENCH["spot_interruption_bench_served_model"],
                "spot_drill_imds_control_url": BENCH["spot_interruption_bench_imds_url"],
                "spot_drill_requests": 16,
                "spot_drill_max_tokens": 1500,
                "spot_drill_report_file": str(report_file),
            }
        ),
    ]
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment, check=False)
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    report = json.loads(report_file.read_text())
    print("drill report:", json.dumps({key: value for key, value in report.items() if key != "watcher_steps"}))

    assert report["requests"] == 16
    assert report["in_flight_at_notice"] == 16, "the notice must land while every request streams"
    assert float(report["last_request_ended_at"]) > float(report["notice_at"])
    assert report["requests_completed"] == 16 and report["requests_failed"] == 0
    assert report["error_chunks"] == 0
    assert report["notice_to_deregistered_s"] is not None
    assert report["deregister_calls"] == 1
    assert target_state() in ("draining", "unused")

    # vLLM stopped through systemd, after the last request ended and not a fixed time later.
    show = host.check_output("systemctl show vllm.service -p ActiveState,InactiveEnterTimestamp --timestamp=unix")
    assert "ActiveState=inactive" in show
    inactive_at = float(re.search(r"InactiveEnterTimestamp=@(\d+)", show).group(1))
    last_request = float(report["last_request_ended_at"])
    assert inactive_at >= int(last_request)
    stop_requested = [line for line in report["watcher_steps"] if "event=vllm_stop_requested" in line]
    assert len(stop_requested) == 1
    watcher_log = journal(host, "llmserve-spot-watcher.service", since=float(report["notice_at"]) - 1)
    steps = events(watcher_log)
    expected = ["notice", "deregistered", "alb_out_of_service", "requests_drained", "vllm_stop_requested",
                "vllm_stopped", "drain_finished"]
    assert [step for step in steps if step in expected] == expected
    # Stopped because vLLM reported nothing in flight, with no timer in between (the seconds: the benchmark).
    assert steps[steps.index("requests_drained") + 1] == "vllm_stop_requested"
    assert re.search(r"event=requests_drained running=0 waiting=0", watcher_log)
    # DeregisterTargets sent in the poll cycle that saw the notice (the seconds: `make benchmark-spot-drill`); the
    # poller thread reads on while the call runs, so the mark is the call's start, not its end.
    between = [
        spot_bench.event_epoch({"time": re.search(rf"^(\S+) event={name}", watcher_log, re.MULTILINE).group(1)})
        for name in ("notice", "deregister_sent")
    ]
    imds_requests = json.loads(host.check_output(f"curl -sf {BENCH['spot_interruption_bench_imds_url']}/_emulator/requests"))
    assert spot_bench.notice_reads_between(imds_requests, *between) == 0
    # The stop went through the path unit (systemctl run as root), and the registration unit saw the drain.
    stop_service = host.check_output(
        "systemctl show llmserve-vllm-stop.service -p Result,ExecMainStartTimestamp --timestamp=unix"
    )
    assert "Result=success" in stop_service
    assert float(re.search(r"ExecMainStartTimestamp=@(\d+)", stop_service).group(1)) >= int(report["notice_at"])
    assert "event=planned_stop_skipped" in journal(host, "llmserve-alb-registration.service")
    assert not host.file("/var/lib/llmserve-spot-watcher/stop-vllm.request").exists


def test_a_start_request_from_the_watcher_starts_vllm_again(host):
    """After the drill vLLM is stopped. What the watcher writes when a Spot stop/hibernate resumed on this boot
    (as its own unprivileged user, in its own folder) has systemd start vLLM; the request is then removed.
    The watcher's side (when it writes the request) is tested in tests/unit and tests/integration."""
    request = "/var/lib/llmserve-spot-watcher/start-vllm.request"
    assert "ActiveState=inactive" in host.check_output("systemctl show vllm.service -p ActiveState")
    host.check_output(
        f"runuser -u llmserve-spot -- {PYTHON} -c "
        f"\"import json; json.dump({{'unit': 'vllm.service', 'reason': 'test'}}, open('{request}', 'w'))\""
    )
    wait_until(lambda: not host.file(request).exists, 30, "the start service to remove the request", interval_s=0.5)
    state = host.check_output("systemctl show vllm.service -p ActiveState --value")
    assert state in ("activating", "active"), state
    start_service = host.check_output("systemctl show llmserve-vllm-start.service -p Result --value")
    assert start_service == "success"
