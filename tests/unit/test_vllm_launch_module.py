"""vllm_launch's decisions: what it writes and when it starts, restarts or leaves vLLM alone.

converge() runs with a real AnsibleModule; the files go to a temporary folder and systemctl is a recording
stand-in that keeps a service state, so these tests check the module's logic (idempotence, check mode, restarts
only on change) without root: the module hands its files to root through set_owner_if_different and
set_group_if_different, which these tests record instead of applying. The molecule scenario
roles/vllm_service/molecule/default runs the same code against real systemd and vLLM.
"""

import json
import os
import re
import stat

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmserve.aws.plugins.module_utils import _systemd as systemd
from ansible_collections.llmserve.aws.plugins.module_utils import _vllm as vllm
from ansible_collections.llmserve.aws.plugins.modules import vllm_launch

from module_harness import capture_exit
from module_harness import run_main
from test_vllm_validation import params as base_params

UNIT = "vllm.service"


class FakeSystemd:
    """systemctl's state for one service: loaded once its unit file exists, a new PID on every start."""

    def __init__(self, unit_path):
        self.unit_path = unit_path
        self.calls = []
        self.active = False
        self.enabled = False
        self.pid = 0
        self.next_pid = 100
        self.failed_required = []  # units vLLM requires that failed (the boot path's model sync)

    def failed_requirements(self, unit):
        return list(self.failed_required)

    def status(self, unit):
        if unit != UNIT:
            return systemd.ServiceStatus({"LoadState": "not-found", "ActiveState": "inactive"})
        return systemd.ServiceStatus({
            "LoadState": "loaded" if os.path.exists(self.unit_path) else "not-found",
            "ActiveState": "active" if self.active else "inactive",
            "SubState": "running" if self.active else "dead",
            "MainPID": str(self.pid),
            "UnitFileState": "enabled" if self.enabled else "disabled",
        })

    def _start(self):
        self.active = True
        self.pid = self.next_pid
        self.next_pid += 1

    def daemon_reload(self):
        self.calls.append("daemon-reload")

    def reset_failed(self, unit):
        self.calls.append("reset-failed")

    def start(self, unit):
        self.calls.append("start")
        self._start()

    def restart(self, unit):
        self.calls.append("restart")
        self._start()

    def stop(self, unit):
        self.calls.append("stop")
        self.active = False
        self.pid = 0

    def enable(self, unit):
        self.calls.append("enable")
        self.enabled = True

    def disable(self, unit):
        self.calls.append("disable")
        self.enabled = False

    def systemctl_run(self, *args):
        self.calls.append(" ".join(args))
        if args[:2] == ("disable", "--now"):
            self.enabled = self.active = False


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Service paths under tmp_path, a fake systemd, and a function that runs one converge()."""
    def paths(name):
        return {
            "unit": str(tmp_path / ("%s.service" % name)),
            "environment_dir": str(tmp_path / name),
            "environment_file": str(tmp_path / name / ("%s.env" % name)),
            "restart_timer": str(tmp_path / ("%s-planned-restart.timer" % name)),
            "restart_service": str(tmp_path / ("%s-planned-restart.service" % name)),
            "state_dir": "/var/lib/%s" % name,
            "cache_dir": "/var/cache/%s" % name,
        }
    service_paths = paths("vllm")
    fake = FakeSystemd(service_paths["unit"])
    fake.owners = []

    def record_owner(kind):
        def set_if_different(module, path, name, changed, diff=None, expand=True):
            # The temporary file (.<name>.<random>.tmp) is handed over before it is renamed into place.
            fake.owners.append((kind, re.sub(r"^\.(.+)\.[0-9a-f]+\.tmp$", r"\1", os.path.basename(path)), name))
            return changed
        return set_if_different

    def needs_root(*args):
        raise AssertionError("changing ownership needs root; vllm_launch must ask the module, which these tests record")

    for name in ("chown", "lchown", "fchown"):
        monkeypatch.setattr(os, name, needs_root)
    monkeypatch.setattr(basic.AnsibleModule, "set_owner_if_different", record_owner("owner"))
    monkeypatch.setattr(basic.AnsibleModule, "set_group_if_different", record_owner("group"))

    def converge(check_mode=False, **overrides):
        module_params = base_params(**overrides)
        module_params.update(state=overrides.get("state", "started"), enabled=overrides.get("enabled", True),
                             restart_schedule=overrides.get("restart_schedule"), restart_randomized_delay_sec=900,
                             wait=overrides.get("wait", False))
        given = dict((key, value) for key, value in module_params.items() if value is not None)  # None: the default
        with patch_module_args(dict(given, _ansible_check_mode=check_mode, _ansible_diff=True)):
            module = vllm_launch.build_module()
        current = vllm_launch.describe_service(fake, service_paths, UNIT)
        result = vllm_launch.converge(module, fake, service_paths, "/usr/bin/systemctl")
        if module_params["state"] == "absent":
            return result["changed"], current
        return (result["changed"], result["restarted"]), current

    fake.converge = converge
    fake.paths = service_paths
    return fake


def test_first_run_writes_both_files_reloads_enables_and_starts(host):
    (changed, restarted), _current = host.converge(api_key="sk-1")
    assert (changed, restarted) == (True, True)
    assert host.calls == ["daemon-reload", "enable", "reset-failed", "start"]
    environment_file = os.stat(host.paths["environment_file"])
    assert stat.S_IMODE(environment_file.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(host.paths["unit"]).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(host.paths["environment_dir"]).st_mode) == 0o700
    assert "sk-1" in open(host.paths["environment_file"]).read()
    assert "sk-1" not in open(host.paths["unit"]).read()


def test_the_files_are_handed_to_root(host):
    host.converge(api_key="sk-1")
    for name in ("vllm.env", "vllm.service"):
        assert ("owner", name, "root") in host.owners and ("group", name, "root") in host.owners


def test_second_run_changes_nothing_and_keeps_the_pid(host):
    host.converge(api_key="sk-1")
    pid = host.pid
    host.calls.clear()
    (changed, restarted), _current = host.converge(api_key="sk-1")
    assert (changed, restarted) == (False, False)
    assert host.calls == []
    assert host.pid == pid


@pytest.mark.parametrize("overrides", [{"api_key": "sk-2"}, {"max_model_len": 2048}, {"environment": {"A": "1"}}])
def test_a_change_of_flags_or_secrets_restarts(host, overrides):
    host.converge(api_key="sk-1")
    pid = host.pid
    host.calls.clear()
    settings = dict(api_key="sk-1")
    settings.update(overrides)
    (changed, restarted), _current = host.converge(**settings)
    assert (changed, restarted) == (True, True)
    assert host.calls == ["daemon-reload", "reset-failed", "restart"]
    assert host.pid != pid


def test_a_wider_environment_file_mode_is_fixed_and_restarts(host):
    host.converge(api_key="sk-1")
    os.chmod(host.paths["environment_file"], 0o644)
    host.calls.clear()
    (changed, _restarted), _current = host.converge(api_key="sk-1")
    assert changed
    assert stat.S_IMODE(os.stat(host.paths["environment_file"]).st_mode) == 0o600


def test_check_mode_writes_and_starts_nothing(host):
    (changed, restarted), _current = host.converge(check_mode=True, api_key="sk-1")
    assert (changed, restarted) == (True, True)
    assert host.calls == []
    assert not os.path.exists(host.paths["unit"]) and not os.path.exists(host.paths["environment_file"])


def test_a_stopped_service_is_started_without_rewriting(host):
    host.converge()
    host.stop(UNIT)
    host.calls.clear()
    (changed, restarted), _current = host.converge()
    assert (changed, restarted) == (True, True)
    assert host.calls == ["reset-failed", "start"]


def test_state_restarted_always_restarts(host):
    host.converge()
    host.calls.clear()
    (changed, restarted), _current = host.converge(state="restarted")
    assert (changed, restarted) == (True, True)
    assert host.calls == ["reset-failed", "restart"]


def test_state_stopped_stops_once(host):
    host.converge()
    host.calls.clear()
    assert host.converge(state="stopped")[0] == (True, False)
    assert host.calls == ["stop"]
    host.calls.clear()
    assert host.converge(state="stopped")[0] == (False, False)
    assert host.calls == []


def test_planned_restart_timer_is_written_and_removed(host):
    host.converge(restart_schedule="Sun 04:00")
    assert "OnCalendar=Sun 04:00" in open(host.paths["restart_timer"]).read()
    assert "try-restart vllm.service" in open(host.paths["restart_service"]).read()
    host.calls.clear()
    (changed, restarted), _current = host.converge()
    assert (changed, restarted) == (True, False)  # the timer goes, vLLM keeps running
    assert not os.path.exists(host.paths["restart_timer"])
    assert not os.path.exists(host.paths["restart_service"])


def test_absent_removes_everything_once(host):
    host.converge(api_key="sk-1")
    host.calls.clear()
    assert host.converge(state="absent")[0] is True
    assert "disable --now -- vllm.service" in host.calls
    for key in ("unit", "environment_file", "environment_dir"):
        assert not os.path.exists(host.paths[key])
    host.calls.clear()
    assert host.converge(state="absent")[0] is False
    assert host.calls == []


def test_a_failed_required_unit_puts_its_journal_first(host, monkeypatch):
    """vLLM did not start because the boot path's sync failed: the sync's journal says why, so it comes first."""
    host.failed_required = ["llmserve-model-sync.service"]
    host.journal_tail = lambda unit, lines: [f"{unit}: line"]

    def refused(*args):
        raise systemd.SystemdError(systemd.ERROR_JOB_FAILED, "A dependency job for vllm.service failed.", 1,
                                   ["systemctl", "start"])

    monkeypatch.setattr(vllm_launch, "wait_until_serving", refused)
    with pytest.raises(vllm_launch.VllmLaunchError) as raised:
        host.converge(wait=True)
    assert raised.value.result["journal"] == [
        "-- llmserve-model-sync.service (required by vllm.service) failed:", "llmserve-model-sync.service: line",
        "-- vllm.service:", "vllm.service: line"]


def test_a_crash_while_waiting_raises_the_one_error_with_the_journal(host, monkeypatch):
    host.journal_tail = lambda unit, lines: "CUDA out of memory"

    def crashes(*args):
        raise vllm_launch.ServiceCrashed(host.status(UNIT))

    monkeypatch.setattr(vllm_launch, "wait_until_serving", crashes)
    with pytest.raises(vllm_launch.VllmLaunchError) as raised:
        host.converge(wait=True)
    assert raised.value.message.startswith("vLLM exited while starting")
    assert "systemd restarts it up to 3 times within 600 s" in raised.value.message
    assert raised.value.result["journal"] == "CUDA out of memory"
    assert raised.value.result["changed"] is True and raised.value.result["status"]["active_state"] == "active"


def test_diff_masks_the_environment_file(host):
    _result, current = host.converge(api_key="sk-1")
    desired = vllm_launch.desired_service(base_params(api_key="sk-2"), "/usr/bin/systemctl")
    now = vllm_launch.describe_service(host, host.paths, UNIT)
    diff = vllm_launch.build_diff(host.paths, now, desired)
    text = repr(diff)
    assert "sk-1" not in text and "sk-2" not in text
    assert diff[1]["after"].splitlines()[1] == "VLLM_API_KEY=******** (changed)"
    assert diff[0]["before"] == diff[0]["after"]
    assert current["unit_text"] is None


# ---------------------------------------------------------------------------------------------------------
# main(): validation fails before systemd is even asked


@pytest.fixture
def module_main(monkeypatch):
    """Run vllm_launch.main() with arguments; any systemctl/journalctl call fails the test."""
    def run_command(self, args, **kwargs):
        raise AssertionError("validation should fail before running %s" % args)

    capture_exit(monkeypatch)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)

    def run(**args):
        args.setdefault("host", "127.0.0.1")  # loopback: no api_key needed unless a test says otherwise
        return run_main(vllm_launch.main, args)
    return run


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "llama-8b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": 32, "num_key_value_heads": 8,
                                                    "max_position_embeddings": 8192}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_gguf_model_is_refused(module_main, tmp_path):
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    exited = module_main(model=str(gguf), venv=str(tmp_path))
    assert exited.failed
    assert exited.result["msg"] == "vLLM does not serve GGUF; use llama.cpp's server or a safetensors model"


def test_model_config_contradictions_are_all_reported(module_main, model_dir, tmp_path):
    exited = module_main(model=str(model_dir), venv=str(tmp_path), tensor_parallel_size=3, quantization="awq",
                         max_model_len=32768)
    assert exited.failed
    message = exited.result["msg"]
    assert "tensor_parallel_size 3 does not divide the model's 32 attention heads" in message
    assert "quantization awq contradicts the model" in message
    assert "max_model_len 32768 is above the model's maximum of 8192" in message


def test_gpu_memory_utilization_out_of_range(module_main, model_dir, tmp_path):
    exited = module_main(model=str(model_dir), venv=str(tmp_path), gpu_memory_utilization=1.5)
    assert exited.failed and "gpu_memory_utilization 1.5 must be in (0, 1]" in exited.result["msg"]


def test_missing_venv_fails_outside_check_mode(module_main, model_dir, tmp_path):
    exited = module_main(model=str(model_dir), venv=str(tmp_path / "nowhere"))
    assert exited.failed
    assert "has no bin/python: install vLLM into it first" in exited.result["msg"]


def test_the_api_key_never_reaches_the_result(module_main, model_dir, tmp_path):
    exited = module_main(model=str(model_dir), venv=str(tmp_path), api_key="sk-secret-123", gpu_memory_utilization=2)
    assert "sk-secret-123" not in json.dumps(exited.result)


# ---------------------------------------------------------------------------------------------------------
# Ownership: files and units this module did not write are neither overwritten nor removed without force

ADMIN_UNIT = "[Unit]\nDescription=an admin's own service\n[Service]\nExecStart=/usr/sbin/sshd -D\n"


@pytest.mark.parametrize("state", ["started", "absent"])
@pytest.mark.parametrize("foreign", ["unit", "environment_file", "restart_timer", "restart_service", "vendor_unit"])
def test_foreign_files_are_left_alone_without_force(host, foreign, state):
    if foreign == "vendor_unit":
        # systemd loads sshd.service from /lib; no file of ours exists at all.
        loaded = systemd.ServiceStatus({"LoadState": "loaded", "ActiveState": "active", "MainPID": "7",
                                        "UnitFileState": "enabled", "FragmentPath": "/lib/systemd/system/sshd.service"})
        host.status = lambda unit: loaded
    else:
        os.makedirs(host.paths["environment_dir"], exist_ok=True)
        with open(host.paths[foreign], "w") as handle:
            handle.write(ADMIN_UNIT)
    before = {path: open(path).read() for path in host.paths.values() if os.path.isfile(path)}
    with pytest.raises(vllm_launch.VllmLaunchError, match="force=true"):
        host.converge(state=state)
    assert host.calls == []
    assert {path: open(path).read() for path in host.paths.values() if os.path.isfile(path)} == before
    if foreign != "vendor_unit":
        host.converge(state=state, force=True)
        assert not os.path.exists(host.paths[foreign]) or vllm.is_managed(open(host.paths[foreign]).read())


def test_own_files_are_still_replaced_and_removed(host):
    host.converge(api_key="sk-1")
    host.converge(api_key="sk-2", max_model_len=1024)
    assert host.converge(state="absent")[0] is True


@pytest.mark.parametrize("text", [
    "# Managed by llmserve.aws.vllm_launch. x\nVLLM_API_KEY=\"sk-1\"\n",
    "# Managed by llmserve.aws.vllm_launch. x\nsk-1\n",
    "export VLLM_API_KEY=sk-1\n",
    "# sk-1 in a comment\nVLLM_API_KEY sk-1\n",
])
def test_environment_file_diff_is_masked_whole(text):
    masked = vllm.masked_environment_file(text) + vllm.masked_environment_file("A=1\n", text)
    assert "sk-1" not in masked


def test_no_api_key_beyond_loopback_fails_before_anything_runs(module_main, model_dir, tmp_path):
    # module_main fails the test on any systemctl call: the refusal comes first.
    exited = module_main(model=str(model_dir), venv=str(tmp_path), host="0.0.0.0")
    assert exited.failed
    assert exited.result["msg"].startswith("api_key is required when vLLM listens beyond loopback (host=0.0.0.0)")
