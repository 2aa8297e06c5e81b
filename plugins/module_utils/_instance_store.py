# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preparing the NVMe instance store on a host: find the devices, make the RAID0 array and the filesystem.

Private to this collection. Shared by the instance_store module and the boot path's sync (_model_sync/boot.py),
which prepares a store that came back blank after a stop and start. Every command goes through ``run_command(argv)
-> (rc, stdout, stderr)`` and ``bin_path(name)`` (AnsibleModule's, or the boot CLI's); the decisions are the pure
functions of _nvme.py. Failures raise _nvme.InstanceStoreError with a message that names the fix.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible_collections.llmserve.aws.plugins.module_utils import _nvme

MDADM_CONF_CANDIDATES = ("/etc/mdadm/mdadm.conf", "/etc/mdadm.conf")


class InstanceStoreHost(object):
    def __init__(self, run_command, bin_path):
        self._run_command = run_command
        self._bin_path = bin_path

    def binary(self, name):
        path = self._bin_path(name)
        if not path:
            raise _nvme.InstanceStoreError("%s is not installed (PATH): install it (the model_sync role does)" % name)
        return path

    def run(self, command):
        rc, out, err = self._run_command([self.binary(command[0])] + list(command[1:]))
        if rc != 0:
            raise _nvme.InstanceStoreError("%s failed (rc %d): %s" % (command[0], rc, (err or out).strip()))
        return out

    def lsblk(self, extra=()):
        return self.run(["lsblk"] + list(_nvme.LSBLK_ARGS) + list(extra))

    def detect(self, wanted):
        """Instance-store disks from lsblk, or the devices given (looked up in the same lsblk output)."""
        if not wanted:
            return _nvme.parse_lsblk(self.lsblk())
        tree = json.loads(self.lsblk(wanted))
        devices = [_nvme.device_from_lsblk_node(node) for node in tree.get("blockdevices") or []]
        return _nvme.select_devices(devices, [os.path.realpath(p) for p in wanted])

    def probe(self, device):
        """Filesystem facts read from the device itself (blkid -p), for when lsblk has no udev data."""
        rc, out, _err = self._run_command([self.binary("blkid"), "-p", "-o", "export", device])
        # blkid exits 2 when the device holds nothing it recognizes.
        return _nvme.parse_blkid_export(out if rc == 0 else "")

    def with_probed_filesystems(self, devices):
        for device in devices:
            if not device["fstype"]:
                device.update(self.probe(device["path"]))
        return devices

    def raid_state(self, raid_device):
        if not os.path.exists(raid_device):
            return None
        real = os.path.realpath(raid_device)
        members = []
        slaves = "/sys/block/%s/slaves" % os.path.basename(real)
        if os.path.isdir(slaves):
            members = sorted("/dev/" + name for name in os.listdir(slaves))
        facts = self.probe(real)
        facts["members"] = members
        return facts

    def record_array(self, raid_device):
        """Append the array to mdadm.conf (once) and refresh the initramfs so it assembles under its name at boot."""
        line = self.run(["mdadm", "--detail", "--brief", raid_device]).strip()
        line = line.splitlines()[0] if line else ""
        conf = next((p for p in MDADM_CONF_CANDIDATES if os.path.exists(p)), MDADM_CONF_CANDIDATES[0])
        existing = ""
        if os.path.exists(conf):
            with open(conf) as handle:
                existing = handle.read()
        uuid_token = next((tok for tok in line.split() if tok.startswith("UUID=")), None)
        if line and (uuid_token is None or uuid_token not in existing):
            if not os.path.isdir(os.path.dirname(conf)):
                os.makedirs(os.path.dirname(conf))
            with open(conf, "a") as handle:
                handle.write(line + "\n")
            initramfs = self._bin_path("update-initramfs") or self._bin_path("dracut")
            if initramfs:
                args = [initramfs, "-u"] if initramfs.endswith("update-initramfs") else [initramfs, "-f"]
                self._run_command(args)

    def prepare(self, devices, fstype, label, raid_name, force, check_mode):
        """Plan and, unless check_mode, make the array and the filesystem. The result the module returns."""
        raid_device = "/dev/md/%s" % raid_name
        found = self.with_probed_filesystems(self.detect(devices))
        state = self.raid_state(raid_device) if len(found) > 1 else None
        steps = _nvme.plan(found, label, fstype, raid_device, state, force)
        result = {
            "changed": steps["create_raid"] or steps["mkfs"],
            "devices": [d["path"] for d in found],
            "device": steps["target"],
            "fstype": fstype if steps["target"] else None,
            "uuid": None,
            "size_bytes": sum(d["size"] for d in found),
            "created_raid": steps["create_raid"],
            "formatted": steps["mkfs"],
        }
        if steps["target"] is None:
            return result
        if check_mode:
            result["uuid"] = None if steps["mkfs"] else self.probe(steps["target"])["uuid"]
            return result
        if steps["create_raid"]:
            self.run(_nvme.mdadm_create_command(raid_device, raid_name, steps["members"]))
            self.record_array(raid_device)
        if steps["mkfs"]:
            self.run(_nvme.mkfs_command(fstype, label, steps["target"]))
        result["uuid"] = self.probe(steps["target"])["uuid"]
        if not result["uuid"]:
            raise _nvme.InstanceStoreError("no filesystem UUID on %s after preparing it" % steps["target"])
        return result
