# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for llmserve.aws.hf_model_sync: the same progress lines as s3_model_sync's."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.action.s3_model_sync import ActionModule as ModelSyncAction


class ActionModule(ModelSyncAction):
    """Runs hf_model_sync as an async job and prints its progress file, exactly as for s3_model_sync."""
