"""AWS-managed IAM policies in every account, as on AWS, on top of moto 5.2.5.

What moto lags on (measured with moto 5.2.5 server mode, boto3 1.44.8): unless the server runs with
MOTO_IAM_LOAD_MANAGED_POLICIES=true (which loads all ~1,300 of them into every account, slowly), no AWS-managed
policy exists, so AttachRolePolicy of arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore answers NoSuchEntity.
On AWS every account can attach every AWS-managed policy. This loads the ones the collection attaches from moto's
own copy of AWS's documents, into every account's IAM backend as it is created (and after a reset).
"""

import json
from typing import Any

from moto.iam.aws_managed_policies import aws_managed_policies_data
from moto.iam.models import AWSManagedPolicy, IAMBackend

# The AWS-managed policies the collection attaches (network_edge role: SSM Session Manager on the hosts).
ATTACHED_AWS_POLICIES = ("AmazonSSMManagedInstanceCore",)


def _patch_backend() -> None:
    original_init_aws_policies = IAMBackend._init_aws_policies

    def init_aws_policies(self: IAMBackend) -> list[Any]:
        # Restores: the AWS-managed policies the collection attaches exist (and are attachable) in every account.
        policies = original_init_aws_policies(self)
        loaded = {policy.name for policy in policies}
        documents = json.loads(aws_managed_policies_data)
        return policies + [
            AWSManagedPolicy.from_data(name, self.account_id, self.region_name, documents[name])
            for name in ATTACHED_AWS_POLICIES
            if name not in loaded
        ]

    IAMBackend._init_aws_policies = init_aws_policies


def apply() -> None:
    _patch_backend()
