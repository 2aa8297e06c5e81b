# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Application Auto Scaling of endpoint variants: the wanted target/policy, the current one, and the steps between.

community.aws.application_autoscaling_policy refuses the sagemaker namespace, so this talks to boto3 directly
(through calls.py). Each variant has at most one scalable target (sagemaker:variant:DesiredInstanceCount) and one
target-tracking policy of this module's, named POLICY_NAME; policies of other names are left alone.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import calls

POLICY_NAME = "llmserve-target-tracking"
PREDEFINED_INVOCATIONS = "SageMakerVariantInvocationsPerInstance"


def policy_configuration(endpoint_name, variant_name, autoscaling):
    """TargetTrackingScalingPolicyConfiguration for the module's autoscaling option."""
    metric = autoscaling.get("metric") or {}
    configuration = {
        "TargetValue": float(autoscaling["target_value"]),
        "ScaleInCooldown": int(autoscaling["scale_in_cooldown"]),
        "ScaleOutCooldown": int(autoscaling["scale_out_cooldown"]),
    }
    if metric.get("name"):
        dimensions = metric.get("dimensions") or [
            {"name": "EndpointName", "value": endpoint_name}, {"name": "VariantName", "value": variant_name}]
        configuration["CustomizedMetricSpecification"] = {
            "MetricName": metric["name"], "Namespace": metric["namespace"], "Statistic": metric["statistic"],
            "Dimensions": [{"Name": item["name"], "Value": item["value"]} for item in dimensions],
        }
    else:
        configuration["PredefinedMetricSpecification"] = {
            "PredefinedMetricType": metric.get("predefined") or PREDEFINED_INVOCATIONS}
    return configuration


def desired(endpoint_name, variant_name, autoscaling):
    """The normalized scaling of one variant, or None for none."""
    if autoscaling is None:
        return None
    return {"min_capacity": int(autoscaling["min_capacity"]), "max_capacity": int(autoscaling["max_capacity"]),
            "policy": policy_configuration(endpoint_name, variant_name, autoscaling)}


def _normalize_policy(configuration):
    normalized = {
        "TargetValue": float(configuration["TargetValue"]),
        "ScaleInCooldown": int(configuration.get("ScaleInCooldown", 0)),
        "ScaleOutCooldown": int(configuration.get("ScaleOutCooldown", 0)),
    }
    predefined = configuration.get("PredefinedMetricSpecification")
    customized = configuration.get("CustomizedMetricSpecification")
    if predefined:
        normalized["PredefinedMetricSpecification"] = {"PredefinedMetricType": predefined["PredefinedMetricType"]}
    if customized:
        normalized["CustomizedMetricSpecification"] = dict(
            (key, customized[key]) for key in ("MetricName", "Namespace", "Statistic") if key in customized)
        normalized["CustomizedMetricSpecification"]["Dimensions"] = [
            {"Name": item["Name"], "Value": item["Value"]} for item in customized.get("Dimensions", [])]
    return normalized


def normalize_current(target, policies):
    """The normalized scaling read from AWS (target and this variant's policies), or None when not registered."""
    if target is None:
        return None
    ours = [policy for policy in policies if policy["PolicyName"] == POLICY_NAME]
    return {
        "min_capacity": int(target["MinCapacity"]), "max_capacity": int(target["MaxCapacity"]),
        "policy": _normalize_policy(ours[0]["TargetTrackingScalingPolicyConfiguration"]) if ours else None,
        "policy_arn": ours[0].get("PolicyARN") if ours else None,
    }


def read(client, endpoint_name, variant_names):
    """{variant: normalized current scaling or None} for the given variants."""
    current = {}
    for variant in variant_names:
        resource_id = calls.variant_resource_id(endpoint_name, variant)
        target = calls.describe_scalable_target(client, resource_id)
        current[variant] = normalize_current(target, calls.describe_scaling_policies(client, resource_id)
                                             if target else [])
    return current


def same(current, wanted):
    """Whether a variant's current scaling already is the wanted one (both normalized; None is none)."""
    if current is None or wanted is None:
        return current is None and wanted is None
    return (current["min_capacity"], current["max_capacity"], current["policy"]) == (
        wanted["min_capacity"], wanted["max_capacity"], wanted["policy"])


def remove(client, endpoint_name, variant):
    resource_id = calls.variant_resource_id(endpoint_name, variant)
    calls.delete_scaling_policy(client, resource_id, POLICY_NAME)
    calls.deregister_scalable_target(client, resource_id)


def apply(client, endpoint_name, variant, wanted):
    """Register/update the target and put the policy; returns the policy ARN."""
    resource_id = calls.variant_resource_id(endpoint_name, variant)
    calls.register_scalable_target(client, resource_id, wanted["min_capacity"], wanted["max_capacity"])
    return calls.put_scaling_policy(client, resource_id, POLICY_NAME, wanted["policy"]).get("PolicyARN")


def view(scaling):
    """The scaling of one variant as the module returns and diffs it."""
    if scaling is None:
        return None
    policy = scaling.get("policy") or {}
    customized = policy.get("CustomizedMetricSpecification")
    metric = ({"name": customized["MetricName"], "namespace": customized["Namespace"],
               "statistic": customized["Statistic"],
               "dimensions": [{"name": item["Name"], "value": item["Value"]} for item in customized["Dimensions"]]}
              if customized else
              {"predefined": (policy.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")})
    return {"min_capacity": scaling["min_capacity"], "max_capacity": scaling["max_capacity"],
            "policy_name": POLICY_NAME if policy else None, "target_value": policy.get("TargetValue"),
            "scale_in_cooldown": policy.get("ScaleInCooldown"), "scale_out_cooldown": policy.get("ScaleOutCooldown"),
            "metric": metric if policy else None}
