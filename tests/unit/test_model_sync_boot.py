"""module_utils/_model_sync/boot.py (the boot path's sync, llmserve-model-sync.service): its configuration is
checked whole, each error naming the key; failures that can pass are retried until retry_for_s, those that cannot
fail at once; keys come only from the root-only file the configuration names; the role writes exactly the keys the
CLI reads. The sync itself is the module's (tests/unit/test_model_store.py and the molecule scenarios)."""

import json
import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import boot
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.manifest import ManifestError
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_s3 import S3SyncError

ROLE_VARS = Path(__file__).resolve().parents[2] / "roles" / "model_sync" / "vars" / "main.yml"
GOOD = {
    "source": "s3://models/tiny", "dest": "/mnt/nvme/models/tiny", "exclude": ["original/*"], "engine": "auto",
    "workers": 8, "concurrency": 16, "part_size_mib": 50, "verify": "checksum", "keep_versions": 1,
    "min_free_mib": 1024, "region": "us-east-1", "endpoint_url": "", "timeout_s": 3600, "retry_for_s": 600,
    "retry_interval_s": 10, "progress_interval_s": 10, "required_by": ["vllm.service"],
    "credentials_file": "/etc/llmserve/model-sync-aws.json", "imds_endpoint": "http://169.254.169.254",
    "instance_store": {},
}
STORE = {"devices": [], "fstype": "ext4", "label": "llmserve", "raid_name": "llmserve", "force": False,
         "mount_point": "/mnt/nvme"}


def test_a_good_configuration_has_no_error():
    assert boot.config_errors(dict(GOOD)) == []


def test_the_role_writes_exactly_the_keys_the_cli_reads():
    written = yaml.safe_load(ROLE_VARS.read_text())["_model_sync_boot_config"]
    assert set(written) == set(boot.CONFIG_TYPES)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"surprise": 1}, "unknown key 'surprise'"),
        ({"workers": True}, "workers must be a int"),
        ({"workers": "8"}, "workers must be a int"),
        ({"exclude": "original/*"}, "exclude must be a list"),
        ({"source": "s3:/models"}, "source:"),
        ({"source": "https://models/tiny"}, "source:"),
        ({"dest": "models/tiny"}, "dest"),
        ({"dest": "/mnt/nvme/models/\ntiny"}, "dest"),
        ({"endpoint_url": "http://127.0.0.1:9000\r\nX-Injected: 1"}, "endpoint_url"),
        ({"region": "us-east-1\x00"}, "region"),
        ({"exclude": ["ok", "bad\x1b[31m"]}, "exclude item"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"retry_interval_s": 0}, "retry_interval_s must be at least 1"),
        ({"min_free_mib": -1}, "min_free_mib must not be negative"),
        ({"engine": "rclone"}, "engine must be one of"),
        ({"verify": "md5"}, "verify must be one of"),
        ({"required_by": ["vllm"]}, "required_by item 'vllm'"),
        ({"required_by": ["vllm.service; rm -rf /"]}, "required_by item"),
        ({"required_by": ["../vllm.service"]}, "required_by item"),
        ({"credentials_file": "etc/keys.json"}, "credentials_file"),
        ({"credentials_file": "/etc/keys\n.json"}, "credentials_file"),
        ({"imds_endpoint": "169.254.169.254"}, "imds_endpoint must be http(s)://host[:port]"),
        ({"imds_endpoint": "http://169.254.169.254/latest"}, "imds_endpoint"),
        ({"imds_endpoint": "http://169.254.169.254\nX: 1"}, "imds_endpoint"),
        ({"imds_endpoint": "file:///etc/passwd"}, "imds_endpoint"),
        ({"instance_store": dict(STORE, mount_point="/etc")}, "instance_store: mount_point /etc is a system folder"),
        ({"instance_store": dict(STORE, devices=["/tmp/disk.img"])}, "instance_store: devices item"),
        ({"instance_store": dict(STORE, label="llm serve")}, "instance_store: label"),
        ({"instance_store": dict(STORE, fstype="btrfs")}, "instance_store: fstype must be one of"),
        ({"instance_store": dict(STORE, force="yes")}, "instance_store.force must be a bool"),
        ({"instance_store": {"devices": []}}, "instance_store: missing key"),
    ],
)
def test_each_class_of_bad_configuration_is_named(change, named):
    errors = boot.config_errors(dict(GOOD, **change))
    assert any(named in error for error in errors), errors


