#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: hf_model_sync
short_description: Sync a model from the Hugging Face Hub to local disk, verified, resumable and switched atomically
version_added: 0.1.0
description:
  - The Hugging Face counterpart of M(llmserve.aws.s3_model_sync), for teams without an S3 copy of their models.
    It keeps the same layout under O(dest) (C(current) symlink, C(versions/), staging, stored manifest), the same
    re-run behaviour (nothing downloaded, C(changed=false), when the resolved commit's files are unchanged) and
    the same atomic switch.
  - Resolves O(revision) to a commit and lists its files with their sizes and hashes through the Hub's API. It
    verifies LFS files by SHA-256 and the others by git blob id.
  - Sends O(token) only to the Hub's host, never to the CDN its LFS downloads redirect to. It never logs the
    token. Partial downloads resume with HTTP Range requests.
author:
  - llmserve.aws maintainers (@llmserve)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmserve.aws.model_sync
  - ansible.builtin.action_common_attributes.flow
options:
  repo:
    description: The model repository, C(org/name).
    type: str
    required: true
  revision:
    description: Branch, tag or commit to sync.
    type: str
    default: main
  token:
    description: Hugging Face token, needed for gated and private models. Defaults to E(HF_TOKEN).
    type: str
  endpoint:
    description: The Hub's address, or a mirror's. Defaults to E(HF_ENDPOINT), else V(https://huggingface.co).
    type: str
  validate_certs:
    description: Verify the Hub's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each HTTP response.
    type: int
    default: 60
  exclude:
    description: Shell patterns (fnmatch) matched against file paths in the repository. Matching files are not synced.
    type: list
    elements: str
    default: []
  verify:
    description: V(checksum) verifies SHA-256 or git blob ids. V(size) checks sizes only.
    type: str
    choices: [checksum, size]
    default: checksum
"""

EXAMPLES = r"""
- name: Sync a gated model straight from the Hub
  llmserve.aws.hf_model_sync:
    repo: meta-llama/Llama-3.1-8B-Instruct
    revision: main
    token: "{{ vault_hf_token }}"
    dest: /mnt/nvme/models/llama-3.1-8b-instruct
    exclude:
      - original/*
"""

RETURN = r"""
model_path:
  description: The path to serve, C(<dest>/current).
  returned: always
  type: str
version:
  description: Content id of the synced files.
  returned: always
  type: str
previous_version:
  description: The version C(current) pointed at before this run, or null.
  returned: always
  type: str
version_path:
  description: The folder of this version.
  returned: always
  type: str
source:
  description: C(hf://<repo>@<commit>), the commit O(revision) resolved to.
  returned: always
  type: str
engine:
  description: Always C(https).
  returned: always
  type: str
files:
  description: Number of files in the model.
  returned: always
  type: int
total_bytes:
  description: Size of the model.
  returned: always
  type: int
downloaded:
  description: Paths downloaded by this run (in check mode, the ones that would be).
  returned: always
  type: list
  elements: str
downloaded_bytes:
  description: Bytes downloaded (or to download, in check mode).
  returned: always
  type: int
reused:
  description: Files whose content did not change, hard-linked from the previous version.
  returned: always
  type: int
deleted:
  description: Paths no longer in the repository.
  returned: always
  type: list
  elements: str
resumed:
  description: Files kept or verified from an interrupted run instead of downloaded.
  returned: always
  type: int
verification:
  description: How the files checked by this run were verified, as method name to file count.
  returned: always
  type: dict
pruned:
  description: Old versions removed.
  returned: always
  type: list
  elements: str
throughput_mb_s:
  description: Downloaded megabytes per second, verification included. Null when nothing was downloaded.
  returned: always
  type: float
elapsed_s:
  description: Seconds the module ran.
  returned: always
  type: float
timings:
  description:
    - Seconds spent in each phase. C(list_s) is listing the source. C(describe_s) is reading checksums
      (HeadObject). C(transfer_and_verify_s) is downloading and verifying, which overlap. C(publish_s) is the
      manifest, the switch and pruning. Only the phases that ran are present.
  returned: always
  type: dict
  sample: {"list_s": 0.012, "describe_s": 0.02, "transfer_and_verify_s": 2.41, "publish_s": 0.004}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.basic import env_fallback

from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_hf import HfError
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_hf import HfSource
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_hf import HttpEngine
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_hf import HubClient
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.module import require_at_least_one
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.module import run_sync_module
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.module import sync_argument_spec

DEFAULT_ENDPOINT = "https://huggingface.co"


def main():
    module = AnsibleModule(
        argument_spec=sync_argument_spec(
            repo=dict(type="str", required=True),
            revision=dict(type="str", default="main"),
            token=dict(type="str", no_log=True, fallback=(env_fallback, ["HF_TOKEN"])),
            endpoint=dict(type="str", fallback=(env_fallback, ["HF_ENDPOINT"])),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    require_at_least_one(module, ("workers", "keep_versions", "timeout"))
    client = HubClient(params["endpoint"] or DEFAULT_ENDPOINT, params["token"], params["validate_certs"],
                       params["timeout"])
    try:
        source = HfSource(client, params["repo"], params["revision"], params["exclude"])
    except HfError as exc:
        module.fail_json(msg=str(exc))
    engine = HttpEngine(client, params["repo"], params["revision"], params["workers"])
    run_sync_module(module, source, engine, (HfError,))


if __name__ == "__main__":
    main()
