# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find EC2 instance-store NVMe devices and decide what preparing them takes. Pure functions of text.

Private to this collection. EC2 names the NVMe controller model "Amazon EC2 NVMe Instance Storage" (EBS volumes
are "Amazon Elastic Block Store"); the serial is "AWS" + hex. The same model string appears in ``lsblk`` (read
from sysfs, so it works without udev), in ``nvme list -o json`` and in the udev links
``/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_<serial>``. Device names are NOT stable across boots,
so the filesystem is mounted by UUID.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar

INSTANCE_STORE_MODEL = "Amazon EC2 NVMe Instance Storage"
BY_ID_PREFIX = "nvme-Amazon_EC2_NVMe_Instance_Storage_"
LSBLK_COLUMNS = "NAME,MODEL,SERIAL,SIZE,TYPE,FSTYPE,LABEL,UUID,MOUNTPOINT"
LSBLK_ARGS = ("-J", "-b", "-o", LSBLK_COLUMNS)

FSTYPES = ("ext4", "xfs")
RAID_MEMBER = "linux_raid_member"


class InstanceStoreError(ValueError):
    """Output that cannot be trusted, or devices that must not be touched."""


# Folders a blank filesystem must never be mounted over (it would hide the system), and trees below which a mount
# of model weights has no business.
SYSTEM_FOLDERS = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
                  "/opt", "/proc", "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var",
                  "/var/lib", "/var/log", "/var/tmp", "/var/cache")
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr")
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,16}")
_RAID_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


def validate_options(params):
    """Errors in instance_store's options (each names the option), before any device is touched."""
    errors = []
    mount_point = params.get("mount_point")
    if mount_point is not None:
        error = grammar.absolute_path("mount_point", mount_point)
        normalized = "/" + mount_point.strip("/")
        if error is None and normalized in SYSTEM_FOLDERS:
            error = ("mount_point %s is a system folder: mounting a blank filesystem there hides what the system "
                     "needs; use a folder of its own such as /mnt/models" % mount_point)
        elif error is None and normalized.startswith(tuple(tree + "/" for tree in SYSTEM_TREES)):
            error = "mount_point %s is inside a system tree; use a folder of its own such as /mnt/models" % mount_point
        errors.append(error)
    errors.append(grammar.control_character("label", params.get("label")))
    if not errors[-1] and not _LABEL.fullmatch(params.get("label") or ""):
        errors.append("label %r must be 1 to 16 letters, digits, '_' or '-'" % params.get("label"))
    if grammar.control_character("raid_name", params.get("raid_name")) or not _RAID_NAME.fullmatch(
            params.get("raid_name") or ""):
        errors.append("raid_name %r must be 1 to 32 letters, digits, '_' or '-' (it names /dev/md/<raid_name>)"
                      % params.get("raid_name"))
    for device in params.get("devices") or []:
        error = grammar.absolute_path("devices item", device)
        if error is None and not device.startswith("/dev/"):
            error = "devices item %r must be a device path under /dev" % device
        errors.append(error)
    return [error for error in errors if error]


def _clean(value):
    return (value or "").strip() if isinstance(value, str) else value


def _mountpoints(node):
    points = node.get("mountpoints")
    if points is None:
        points = [node.get("mountpoint")]
    return [p for p in points if p]


def device_from_lsblk_node(node):
    """One lsblk JSON node -> the device record the planner reads."""
    name = _clean(node.get("name"))
    children = node.get("children") or []
    child_mounts = [p for child in children for p in _mountpoints(child)]
    return {
        "path": name if name.startswith("/") else "/dev/" + name,
        "name": name.rsplit("/", 1)[-1],
        "serial": _clean(node.get("serial")) or None,
        "size": int(node.get("size") or 0),
        "fstype": _clean(node.get("fstype")) or None,
        "label": _clean(node.get("label")) or None,
        "uuid": _clean(node.get("uuid")) or None,
        "mountpoints": _mountpoints(node),
        "children": [
            {
                "path": "/dev/" + _clean(child.get("name")).rsplit("/", 1)[-1],
                "type": _clean(child.get("type")),
                "fstype": _clean(child.get("fstype")) or None,
                "label": _clean(child.get("label")) or None,
                "uuid": _clean(child.get("uuid")) or None,
                "mountpoints": _mountpoints(child),
            }
            for child in children
        ],
        "child_mounts": child_mounts,
    }


