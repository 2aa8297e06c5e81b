"""llmserve.aws.instance_store on real block devices: loop devices on this machine stand in for NVMe instance
store (its `devices` option skips detection). Needs root and loop devices; RAID0 also needs the md driver
(/proc/mdstat), which this machine's kernel lacks, so that case is skipped here and covered by the planner's
unit tests."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("losetup") or not Path("/dev/loop-control").exists(),
    reason="needs root and loop devices",
)


@pytest.fixture
def loop_devices(tmp_path):
    made = []

    def make(count=1, size_mb=64):
        for index in range(count):
            image = tmp_path / f"disk{len(made)}-{index}.img"
            with open(image, "wb") as handle:
                handle.truncate(size_mb * 1024 * 1024)
            try:
                out = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                                     check=True)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"losetup cannot attach a loop device here: {exc.stderr.strip()}")
            made.append(out.stdout.strip())
        return made[-count:]

    yield make
    for device in made:
        subprocess.run(["umount", device], capture_output=True, check=False)
        subprocess.run(["losetup", "--detach", device], capture_output=True, check=False)


def test_blank_device_is_formatted_once_and_kept_when_mounted(run_module, loop_devices, tmp_path):
    (device,) = loop_devices()
    args = {"devices": [device], "mount_point": "/mnt/nvme"}

    planned = run_module("instance_store", args, check_mode=True)
    assert planned["changed"] is True and planned["formatted"] is True and planned["uuid"] is None
    assert subprocess.run(["blkid", "-p", device], capture_output=True, check=False).returncode == 2  # still blank

    first = run_module("instance_store", args)
    assert first.get("failed") is not True, first
    assert first["changed"] is True and first["device"] == device and first["fstype"] == "ext4"
    assert first["mount_unit"] == "mnt-nvme.mount"
    probe = subprocess.run(["blkid", "-p", "-o", "export", device], capture_output=True, text=True, check=False).stdout
    assert "TYPE=ext4" in probe and "LABEL=llmserve" in probe and f"UUID={first['uuid']}" in probe

    again = run_module("instance_store", args)
    assert again["changed"] is False and again["uuid"] == first["uuid"]

    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    subprocess.run(["mount", device, str(mount_point)], check=True)
    mounted = run_module("instance_store", args)
    assert mounted["changed"] is False and mounted["uuid"] == first["uuid"]


def test_foreign_filesystem_is_refused_unless_forced(run_module, loop_devices):
    (device,) = loop_devices()
    subprocess.run(["mkfs.ext4", "-q", "-L", "somebody", device], check=True)

    refused = run_module("instance_store", {"devices": [device]})
    assert refused.get("failed") is True and "not ours" in refused["msg"] and "force" in refused["msg"]

    forced = run_module("instance_store", {"devices": [device], "force": True})
    assert forced["changed"] is True and forced["formatted"] is True


@pytest.mark.skipif(not Path("/proc/mdstat").exists(), reason="no md (software RAID) driver in this kernel")
def test_several_devices_become_one_raid0(run_module, loop_devices):
    devices = loop_devices(2)
    result = run_module("instance_store", {"devices": devices, "raid_name": "llmserve-test"})
    try:
        assert result["created_raid"] is True and result["device"] == "/dev/md/llmserve-test"
        assert run_module("instance_store", {"devices": devices, "raid_name": "llmserve-test"})["changed"] is False
    finally:
        subprocess.run(["mdadm", "--stop", "/dev/md/llmserve-test"], capture_output=True, check=False)


def test_no_instance_store_is_a_noop(run_module):
    result = run_module("instance_store", {"mount_point": "/mnt/nvme"})
    assert result["changed"] is False and result["devices"] == [] and result["device"] is None


def test_the_boot_path_makes_a_blank_store_again_and_keeps_a_prepared_one(loop_devices, tmp_path, capsys):
    """What llmserve-model-sync.service's first step does on every boot (_model_sync/boot.py
    --prepare-instance-store), with real lsblk, blkid, mkfs and mount: blank (a first boot, or after a stop and
    start) -> formatted with the role's label and mounted; prepared (a reboot) -> kept, its files with it."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / ".collections"))
    from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import boot

    (device,) = loop_devices()
    mount_point = tmp_path / "nvme"
    store = {"devices": [device], "fstype": "ext4", "label": "llmserve", "raid_name": "llmserve", "force": False,
             "mount_point": str(mount_point)}
    config = {"instance_store": store, "required_by": ["vllm.service"]}

    def mount(target):  # what the role's mount unit does (by label) once the filesystem is there
        mount_point.mkdir(exist_ok=True)
        subprocess.run(["mount", "-o", "noatime", "LABEL=llmserve", str(mount_point)], check=True)
        assert target == device

    try:
        assert boot.prepare_instance_store(config, mount=mount) == 0
        assert "formatted: it was blank" in capsys.readouterr().out
        probe = subprocess.run(["blkid", "-p", "-o", "export", device], capture_output=True, text=True,
                               check=False).stdout
        assert "TYPE=ext4" in probe and "LABEL=llmserve" in probe
        assert boot.is_mounted(str(mount_point))
        (mount_point / "weights.safetensors").write_text("kept across a reboot")
        subprocess.run(["umount", str(mount_point)], check=True)

        assert boot.prepare_instance_store(config, mount=mount) == 0  # a reboot: the store kept its filesystem
        assert ", kept)" in capsys.readouterr().out
        assert (mount_point / "weights.safetensors").read_text() == "kept across a reboot"
        subprocess.run(["umount", str(mount_point)], check=True)

        subprocess.run(["wipefs", "--all", "--quiet", device], check=True)  # a stop and start: blank again
        assert boot.prepare_instance_store(config, mount=mount) == 0
        assert "formatted: it was blank" in capsys.readouterr().out
        assert not (mount_point / "weights.safetensors").exists()
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
