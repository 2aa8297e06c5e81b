# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every SageMaker and Application Auto Scaling call the endpoint module makes, each wrapped once with retries.

Reads of a missing resource return None (SageMaker answers ValidationException "Could not find ..."), and
deletes of a missing resource do nothing, so callers never parse error messages.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing library

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

_retry = AWSRetry.jittered_backoff(retries=8, delay=1, max_delay=20,
                                   catch_extra_error_codes=["ThrottlingException", "ServiceUnavailable"])

SAGEMAKER_NAMESPACE = "sagemaker"
VARIANT_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def _is_not_found(error):
    details = error.response.get("Error", {})
    code, message = details.get("Code", ""), details.get("Message", "")
    if code in ("ResourceNotFound", "ResourceNotFoundException", "ObjectNotFoundException"):
        return True
    # SageMaker reports a missing model/config/endpoint as a ValidationException ("Could not find ..."), and
    # moto's Application Auto Scaling a missing target/policy as one too ("No scalable target found ...").
    return code in ("ValidationException", "ValidationError") and any(
        words in message for words in ("Could not find", "does not exist", "No scalable target found",
                                       "No scaling policy found"))


def _none_if_missing(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except botocore.exceptions.ClientError as error:
        if _is_not_found(error):
            return None
        raise


# --- SageMaker --------------------------------------------------------------------------------------------------

@_retry
def _call(client, method, **kwargs):
    return getattr(client, method)(**kwargs)


def describe_endpoint(client, name):
    return _none_if_missing(_call, client, "describe_endpoint", EndpointName=name)


def describe_endpoint_config(client, name):
    return _none_if_missing(_call, client, "describe_endpoint_config", EndpointConfigName=name)


def describe_model(client, name):
    return _none_if_missing(_call, client, "describe_model", ModelName=name)


def create_model(client, request):
    return _call(client, "create_model", **request)


def create_endpoint_config(client, request):
    return _call(client, "create_endpoint_config", **request)


def create_endpoint(client, name, config_name, tags):
    return _call(client, "create_endpoint", EndpointName=name, EndpointConfigName=config_name, Tags=tags)


def update_endpoint(client, name, config_name):
    return _call(client, "update_endpoint", EndpointName=name, EndpointConfigName=config_name)


def delete_endpoint(client, name):
    _none_if_missing(_call, client, "delete_endpoint", EndpointName=name)


def delete_endpoint_config(client, name):
    _none_if_missing(_call, client, "delete_endpoint_config", EndpointConfigName=name)


def delete_model(client, name):
    _none_if_missing(_call, client, "delete_model", ModelName=name)


@_retry
def list_tags(client, arn):
    tags, token = {}, None
    while True:
        page = client.list_tags(ResourceArn=arn, **({"NextToken": token} if token else {}))
        tags.update((tag["Key"], tag["Value"]) for tag in page.get("Tags", []))
        token = page.get("NextToken")
        if not token:
            return tags


@_retry
def add_tags(client, arn, tags):
    client.add_tags(ResourceArn=arn, Tags=[{"Key": key, "Value": value} for key, value in sorted(tags.items())])


@_retry
def delete_tags(client, arn, keys):
    client.delete_tags(ResourceArn=arn, TagKeys=sorted(keys))


# --- Application Auto Scaling ------------------------------------------------------------------------------------

def variant_resource_id(endpoint_name, variant_name):
    return "endpoint/%s/variant/%s" % (endpoint_name, variant_name)


@_retry
def describe_scalable_target(client, resource_id):
    targets = client.describe_scalable_targets(ServiceNamespace=SAGEMAKER_NAMESPACE, ResourceIds=[resource_id],
                                               ScalableDimension=VARIANT_DIMENSION)["ScalableTargets"]
    matching = [target for target in targets if target["ResourceId"] == resource_id]
    return matching[0] if matching else None


@_retry
def describe_scaling_policies(client, resource_id):
    policies, token = [], None
    while True:
        page = client.describe_scaling_policies(ServiceNamespace=SAGEMAKER_NAMESPACE, ResourceId=resource_id,
                                                ScalableDimension=VARIANT_DIMENSION,
                                                **({"NextToken": token} if token else {}))
        # Filter again: the resource id filter is a prefix/substring match on some implementations.
        policies.extend(policy for policy in page["ScalingPolicies"] if policy["ResourceId"] == resource_id)
        token = page.get("NextToken")
        if not token:
            return policies


@_retry
def register_scalable_target(client, resource_id, min_capacity, max_capacity):
    client.register_scalable_target(ServiceNamespace=SAGEMAKER_NAMESPACE, ResourceId=resource_id,
                                    ScalableDimension=VARIANT_DIMENSION, MinCapacity=min_capacity,
                                    MaxCapacity=max_capacity)


@_retry
def put_scaling_policy(client, resource_id, policy_name, configuration):
    return client.put_scaling_policy(PolicyName=policy_name, ServiceNamespace=SAGEMAKER_NAMESPACE,
                                     ResourceId=resource_id, ScalableDimension=VARIANT_DIMENSION,
                                     PolicyType="TargetTrackingScaling",
                                     TargetTrackingScalingPolicyConfiguration=configuration)


def delete_scaling_policy(client, resource_id, policy_name):
    _none_if_missing(_call, client, "delete_scaling_policy", PolicyName=policy_name,
                     ServiceNamespace=SAGEMAKER_NAMESPACE, ResourceId=resource_id, ScalableDimension=VARIANT_DIMENSION)


def deregister_scalable_target(client, resource_id):
    _none_if_missing(_call, client, "deregister_scalable_target", ServiceNamespace=SAGEMAKER_NAMESPACE,
                     ResourceId=resource_id, ScalableDimension=VARIANT_DIMENSION)


def _list_names(method, key, name_key, contains):
    names, token = [], None
    while True:
        page = method(NameContains=contains, **({"NextToken": token} if token else {}))
        names.extend(item[name_key] for item in page.get(key, []))
        token = page.get("NextToken")
        if not token:
            return names


@_retry
def list_endpoint_config_names(client, contains):
    return _list_names(client.list_endpoint_configs, "EndpointConfigs", "EndpointConfigName", contains)


@_retry
def list_model_names(client, contains):
    return _list_names(client.list_models, "Models", "ModelName", contains)
