# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    """What the model sync modules (s3_model_sync, hf_model_sync) share: module_utils/_model_sync/module.py."""

    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    details: Lists the source, plans the sync and checks disk space; downloads and changes nothing.
  diff_mode:
    support: full
    details: Shows the model's file list (path, size, ETag or hash) before and after.
  platform:
    platforms: posix
  action:
    support: full
    details: The action plugin prints progress while the module runs as an async job.
  async:
    support: full
    details: With O(progress_interval) above 0 the action plugin runs the module as an async job itself.
  bypass_host_loop:
    support: none
options:
  dest:
    description:
      - The folder that holds the model's versions. The path to serve is C(<dest>/current).
    type: path
    required: true
  workers:
    description: Files downloaded in parallel.
    type: int
    default: 8
  keep_versions:
    description:
      - How many versions to keep, counting the current one. V(1) keeps only the current one. A kept older
        version makes a rollback a plain symlink switch with no download.
    type: int
    default: 1
  min_free_mib:
    description:
      - Free space, in MiB, that must remain on O(dest)'s filesystem after the download. The check runs before
        anything is downloaded.
    type: int
    aliases: [min_free_mb]
    default: 1024
  progress_interval:
    description:
      - Seconds between progress lines printed by the action plugin. V(0) runs the module without progress lines,
        as a plain task.
    type: int
    default: 10
  progress_id:
    description:
      - Set by the action plugin to tag the progress file of this run. Leave it unset.
    type: str
"""
