"""Instance-store detection and planning (plugins/module_utils/_nvme.py) on lsblk / nvme-cli outputs of EC2
instance types (tests/unit/fixtures/instance_store, see its README for how they were made)."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.llmserve.aws.plugins.module_utils import _nvme  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "instance_store"


def lsblk(name):
    return _nvme.parse_lsblk((FIXTURES / f"{name}.lsblk.json").read_text())


@pytest.mark.parametrize(
    ("case", "paths"),
    [
        ("g5_xlarge", ["/dev/nvme1n1"]),
        ("p4d_24xlarge", [f"/dev/nvme{i}n1" for i in range(1, 9)]),  # natural order, whatever lsblk's order
        ("m5_large", []),
    ],
)
def test_only_instance_store_disks_are_found(case, paths):
    devices = lsblk(case)
    assert [d["path"] for d in devices] == paths
    assert all(d["serial"].startswith("AWS") and len(d["serial"]) == 20 for d in devices)


def test_nvme_list_and_by_id_agree_with_lsblk():
    from_lsblk = lsblk("g5_xlarge")
    from_nvme = _nvme.parse_nvme_list((FIXTURES / "g5_xlarge.nvme_list.json").read_text())
    assert [(d["path"], d["serial"], d["size"]) for d in from_nvme] == [
        (d["path"], d["serial"], d["size"]) for d in from_lsblk]
    serials = _nvme.serials_from_by_id((FIXTURES / "p4d_by_id.txt").read_text().split())
    assert serials == sorted(d["serial"] for d in lsblk("p4d_24xlarge"))


def test_blank_single_device_is_formatted():
    steps = _nvme.plan(lsblk("g5_xlarge"), "llmserve", "ext4", "/dev/md/llmserve", None)
    assert steps == {"target": "/dev/nvme1n1", "create_raid": False, "mkfs": True, "members": ["/dev/nvme1n1"]}


def test_several_blank_devices_become_one_raid0():
    steps = _nvme.plan(lsblk("p4d_24xlarge"), "llmserve", "xfs", "/dev/md/llmserve", None)
    assert steps["create_raid"] and steps["mkfs"] and steps["target"] == "/dev/md/llmserve"
    assert len(steps["members"]) == 8
    command = _nvme.mdadm_create_command("/dev/md/llmserve", "llmserve", steps["members"])
    assert command[:5] == ["mdadm", "--create", "/dev/md/llmserve", "--run", "--level=0"]
    assert "--raid-devices=8" in command and command[-8:] == steps["members"]


def test_our_mounted_array_is_left_alone_on_a_rerun():
    devices = lsblk("p4d_after_reboot")
    # lsblk shows the array (mounted by our unit) as a child of every member
    assert all(d["child_mounts"] == ["/mnt/nvme"] for d in devices)
    members = [d["path"] for d in devices]
    raid = {"members": members, "fstype": "ext4", "label": "llmserve", "uuid": "u"}
    assert _nvme.plan(devices, "llmserve", "ext4", "/dev/md/llmserve", raid) == {
        "target": "/dev/md/llmserve", "create_raid": False, "mkfs": False, "members": members}
    # assembled as md127 (mdadm.conf did not name it yet): found through lsblk's tree, still ours
    assert _nvme.plan(devices, "llmserve", "ext4", "/dev/md/llmserve", None)["target"] == "/dev/md127"
    with pytest.raises(_nvme.InstanceStoreError, match="mounted at /mnt/nvme"):
        _nvme.plan(devices, "llmserve", "xfs", "/dev/md/llmserve", None)


def test_mounted_or_foreign_filesystems_are_refused():
    with pytest.raises(_nvme.InstanceStoreError, match="mounted at /opt/dlami/nvme .*not ours \\(xfs"):
        _nvme.plan(lsblk("g5_premounted"), "llmserve", "ext4", "/dev/md/llmserve", None, force=True)
    device = dict(lsblk("g5_premounted")[0], mountpoints=[])
    with pytest.raises(_nvme.InstanceStoreError, match="already holds a filesystem \\(xfs, label None\\)"):
        _nvme.plan([device], "llmserve", "ext4", "/dev/md/llmserve", None)
    assert _nvme.plan([device], "llmserve", "ext4", "/dev/md/llmserve", None, force=True)["mkfs"] is True


def test_our_filesystem_on_a_single_device_is_kept_mounted_or_not():
    device = dict(lsblk("g5_xlarge")[0], fstype="ext4", label="llmserve")
    assert _nvme.plan([device], "llmserve", "ext4", "/dev/md/llmserve", None)["mkfs"] is False
    mounted = dict(device, mountpoints=["/mnt/nvme"])
    assert _nvme.plan([mounted], "llmserve", "ext4", "/dev/md/llmserve", None)["mkfs"] is False


def test_no_devices_is_a_noop():
    assert _nvme.plan([], "llmserve", "ext4", "/dev/md/llmserve", None) == {
        "target": None, "create_raid": False, "mkfs": False, "members": []}


def test_named_devices_override_detection():
    tree = json.loads((FIXTURES / "g5_xlarge.lsblk.json").read_text())
    every = [_nvme.device_from_lsblk_node(node) for node in tree["blockdevices"]]
    assert [d["path"] for d in _nvme.select_devices(every, ["/dev/nvme1n1"])] == ["/dev/nvme1n1"]
    with pytest.raises(_nvme.InstanceStoreError, match="/dev/loop9 not found"):
        _nvme.select_devices(every, ["/dev/loop9"])


def test_mkfs_commands_skip_discard():
    assert _nvme.mkfs_command("xfs", "llmserve", "/dev/md/llmserve") == [
        "mkfs.xfs", "-f", "-K", "-L", "llmserve", "/dev/md/llmserve"]
    ext4 = _nvme.mkfs_command("ext4", "llmserve", "/dev/nvme1n1")
    assert ext4[0] == "mkfs.ext4" and "nodiscard,lazy_itable_init=1,lazy_journal_init=1" in ext4


def test_blkid_export_parser():
    text = "DEVNAME=/dev/loop0\nUUID=1234-abcd\nBLOCK_SIZE=4096\nTYPE=ext4\nLABEL=llmserve\n"
    assert _nvme.parse_blkid_export(text) == {"fstype": "ext4", "label": "llmserve", "uuid": "1234-abcd"}
    assert _nvme.parse_blkid_export("") == {"fstype": None, "label": None, "uuid": None}


@pytest.mark.parametrize(
    ("where", "unit"),
    [("/mnt/nvme", "mnt-nvme.mount"), ("/mnt/instance-store/", "mnt-instance\\x2dstore.mount"),
     ("/opt/dlami/nvme", "opt-dlami-nvme.mount"), ("/", "-.mount"), ("/srv/.hidden", "srv-.hidden.mount")],
)
def test_mount_unit_name_matches_systemd_escape(where, unit):
    assert _nvme.mount_unit_name(where) == unit
