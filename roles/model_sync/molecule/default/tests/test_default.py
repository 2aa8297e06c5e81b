"""model_sync on the bench's systemd host, after converge, idempotence and side_effect (which changed one object,
added one, and synced again). vLLM (vllm_service) serves the synced path on 127.0.0.1:18202; the container
shares the host's network."""

import hashlib
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

SCENARIO = Path(__file__).resolve().parent.parent
SETTINGS = yaml.safe_load((SCENARIO / "group_vars" / "all.yml").read_text())
SETTINGS.update(json.loads((SCENARIO / "vllm_service.json").read_text()))
DEST = "/opt/models/tiny"
CURRENT = DEST + "/current"
VENV = "/opt/llmserve/model-sync"
UNIT = SETTINGS["vllm_service_name"] + ".service"
BASE = "http://127.0.0.1:%d" % SETTINGS["vllm_service_port"]
TINY_MODEL = Path(os.environ["LLMSERVE_TINY_MODEL"])


def http_json(path, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def manifest(host):
    return json.loads(host.file(CURRENT + "/.llmserve-manifest.json").content_string)


def side_effect(host):
    return json.loads(host.file("/var/lib/llmserve-test-model-sync.json").content_string)


def test_current_is_a_symlink_to_a_complete_verified_version(host):
    link = host.file(CURRENT)
    assert link.is_symlink
    data = manifest(host)
    assert link.linked_to == f"{DEST}/versions/{data['version']}"
    assert host.file(f"{DEST}/versions").listdir() == [data["version"]]  # keep_versions 1: the old one is pruned
    assert not host.file(f"{DEST}/.model-sync/staging").exists
    names = {p.name for p in TINY_MODEL.iterdir() if p.is_file()} | {"README.md"}
    assert set(data["files"]) == names
    for rel in names - {"README.md", "generation_config.json"}:  # the two side_effect changed
        assert data["files"][rel]["size"] == (TINY_MODEL / rel).stat().st_size, rel
    # s5cmd uploads without a checksum: every file was checked against its MD5 ETag
    assert {f["verified_by"] for f in data["files"].values()} == {"MD5"}


def test_weights_are_byte_identical_to_the_source(host):
    local = hashlib.sha256((TINY_MODEL / "model.safetensors").read_bytes()).hexdigest()
    remote = host.check_output(f"sha256sum {CURRENT}/model.safetensors").split()[0]
    assert remote == local


def test_side_effect_moved_only_the_changed_and_added_objects(host):
    result = side_effect(host)["sync"]
    assert result["changed"] is True
    assert sorted(result["downloaded"]) == ["README.md", "generation_config.json"]
    assert result["reused"] == len([p for p in TINY_MODEL.iterdir() if p.is_file()]) - 1
    assert result["engine"] == "s5cmd"


def test_vllm_restarted_onto_the_new_version_and_serves_it(host):
    before = int(side_effect(host)["pid_before"])
    now = int(host.check_output(f"systemctl show --property=MainPID --value {UNIT}"))
    assert host.service(UNIT).is_running
    assert now not in (0, before)
    models = http_json("/v1/models")["data"]
    assert [m["id"] for m in models] == [SETTINGS["vllm_service_served_model_name"]]
    assert models[0]["root"] == CURRENT
    reply = http_json("/v1/chat/completions", {
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "ignore_eos": True})
    assert reply["usage"]["completion_tokens"] == 4


def test_tools_venv_has_s5cmd_and_awscrt(host):
    assert host.run(f"{VENV}/bin/s5cmd version").stdout.startswith("v2.3.0")
    assert host.run(f"{VENV}/bin/python -c 'import awscrt.checksums, boto3'").rc == 0


def test_no_instance_store_means_no_mount_unit(host):
    assert not host.file("/etc/systemd/system/mnt-nvme.mount").exists
    assert host.file(DEST).exists  # /opt/models, not an instance-store mount


def test_unchanged_resync_changes_nothing(host):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    args = {
        "source": SETTINGS["model_sync_source"], "dest": DEST, "endpoint_url": SETTINGS["model_sync_endpoint_url"],
        "region": SETTINGS["model_sync_region"], "access_key": SETTINGS["model_sync_aws_access_key"],
        "secret_key": SETTINGS["model_sync_aws_secret_key"],
    }
    started = time.monotonic()
    proc = subprocess.run(
        ["ansible", "all", "-i", inventory, "-m", "llmserve.aws.s3_model_sync", "-a", json.dumps(args),
         "-e", f"ansible_python_interpreter={VENV}/bin/python"],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json"), check=False)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout[proc.stdout.index("{"):])  # the json callback's report, after any warning
    result = next(iter(report["plays"][0]["tasks"][0]["hosts"].values()))
    assert result["changed"] is False and result["downloaded"] == []
    print(f"unchanged re-sync: module {result['elapsed_s']:.3f} s, ansible ad-hoc round trip {wall:.1f} s")


def test_check_mode_run_of_the_role_plans_nothing_to_change(host, tmp_path):
    """The role alone in check mode (--check --diff) on the synced host: it lists S3, plans, and reports no change."""
    playbook = tmp_path / "check.yml"
    playbook.write_text(json.dumps([{
        "name": "model_sync in check mode", "hosts": "all", "gather_facts": False,
        "roles": [{"role": "llmserve.aws.model_sync"}],
    }]))
    (tmp_path / "group_vars").symlink_to(SCENARIO / "group_vars")
    proc = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--check", "--diff", str(playbook)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recap = [line for line in proc.stdout.splitlines() if "changed=" in line and "ok=" in line]
    assert recap and all(" changed=0 " in line for line in recap), recap