def test_a_missing_key_is_named():
    config = dict(GOOD)
    del config["timeout_s"]
    assert boot.config_errors(config) == ["missing key 'timeout_s'"]


def test_load_config_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "model-sync.json"
    path.write_text(json.dumps(dict(GOOD, workers=0)))
    with pytest.raises(boot.ConfigError, match=r"model-sync.json: workers must be at least 1.*run it again"):
        boot.load_config(str(path))
    path.write_text("{not json")
    with pytest.raises(boot.ConfigError, match="cannot read the configuration"):
        boot.load_config(str(path))


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _run(outcomes, capsys, **config):
    """boot.run with a sync that raises or returns each outcome in turn; (status, calls, printed lines)."""
    clock, calls = Clock(), []

    def sync(_config):
        calls.append(clock())
        clock.now += 1
        outcome = outcomes[min(len(calls), len(outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    status = boot.run(dict(GOOD, **config), sync=sync, clock=clock, sleep=clock.sleep)
    return status, calls, capsys.readouterr().out.splitlines()


RESULT = {"changed": True, "version": "ab12", "model_path": "/m/current", "previous_version": None, "files": 2,
          "total_bytes": 10, "downloaded": ["a", "b"], "downloaded_bytes": 10, "engine": "s5cmd", "reused": 0,
          "rechecked": 0, "elapsed_s": 1.5}


def test_a_failure_that_can_pass_is_retried_until_it_does(capsys):
    unreachable = S3SyncError("cannot reach S3: Could not connect to the endpoint URL")
    status, calls, lines = _run([unreachable, unreachable, RESULT], capsys, retry_interval_s=5)

    assert status == 0 and calls == [0, 6, 12]
    assert sum("attempt" in line and "retrying in 5 s" in line for line in lines) == 2
    assert lines[-1].startswith("synced: version=ab12 at /m/current (was none), downloaded 2 of 2 files (10 B)")


def test_retries_end_at_retry_for_with_a_message_that_says_what_stays_down(capsys):
    status, calls, lines = _run([S3SyncError("cannot reach S3")], capsys, retry_for_s=30, retry_interval_s=10)

    assert status == 1 and len(calls) == 3  # at 0, 11 and 22 s; at 23 s fewer than 10 s of retries are left
    assert lines[-1].startswith("FAILED: attempt 3 after 23 s (retried for 30 s): S3SyncError: cannot reach S3.")
    assert lines[-1].endswith("vllm.service does not start and this host stays out of its target groups; fix the "
                              "cause, then `systemctl start vllm.service`")


@pytest.mark.parametrize(
    "final",
    [S3SyncError("access denied", "AccessDenied"), S3SyncError("no bucket", "NoSuchBucket"),
     S3SyncError("bad keys", "InvalidAccessKeyId"), ManifestError("a file and a folder clash"),
     boot.ConfigError("the credentials file lacks access_key")],
)
def test_a_failure_another_try_cannot_fix_fails_at_once(final, capsys):
    status, calls, lines = _run([final], capsys)

    assert status == 1 and len(calls) == 1
    assert "(it cannot pass by retrying)" in lines[-1]


def test_an_unexpected_error_is_retried_and_reported_not_raised(capsys):
    status, calls, lines = _run([KeyError("Contents"), RESULT], capsys)

    assert status == 0 and len(calls) == 2
    assert "attempt 1 failed: KeyError: 'Contents'" in lines[1]


def test_up_to_date_says_nothing_was_downloaded(capsys):
    status, _calls, lines = _run([dict(RESULT, changed=False)], capsys)

    assert status == 0
    assert re.match(r"up to date: version=ab12 at /m/current, whole against its manifest, nothing downloaded "
                    r"\(2 files", lines[-1])


def test_keys_come_only_from_the_named_file_and_never_reach_a_message(tmp_path):
    path = tmp_path / "model-sync-aws.json"
    assert boot.given_credentials("") is None
    assert boot.given_credentials(str(path)) is None
    path.write_text(json.dumps({"access_key": "AKIA", "secret_key": "s", "session_token": ""}))
    assert boot.given_credentials(str(path))["access_key"] == "AKIA"
    path.write_text(json.dumps({"access_key": "AKIA"}))
    with pytest.raises(boot.ConfigError, match="lacks access_key or secret_key"):
        boot.given_credentials(str(path))
    path.write_text("AKIA secret")
    with pytest.raises(boot.ConfigError, match=r"unreadable \(JSONDecodeError\)") as raised:
        boot.given_credentials(str(path))
    assert "secret" not in str(raised.value).replace(str(path), "")  # the file's content never reaches the message


class FakeStoreHost:
    """InstanceStoreHost's prepare and run, as the boot CLI uses them."""

    def __init__(self, result=None, error=None):
        self.result, self.error, self.commands = result, error, []

    def prepare(self, *args):
        self.commands.append(("prepare",) + args)
        if self.error:
            raise self.error
        return self.result

    def run(self, command):
        self.commands.append(tuple(command))
        return ""


PREPARED = {"device": "/dev/nvme1n1", "devices": ["/dev/nvme1n1"], "fstype": "ext4", "created_raid": False,
            "formatted": True}


def test_a_blank_store_is_formatted_then_mounted_through_its_mount_unit(capsys):
    from ansible_collections.llmserve.aws.plugins.module_utils import _nvme

    state = {"mounted": False}
    host = FakeStoreHost(PREPARED)

    def mount(device):
        state["mounted"] = True

    config = dict(GOOD, instance_store=STORE)
    assert boot.prepare_instance_store(config, host, lambda point: state["mounted"], mount) == 0
    assert host.commands == [("prepare", [], "ext4", "llmserve", "llmserve", False, False)]
    out = capsys.readouterr().out
    assert "instance store: ext4 on /dev/nvme1n1 (/dev/nvme1n1, formatted: it was blank)" in out
    assert "instance store: mounted at /mnt/nvme" in out
    # The default mount joins the role's mount unit (by label) instead of mounting a second time.
    default = FakeStoreHost(PREPARED)
    calls = iter([False, True])
    assert boot.prepare_instance_store(config, default, lambda point: next(calls)) == 0
    assert default.commands[-1] == ("systemctl", "start", _nvme.mount_unit_name("/mnt/nvme"))


def test_a_store_that_does_not_mount_or_cannot_be_made_fails_with_what_stays_down(capsys):
    from ansible_collections.llmserve.aws.plugins.module_utils import _nvme

    config = dict(GOOD, instance_store=STORE)
    assert boot.prepare_instance_store(config, FakeStoreHost(PREPARED), lambda point: False, lambda device: None) == 1
    assert "is not mounted at /mnt/nvme after mounting it" in capsys.readouterr().out
    refused = FakeStoreHost(error=_nvme.InstanceStoreError("/dev/nvme1n1 already holds a filesystem (xfs)"))
    assert boot.prepare_instance_store(config, refused, lambda point: False, lambda device: None) == 1
    line = capsys.readouterr().out.strip()
    assert line.startswith("FAILED: instance store: /dev/nvme1n1 already holds a filesystem (xfs).")
    assert line.endswith("`systemctl start vllm.service`")


def test_no_managed_store_or_no_device_is_nothing_to_do(capsys):
    assert boot.prepare_instance_store(dict(GOOD), FakeStoreHost(error=AssertionError("not called"))) == 0
    none = FakeStoreHost(dict(PREPARED, device=None, devices=[]))
    assert boot.prepare_instance_store(dict(GOOD, instance_store=STORE), none, lambda point: False) == 0
    assert "none on this instance type" in capsys.readouterr().out


def test_is_mounted_reads_mountinfo_with_its_escapes(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("36 35 98:0 / /mnt/nvme rw,noatime shared:1 - ext4 /dev/nvme1n1 rw\n"
                         "37 35 98:1 / /mnt/with\\040space rw - ext4 /dev/nvme2n1 rw\n")
    assert boot.is_mounted("/mnt/nvme", str(mountinfo))
    assert boot.is_mounted("/mnt/with space", str(mountinfo))
    assert not boot.is_mounted("/mnt", str(mountinfo))
