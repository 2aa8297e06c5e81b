# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test loopback_host (documented in loopback_host.yml next to this file): a thin wrapper over
module_utils/_validate.is_loopback_host, so roles decide "beyond loopback" exactly as vllm_launch does."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils._validate import is_loopback_host


class TestModule(object):
    def tests(self):
        return {"loopback_host": is_loopback_host}
