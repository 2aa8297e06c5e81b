# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    """The wait options every module of this collection that waits for something shares (module_utils/_waiter.py)."""

    DOCUMENTATION = r"""
options:
  wait:
    description:
      - Whether to wait until the resource is ready before returning.
      - Modules cannot stream output while they run, so a long wait shows nothing until it ends. To see
        progress, run the task with C(async) and C(poll=0) and follow it with M(ansible.builtin.async_status)
        in an C(until) loop, which prints one line per poll.
    type: bool
    default: true
  wait_timeout:
    description:
      - How long to wait, in seconds, measured on a monotonic clock. When it passes the module fails and says
        what it waited for, how long, and what the last check saw.
    type: int
    default: 900
  wait_sleep:
    description:
      - Seconds between two checks while waiting.
    type: int
    default: 5
"""
