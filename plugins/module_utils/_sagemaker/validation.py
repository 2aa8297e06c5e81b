# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whole-value checks of every input that reaches a SageMaker or Application Auto Scaling call.

Each check raises InputError naming the parameter and the fix, before the module reads or changes anything.
The token is checked without ever putting its value in a message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.module_utils.six import string_types

# SageMaker's own name grammar (endpoints, variants, models, configs).
NAME_PATTERN = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
ROLE_ARN_PATTERN = r"arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}"
ARN_SERVICE_PATTERN = r"arn:[\w-]+:([\w-]+):.*"
# SageMaker hosting pulls from Amazon ECR: <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repo>(:tag|@digest).
IMAGE_URI_PATTERN = (r"\d{12}\.dkr\.ecr\.[a-z]{2}(-[a-z]+)+-\d\.amazonaws\.com(\.cn)?/[a-z0-9]+([._/-][a-z0-9]+)*"
                     r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})")
S3_PREFIX_PATTERN = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[\x21-\x7e]{1,1000}"
HF_MODEL_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?"
ENV_KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,1023}"
TOKEN_PATTERN = r"[\x21-\x7e]{1,1024}"
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

MAX_ENVIRONMENT_ENTRIES = 100  # ContainerDefinition.Environment limit
MAX_ENVIRONMENT_VALUE = 1024
TIMEOUT_RANGE_S = (60, 3600)  # ContainerStartupHealthCheckTimeoutInSeconds, ModelDataDownloadTimeoutInSeconds
VOLUME_RANGE_GB = (1, 512)
STATISTICS = ("Average", "Minimum", "Maximum", "SampleCount", "Sum")
# Set by the module from its own options; giving them in `environment` would bypass no_log or the planner.
RESERVED_ENVIRONMENT = {
    "HF_TOKEN": "hf_token (no_log)",
    "HUGGING_FACE_HUB_TOKEN": "hf_token (no_log)",
    "SM_NUM_GPUS": "num_gpus",
    "HF_MODEL_ID": "hf_model_id or model_data_url",
}


class InputError(Exception):
    """A bad input; the message names the parameter and the fix."""


def _text(parameter, value, pattern, fix):
    if not isinstance(value, string_types) or CONTROL_CHARACTERS.search(value) or not re.fullmatch(pattern, value):
        raise InputError("%s=%r is not valid: %s" % (parameter, value, fix))
    return value


def endpoint_name(value, parameter="name"):
    return _text(parameter, value, NAME_PATTERN,
                 "use 1-63 letters, digits and hyphens, starting and ending with a letter or digit")


def role_arn(value, parameter="execution_role_arn"):
    if isinstance(value, string_types) and not CONTROL_CHARACTERS.search(value):
        service = re.fullmatch(ARN_SERVICE_PATTERN, value)
        if service and service.group(1) != "iam":
            raise InputError("%s=%r is an ARN of the %s service, not an IAM role; SageMaker assumes an IAM role: "
                             "give arn:aws:iam::ACCOUNT:role/NAME" % (parameter, value, service.group(1)))
    return _text(parameter, value, ROLE_ARN_PATTERN,
                 "give the IAM role SageMaker assumes, arn:aws:iam::ACCOUNT:role/NAME")


def image_uri(value, parameter="image_uri"):
    return _text(parameter, value, IMAGE_URI_PATTERN,
                 "SageMaker hosting pulls from Amazon ECR: ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG "
                 "(or @sha256:DIGEST), e.g. the TGI or LMI image URI for your region")


def model_data_url(value, parameter="model_data_url"):
    _text(parameter, value, S3_PREFIX_PATTERN,
          "give the S3 prefix holding the uncompressed model files, s3://BUCKET/PREFIX/")
    return value if value.endswith("/") else value + "/"  # SageMaker's S3Prefix data source wants the slash


def hf_model_id(value, parameter="hf_model_id"):
    return _text(parameter, value, HF_MODEL_ID_PATTERN, "give a Hugging Face model id, ORGANIZATION/NAME")


