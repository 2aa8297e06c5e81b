#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: instance_store
short_description: Find EC2 NVMe instance-store devices and give them one filesystem (RAID0 when several)
version_added: 0.1.0
description:
  - Finds the devices whose NVMe model is C(Amazon EC2 NVMe Instance Storage) with C(lsblk). EBS volumes are never
    picked. It reads the model from sysfs, so it works without udev.
  - One device gets a filesystem directly. Several devices (for example 8 on p4d.24xlarge) become one RAID0
    array (C(mdadm)), which is recorded in C(mdadm.conf) so that it assembles again after a reboot.
  - Returns the filesystem UUID to mount by, because NVMe device names change between boots. Mounting is left to
    the caller, for example a systemd mount unit with C(nofail) as the C(llmserve.aws.model_sync) role renders.
  - Does nothing and reports C(changed=false) on instance types without an instance store.
  - A device or array that already holds this module's filesystem (same type and label) is left as it is. A
    foreign filesystem or a mounted device makes the module fail unless O(force=true).
author:
  - llmserve.aws maintainers (@llmserve)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Detects and plans; creates no array and formats nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  devices:
    description:
      - Use exactly these block devices instead of detecting instance-store NVMe devices. Tests point this at
        loop devices. In production leave it empty.
    type: list
    elements: path
    default: []
  fstype:
    description: Filesystem to create.
    type: str
    choices: [ext4, xfs]
    default: ext4
  label:
    description: Filesystem label, which marks the filesystem as this module's. xfs allows at most 12 characters.
    type: str
    default: llmserve
  raid_name:
    description: Name of the RAID0 array when there are several devices; the array is C(/dev/md/<raid_name>).
    type: str
    default: llmserve
  mount_point:
    description:
      - Where the caller mounts the filesystem. Used only to return the systemd mount unit name for it
        (RV(mount_unit)); this module mounts nothing.
      - It must be an absolute path of its own. V(/), a system folder (V(/etc), V(/usr), V(/var), V(/opt), V(/home)...)
        or a folder inside C(/etc), C(/usr), C(/boot), C(/proc), C(/sys), C(/dev) or C(/run) fails before any device is
        touched.
    type: path
  force:
    description:
      - Format devices that hold a foreign filesystem or are mounted. Their data is lost (instance-store data is
        lost at every stop anyway).
    type: bool
    default: false
notes:
  - Instance-store devices come back blank after a stop and start. A mount with C(nofail) lets the instance boot
    anyway, and the next run of this module prepares the devices again.
requirements:
  - lsblk, blkid, mkfs.ext4 or mkfs.xfs; mdadm when there are several devices.
"""

EXAMPLES = r"""
- name: Prepare the instance store
  llmserve.aws.instance_store:
    fstype: xfs
  register: store

- name: Mount it by UUID (nofail) when there is one
  ansible.posix.mount:
    path: /mnt/nvme
    src: "UUID={{ store.uuid }}"
    fstype: "{{ store.fstype }}"
    opts: defaults,noatime,nofail
    state: mounted
  when: store.device is not none
"""

RETURN = r"""
devices:
  description: The instance-store devices found (or given), in order.
  returned: always
  type: list
  elements: str
  sample: ["/dev/nvme1n1", "/dev/nvme2n1"]
device:
  description: The block device that holds the filesystem (the one device, or the RAID0 array); null when none.
  returned: always
  type: str
  sample: /dev/md/llmserve
uuid:
  description: UUID of the filesystem, to mount by; null when there is none (or in check mode before formatting).
  returned: always
  type: str
fstype:
  description: Filesystem type.
  returned: always
  type: str
size_bytes:
  description: Sum of the devices' sizes.
  returned: always
  type: int
created_raid:
  description: Whether this run created the RAID0 array (or would, in check mode).
  returned: always
  type: bool
formatted:
  description: Whether this run made the filesystem (or would, in check mode).
  returned: always
  type: bool
mount_unit:
  description: The systemd mount unit name for O(mount_point), as C(systemd-escape --path --suffix=mount) prints it.
  returned: when O(mount_point) is set
  type: str
  sample: mnt-nvme.mount
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmserve.aws.plugins.module_utils import _nvme

MDADM_CONF_CANDIDATES = ("/etc/mdadm/mdadm.conf", "/etc/mdadm.conf")


def lsblk(module, extra=()):
    binary = module.get_bin_path("lsblk", required=True)
    rc, out, err = module.run_command([binary] + list(_nvme.LSBLK_ARGS) + list(extra))
    if rc != 0:
        module.fail_json(msg="lsblk failed (rc %d): %s" % (rc, err.strip()))
    return out


def detect(module, wanted):
    """Instance-store disks from lsblk, or the devices the task names (looked up in the same lsblk output)."""
    if not wanted:
        return _nvme.parse_lsblk(lsblk(module))
    text = lsblk(module, wanted)
    tree = json.loads(text)
    devices = [_nvme.device_from_lsblk_node(node) for node in tree.get("blockdevices") or []]
    return _nvme.select_devices(devices, [os.path.realpath(p) for p in wanted])


