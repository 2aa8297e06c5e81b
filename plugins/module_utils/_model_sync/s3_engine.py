# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which engine moves an S3 model's bytes, shared by the s3_model_sync module and the boot-time CLI (boot.py).

Private to this collection. ``params`` holds the module's option names (engine, s5cmd_path, endpoint_url,
validate_certs, workers, concurrency, part_size_mib and the credential options).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import Boto3Engine
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import S5cmdEngine
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import TransferError
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import find_s5cmd

_ENVIRONMENT_OF_OPTION = (
    ("access_key", "AWS_ACCESS_KEY_ID"),
    ("secret_key", "AWS_SECRET_ACCESS_KEY"),
    ("session_token", "AWS_SESSION_TOKEN"),
    ("profile", "AWS_PROFILE"),
    ("region", "AWS_REGION"),
    ("aws_ca_bundle", "AWS_CA_BUNDLE"),
)


def s5cmd_environment(params, base=None):
    """The process environment for s5cmd: the credentials and region, never on the command line."""
    env = dict(os.environ if base is None else base)
    for option, variable in _ENVIRONMENT_OF_OPTION:
        if params.get(option):
            env[variable] = params[option]
    return env


def choose_s3_engine(params, make_client, warn):
    """s5cmd when wanted and found (auto falls back to boto3's transfer manager with a warning); TransferError
    when engine=s5cmd and no binary is found."""
    if params["engine"] in ("auto", "s5cmd"):
        binary = find_s5cmd(params.get("s5cmd_path"))
        if binary:
            return S5cmdEngine(
                binary,
                s5cmd_environment(params),
                endpoint_url=params.get("endpoint_url"),
                validate_certs=params.get("validate_certs", True),
                workers=params["workers"],
                concurrency=params["concurrency"],
                part_size_mib=params["part_size_mib"],
            )
        if params["engine"] == "s5cmd":
            raise TransferError("engine=s5cmd but no s5cmd binary was found (s5cmd_path=%s, PATH, next to the "
                                "Python that runs the sync)" % params.get("s5cmd_path"))
        warn("s5cmd not found; falling back to boto3's transfer manager (about a third of s5cmd's speed)")
    return Boto3Engine(make_client(), workers=params["workers"], concurrency=params["concurrency"],
                       part_size_mib=params["part_size_mib"])