def parse_lsblk(text):
    """``lsblk -J -b -o NAME,MODEL,SERIAL,SIZE,TYPE,FSTYPE,LABEL,UUID,MOUNTPOINT`` -> instance-store disks."""
    try:
        tree = json.loads(text)
    except ValueError as exc:
        raise InstanceStoreError("lsblk printed no JSON: %s" % exc)
    devices = []
    for node in tree.get("blockdevices") or []:
        if _clean(node.get("type")) == "disk" and _clean(node.get("model")) == INSTANCE_STORE_MODEL:
            devices.append(device_from_lsblk_node(node))
    return sorted(devices, key=lambda d: _natural_key(d["name"]))


def parse_nvme_list(text):
    """``nvme list -o json`` (nvme-cli's flat ``Devices`` list) -> ``[{"path", "serial", "size"}]``."""
    try:
        tree = json.loads(text)
    except ValueError as exc:
        raise InstanceStoreError("nvme list printed no JSON: %s" % exc)
    devices = []
    for item in tree.get("Devices") or []:
        if _clean(item.get("ModelNumber")) == INSTANCE_STORE_MODEL and item.get("DevicePath"):
            devices.append({
                "path": item["DevicePath"],
                "serial": _clean(item.get("SerialNumber")) or None,
                "size": int(item.get("PhysicalSize") or 0),
            })
    return sorted(devices, key=lambda d: _natural_key(d["path"]))


def parse_blkid_export(text):
    """``blkid -p -o export DEV`` -> ``{"fstype", "label", "uuid"}`` (all None for a blank device).

    lsblk takes filesystem facts from udev's database, which containers and early boot lack; blkid's low-level
    probe reads the device itself.
    """
    values = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return {
        "fstype": values.get("TYPE") or None,
        "label": values.get("LABEL") or None,
        "uuid": values.get("UUID") or None,
    }


def serials_from_by_id(names):
    """Entries of /dev/disk/by-id -> instance-store serials (partition links ``-partN`` are skipped)."""
    serials = []
    for name in names:
        if name.startswith(BY_ID_PREFIX) and not re.search(r"-part\d+$", name):
            serials.append(name[len(BY_ID_PREFIX):])
    return sorted(set(serials))