def hf_token(value, parameter="hf_token"):
    if not isinstance(value, string_types) or not re.fullmatch(TOKEN_PATTERN, value):
        raise InputError("%s is not valid: a Hugging Face token is 1-1024 printable characters without spaces or "
                         "control characters (the value is not shown)" % parameter)
    return value


def environment(value, parameter="environment"):
    for key, item in (value or {}).items():
        _text("%s key" % parameter, key, ENV_KEY_PATTERN,
              "environment variable names are letters, digits and underscores, not starting with a digit")
        if key in RESERVED_ENVIRONMENT:
            raise InputError("%s[%s] is set by the module: use %s instead" % (parameter, key, RESERVED_ENVIRONMENT[key]))
        if not isinstance(item, string_types) or CONTROL_CHARACTERS.search(item) or len(item) > MAX_ENVIRONMENT_VALUE:
            raise InputError("%s[%s]=%r is not valid: give a string of at most %d characters without control "
                             "characters (quote numbers and booleans)" % (parameter, key, item, MAX_ENVIRONMENT_VALUE))
    if len(value or {}) > MAX_ENVIRONMENT_ENTRIES - len(RESERVED_ENVIRONMENT):
        raise InputError("%s has %d entries; SageMaker allows %d including the %d the module sets" % (
            parameter, len(value), MAX_ENVIRONMENT_ENTRIES, len(RESERVED_ENVIRONMENT)))
    return dict(value or {})


def in_range(parameter, value, low, high, unit=""):
    if value is not None and not low <= value <= high:
        raise InputError("%s=%s is out of range: use %s to %s%s" % (parameter, value, low, high, unit))
    return value


def tags(value, parameter="tags"):
    for key, item in (value or {}).items():
        _text("%s key" % parameter, key, r"[\x20-\x7e\u00a0-\uffff]{1,128}",
              "tag keys are 1-128 printable characters")
        if key.lower().startswith("aws:"):
            raise InputError("%s key %r uses the reserved aws: prefix; choose another key" % (parameter, key))
        _text("%s[%s]" % (parameter, key), item, r"[\x20-\x7e\u00a0-\uffff]{0,256}",
              "tag values are up to 256 printable characters (quote numbers and booleans)")
    return dict(value or {})


def autoscaling(value, parameter="autoscaling"):
    """Check one autoscaling dict (already typed by the argument spec)."""
    if value is None:
        return None
    if value["min_capacity"] < 1:
        raise InputError("%s.min_capacity=%s: a SageMaker variant keeps at least 1 instance; use 1 or more" % (
            parameter, value["min_capacity"]))
    if value["max_capacity"] < value["min_capacity"]:
        raise InputError("%s.max_capacity=%s is below min_capacity=%s; raise max_capacity" % (
            parameter, value["max_capacity"], value["min_capacity"]))
    if value["target_value"] <= 0:
        raise InputError("%s.target_value must be positive, got %s" % (parameter, value["target_value"]))
    for cooldown in ("scale_in_cooldown", "scale_out_cooldown"):
        in_range("%s.%s" % (parameter, cooldown), value[cooldown], 0, 86400, " seconds")
    metric = value.get("metric") or {}
    if metric.get("name") is not None:
        _text("%s.metric.name" % parameter, metric["name"], r"[\x21-\x7e]{1,255}",
              "give the CloudWatch metric name, e.g. GPUUtilization")
        _text("%s.metric.namespace" % parameter, metric.get("namespace"), r"[\x20-\x7e]{1,255}",
              "give the CloudWatch namespace, e.g. /aws/sagemaker/Endpoints")
        if metric.get("statistic") not in STATISTICS:
            raise InputError("%s.metric.statistic=%r: use one of %s" % (
                parameter, metric.get("statistic"), ", ".join(STATISTICS)))
        for index, dimension in enumerate(metric.get("dimensions") or []):
            where = "%s.metric.dimensions[%d]" % (parameter, index)
            _text(where + ".name", dimension.get("name"), r"[\x20-\x7e]{1,255}", "give the dimension's name")
            _text(where + ".value", dimension.get("value"), r"[\x20-\x7e]{1,1024}", "give the dimension's value")
    return value
