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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmserve.aws.plugins.module_utils import _nvme
from ansible_collections.llmserve.aws.plugins.module_utils._instance_store import InstanceStoreHost


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
    host = InstanceStoreHost(module.run_command, module.get_bin_path)
    try:
        result = host.prepare(params["devices"], params["fstype"], params["label"], params["raid_name"],
                              params["force"], module.check_mode)
    except _nvme.InstanceStoreError as exc:
        module.fail_json(msg=str(exc))
    if params["mount_point"]:
        result["mount_unit"] = _nvme.mount_unit_name(params["mount_point"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