def _natural_key(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def select_devices(detected, wanted_paths=None):
    """The devices to use: all detected ones, or exactly ``wanted_paths`` (tests point this at loop devices)."""
    if not wanted_paths:
        return detected
    by_path = dict((d["path"], d) for d in detected)
    missing = [p for p in wanted_paths if p not in by_path]
    if missing:
        raise InstanceStoreError("devices %s not found by lsblk" % ", ".join(missing))
    return [by_path[p] for p in wanted_paths]


def _shared_array(devices):
    """The RAID child all ``devices`` are members of (lsblk lists it under each member), or None."""
    arrays = []
    for device in devices:
        raids = [child for child in device["children"] if (child.get("type") or "").startswith("raid")]
        if len(raids) != 1:
            return None
        arrays.append(raids[0])
    return arrays[0] if all(a["path"] == arrays[0]["path"] for a in arrays) else None


def plan(devices, label, fstype, raid_device, raid_state, force=False):
    """What preparing ``devices`` takes, or an error naming what is in the way. Pure.

    A filesystem with our type and label is ours: it is kept, mounted or not (a re-run on a prepared host, or
    after a reboot). Anything else is formatted only when blank, or with ``force``; a mounted foreign filesystem
    is never touched.
    ``raid_state``: None when ``raid_device`` does not exist, else ``{"members": [paths], "fstype", "label"}``.
    Returns ``{"target": path, "create_raid": bool, "mkfs": bool, "members": [paths]}``.
    """
    if fstype not in FSTYPES:
        raise InstanceStoreError("fstype must be one of %s" % ", ".join(FSTYPES))
    if not devices:
        return {"target": None, "create_raid": False, "mkfs": False, "members": []}
    paths = [d["path"] for d in devices]

    def ours(facts):
        return bool(facts) and facts.get("fstype") == fstype and facts.get("label") == label

    def refuse_foreign(where, facts, mounts):
        if mounts:
            raise InstanceStoreError(
                "%s is mounted at %s with a filesystem that is not ours (%s, label %r); unmount it, or set "
                "model_sync_instance_store to false and point the model folder at it"
                % (where, ", ".join(mounts), facts.get("fstype"), facts.get("label"))
            )
        if facts.get("fstype") and not force:
            raise InstanceStoreError(
                "%s already holds a filesystem (%s, label %r), not ours (%s, label %r); refusing to format it "
                "without force" % (where, facts.get("fstype"), facts.get("label"), fstype, label)
            )

    if len(devices) == 1:
        device = devices[0]
        if ours(device):
            return {"target": device["path"], "create_raid": False, "mkfs": False, "members": paths}
        refuse_foreign(device["path"], device, device["mountpoints"] + device["child_mounts"])
        return {"target": device["path"], "create_raid": False, "mkfs": True, "members": paths}

    # Several devices: one RAID0 array across all of them (p4d.24xlarge has 8 x 1000 GB).
    if raid_state and sorted(raid_state["members"]) == sorted(paths):
        if ours(raid_state):
            return {"target": raid_device, "create_raid": False, "mkfs": False, "members": paths}
        refuse_foreign(raid_device, raid_state, [])
        return {"target": raid_device, "create_raid": False, "mkfs": True, "members": paths}
    array = _shared_array(devices)
    if array is not None and ours(array):
        # Assembled under another name (e.g. md127 after a reboot before mdadm.conf knew it): still ours.
        return {"target": array["path"], "create_raid": False, "mkfs": False, "members": paths}
    for device in devices:
        mounts = device["mountpoints"] + device["child_mounts"]
        if device["fstype"] == RAID_MEMBER and not mounts:
            if not force:
                raise InstanceStoreError(
                    "%s is a member of another RAID array; refusing to rebuild it without force" % device["path"])
            continue
        refuse_foreign(device["path"], device, mounts)
    if raid_state and not force:
        raise InstanceStoreError(
            "%s exists with members %s, not %s; refusing to rebuild it without force"
            % (raid_device, ", ".join(raid_state["members"]), ", ".join(paths))
        )
    return {"target": raid_device, "create_raid": True, "mkfs": True, "members": paths}


def mkfs_command(fstype, label, device):
    """Format fast: no discard pass over multi-TB NVMe (it is blank), no reserved blocks on a data volume."""
    if fstype == "xfs":
        return ["mkfs.xfs", "-f", "-K", "-L", label, device]
    return ["mkfs.ext4", "-F", "-q", "-m", "0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
            "-L", label, device]


def mdadm_create_command(raid_device, name, members):
    return ["mdadm", "--create", raid_device, "--run", "--level=0", "--chunk=256", "--name=%s" % name,
            "--raid-devices=%d" % len(members)] + list(members)


def mount_unit_name(where):
    """systemd's name for the mount unit of ``where``, as ``systemd-escape --path --suffix=mount`` prints it."""
    path = "/".join(part for part in where.split("/") if part)
    if not path:
        return "-.mount"
    safe = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")
    escaped = []
    for index, byte in enumerate(path.encode("utf-8")):
        if byte == ord("/"):
            escaped.append("-")
        elif byte in safe and not (byte == ord(".") and index == 0):
            escaped.append(chr(byte))
        else:
            escaped.append("\\x%02x" % byte)
    return "".join(escaped) + ".mount"