def probe(module, device):
    """Filesystem facts read from the device itself (blkid -p), for when lsblk has no udev data."""
    blkid = module.get_bin_path("blkid", required=True)
    rc, out, _err = module.run_command([blkid, "-p", "-o", "export", device])
    # blkid exits 2 when the device holds nothing it recognizes.
    return _nvme.parse_blkid_export(out if rc == 0 else "")


def with_probed_filesystems(module, devices):
    for device in devices:
        if not device["fstype"]:
            device.update(probe(module, device["path"]))
    return devices


def raid_state(module, raid_device):
    if not os.path.exists(raid_device):
        return None
    real = os.path.realpath(raid_device)
    members = []
    slaves = "/sys/block/%s/slaves" % os.path.basename(real)
    if os.path.isdir(slaves):
        members = sorted("/dev/" + name for name in os.listdir(slaves))
    facts = probe(module, real)
    facts["members"] = members
    return facts


def record_array(module, raid_device):
    """Append the array to mdadm.conf (once) and refresh the initramfs so it assembles under its name at boot."""
    mdadm = module.get_bin_path("mdadm", required=True)
    rc, out, err = module.run_command([mdadm, "--detail", "--brief", raid_device])
    if rc != 0:
        module.fail_json(msg="mdadm --detail failed: %s" % err.strip())
    line = out.strip().splitlines()[0] if out.strip() else ""
    conf = next((p for p in MDADM_CONF_CANDIDATES if os.path.exists(p)), MDADM_CONF_CANDIDATES[0])
    existing = ""
    if os.path.exists(conf):
        with open(conf) as handle:
            existing = handle.read()
    uuid_token = next((tok for tok in line.split() if tok.startswith("UUID=")), None)
    if line and (uuid_token is None or uuid_token not in existing):
        os.makedirs(os.path.dirname(conf), exist_ok=True)
        with open(conf, "a") as handle:
            handle.write(line + "\n")
        initramfs = module.get_bin_path("update-initramfs") or module.get_bin_path("dracut")
        if initramfs:
            args = [initramfs, "-u"] if initramfs.endswith("update-initramfs") else [initramfs, "-f"]
            module.run_command(args)


def blkid_uuid(module, device):
    return probe(module, device)["uuid"]


def run(module, command):
    rc, out, err = module.run_command(command)
    if rc != 0:
        module.fail_json(msg="%s failed (rc %d): %s" % (command[0], rc, (err or out).strip()), cmd=command)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            devices=dict(type="list", elements="path", default=[]),
            fstype=dict(type="str", choices=list(_nvme.FSTYPES), default="ext4"),
            label=dict(type="str", default="llmserve"),
            raid_name=dict(type="str", default="llmserve"),
            force=dict(type="bool", default=False),
            mount_point=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    errors = _nvme.validate_options(params)
    if errors:
        module.fail_json(msg="; ".join(errors))
    if params["fstype"] == "xfs" and len(params["label"]) > 12:
        module.fail_json(
            msg="xfs labels hold at most 12 characters; %r has %d" % (params["label"], len(params["label"])))
    raid_device = "/dev/md/%s" % params["raid_name"]
    try:
        devices = with_probed_filesystems(module, detect(module, params["devices"]))
        state = raid_state(module, raid_device) if len(devices) > 1 else None
        steps = _nvme.plan(devices, params["label"], params["fstype"], raid_device, state, params["force"])
    except _nvme.InstanceStoreError as exc:
        module.fail_json(msg=str(exc))

    result = {
        "changed": steps["create_raid"] or steps["mkfs"],
        "devices": [d["path"] for d in devices],
        "device": steps["target"],
        "fstype": params["fstype"] if steps["target"] else None,
        "uuid": None,
        "size_bytes": sum(d["size"] for d in devices),
        "created_raid": steps["create_raid"],
        "formatted": steps["mkfs"],
    }
    if params["mount_point"]:
        result["mount_unit"] = _nvme.mount_unit_name(params["mount_point"])
    if steps["target"] is None:
        module.exit_json(**result)
    if module.check_mode:
        result["uuid"] = None if steps["mkfs"] else blkid_uuid(module, steps["target"])
        module.exit_json(**result)

    if steps["create_raid"]:
        mdadm = module.get_bin_path("mdadm", required=True)
        command = _nvme.mdadm_create_command(raid_device, params["raid_name"], steps["members"])
        run(module, [mdadm] + command[1:])
        record_array(module, raid_device)
    if steps["mkfs"]:
        command = _nvme.mkfs_command(params["fstype"], params["label"], steps["target"])
        binary = module.get_bin_path(command[0], required=True)
        run(module, [binary] + command[1:])
    result["uuid"] = blkid_uuid(module, steps["target"])
    if not result["uuid"]:
        module.fail_json(msg="no filesystem UUID on %s after preparing it" % steps["target"], **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
