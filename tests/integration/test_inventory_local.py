"""inventories/local (the bench as an inventory) with the real ansible-playbook and the local AWS.

A control-plane play on `localhost` takes its AWS environment from the inventory alone and creates the demo's
model bucket in the local AWS (moto); the bench host's role settings resolve to the same endpoints. The URL
files that `make moto-up` and the IMDS emulator write are given in a temporary build folder
(llmserve_bench_build_dir), so a local AWS the developer has running is left alone.
"""

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.playbook import ansible_env, run_ansible

REPO_ROOT = Path(__file__).resolve().parents[2]
INVENTORY = REPO_ROOT / "inventories" / "local" / "hosts.yml"
COMMAND_TIMEOUT_S = 120
IMDS_PORT = 18080  # only written to the port file; nothing listens on it in this test

PROBE_PLAY = """
- name: Resolve the bench inventory on the control node and use its AWS environment
  hosts: control
  gather_facts: false
  environment: "{{ llmserve_bench_aws_environment }}"
  tasks:
    - name: Create the demo's model bucket through the environment alone
      amazon.aws.s3_bucket:
        name: "{{ llmserve_bench_model_bucket }}"
        state: present
    - name: Record what the inventory resolves to
      ansible.builtin.copy:
        dest: "{{ probe_output }}"
        mode: "0600"
        content: "{{ resolved | to_json }}"
      vars:
        bench: "{{ hostvars['llmserve-demo-host'] }}"
        resolved:
          interpreter: "{{ ansible_python_interpreter }}"
          playbook_python: "{{ ansible_playbook_python }}"
          aws_environment: "{{ llmserve_bench_aws_environment }}"
          imds_url: "{{ llmserve_bench_imds_url }}"
          model_uri: "{{ llmserve_bench_model_uri }}"
          profile: "{{ llmserve_profile }}"
          bench_connection: "{{ bench.ansible_connection }}"
          bench_model_sync_endpoint: "{{ bench.model_sync_endpoint_url }}"
          bench_imds_endpoint: "{{ bench.spot_interruption_imds_endpoint }}"
          bench_spot_aws_endpoint: "{{ bench.spot_interruption_aws_endpoint_url }}"
"""


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    # The caller's AWS_ and ANSIBLE_ settings left out: the inventory alone must say where everything is.
    return run_ansible(tool, "-i", str(INVENTORY), *args, env=ansible_env(drop_prefixes=("AWS_", "ANSIBLE_")),
                       timeout_s=COMMAND_TIMEOUT_S)


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "build"
    folder.mkdir()
    return folder


def _probe(tmp_path: Path, build_dir: Path) -> tuple[subprocess.CompletedProcess, Path]:
    playbook, output = tmp_path / "probe.yml", tmp_path / "resolved.json"
    playbook.write_text(PROBE_PLAY)
    completed = _run(
        "ansible-playbook",
        str(playbook),
        "-e",
        json.dumps({"llmserve_bench_build_dir": str(build_dir), "probe_output": str(output)}),
    )
    return completed, output


def test_groups_and_connections():
    completed = _run("ansible-inventory", "--list", "--export")
    assert completed.returncode == 0, completed.stderr
    inventory = json.loads(completed.stdout)

    assert inventory["llmserve_bench"]["hosts"] == ["llmserve-demo-host"]
    assert inventory["control"]["hosts"] == ["localhost"]
    assert inventory["llmserve_bench"]["vars"]["ansible_connection"] == "community.docker.docker"
    assert inventory["llmserve_bench"]["vars"]["ansible_python_interpreter"] == "/usr/bin/python3"


def test_control_plays_reach_the_local_aws_through_the_inventory(aws_clean, tmp_path, build_dir):
    (build_dir / "moto.url").write_text(aws_clean.endpoint_url + "\n")  # as `make moto-up` writes it
    (build_dir / "imds.port").write_text(f"{IMDS_PORT}\n")  # as imds_emulator.py --port-file writes it

    completed, output = _probe(tmp_path, build_dir)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    resolved = json.loads(output.read_text())
    buckets = [bucket["Name"] for bucket in aws_clean.client("s3").list_buckets()["Buckets"]]
    assert buckets == ["llmserve-demo-models"]
    assert resolved["interpreter"] == resolved["playbook_python"]  # the control venv, which has boto3
    assert resolved["aws_environment"] == {
        "AWS_ENDPOINT_URL": aws_clean.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    assert resolved["imds_url"] == f"http://127.0.0.1:{IMDS_PORT}"
    assert resolved["model_uri"] == "s3://llmserve-demo-models/SmolLM2-135M-Instruct"
    assert resolved["profile"] == "cpu"
    assert resolved["bench_connection"] == "community.docker.docker"
    assert resolved["bench_model_sync_endpoint"] == aws_clean.endpoint_url
    assert resolved["bench_spot_aws_endpoint"] == aws_clean.endpoint_url
    assert resolved["bench_imds_endpoint"] == f"http://127.0.0.1:{IMDS_PORT}"


def test_missing_local_aws_says_how_to_start_it(tmp_path, build_dir):
    completed, output = _probe(tmp_path, build_dir)

    assert completed.returncode == 2
    assert "the local AWS is not running: run `make moto-up`" in completed.stdout
    assert str(build_dir / "moto.url") in completed.stdout
    assert not output.exists()
