# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Model sync (private to this collection), by layer, from the Ansible module down to the files.

module (the options s3_model_sync and hf_model_sync share, and their run), sync (one sync: plan, stage, verify,
switch), source_s3 and source_hf (where a model comes from: listing, checksums, errors that name the fix),
transfer (the engines that move bytes: s5cmd, boto3, threads), manifest (pure decisions: what a source holds
and what a sync must do), store (the local side: versions, staging, verification, the atomic switch).
Import from the submodules; this file exports nothing.
"""
