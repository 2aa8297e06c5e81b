# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The endpoint flow: read what AWS has, list the steps to the wanted state (pure), run them, read again.

Models and endpoint configs are immutable and named from their content (naming.py), so a change is: create the
new ones, UpdateEndpoint (SageMaker's blue/green: the old fleet serves until the new one passes its health
checks), wait for InService, then delete the superseded ones. A failed update rolls back in SageMaker; the module
then fails with SageMaker's FailureReason and the endpoint keeps serving its previous config.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.llmserve.aws.plugins.module_utils import _waiter as waiter
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import calls
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import desired as wanted
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import naming
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import scaling

TRANSITIONAL = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


class EndpointFailure(Exception):
    """SageMaker could not bring the endpoint to the wanted config; carries its FailureReason."""

    def __init__(self, message, failure_reason, endpoint):
        super(EndpointFailure, self).__init__(message)
        self.failure_reason = failure_reason
        self.endpoint = endpoint


def _managed(names, endpoint_name, kind):
    # NameContains narrows the listing on AWS (moto ignores it for models); the name grammar decides.
    return sorted(name for name in names if naming.is_managed_name(endpoint_name, kind, name))


def read(sagemaker, autoscaling, name, extra_variants=()):
    """Everything the module compares, as plain data."""
    endpoint = calls.describe_endpoint(sagemaker, name)
    config = calls.describe_endpoint_config(sagemaker, endpoint["EndpointConfigName"]) if endpoint else None
    variants = list(config["ProductionVariants"]) if config else []
    containers = {}
    for variant in variants:
        model = calls.describe_model(sagemaker, variant["ModelName"])
        if model is not None:
            containers[variant["ModelName"]] = model.get("PrimaryContainer", {})
    variant_names = sorted(set(extra_variants) | set(variant["VariantName"] for variant in variants))
    return {
        "endpoint": endpoint,
        "variants": variants,
        "containers": containers,
        "scaling": scaling.read(autoscaling, name, variant_names),
        "tags": calls.list_tags(sagemaker, endpoint["EndpointArn"]) if endpoint else {},
        "configs": _managed(calls.list_endpoint_config_names(sagemaker, name), name, naming.CONFIG_KIND),
        "models": _managed(calls.list_model_names(sagemaker, name), name, naming.MODEL_KIND),
    }


def _target_config(endpoint):
    """The config an endpoint serves or is moving to."""
    pending = (endpoint.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
    return pending or endpoint["EndpointConfigName"]


def present_steps(current, target, delete_old):
    """The ordered steps from `current` (read()) to `target` (desired.Desired): [(action, subject)]. Pure."""
    endpoint = current["endpoint"]
    steps = []
    status = endpoint["EndpointStatus"] if endpoint else None
    moving = endpoint is None or status == "Failed" or _target_config(endpoint) != target.config_name
    if moving and endpoint is not None and status != "Failed":
        new_types = dict((variant["VariantName"], variant["InstanceType"]) for variant in target.config[
            "ProductionVariants"])
        # SageMaker refuses to change the instance type of a variant under auto scaling, and a removed variant
        # must not stay a scalable target: deregister first, register again after the update.
        for variant in current["variants"]:
            variant_name = variant["VariantName"]
            if current["scaling"].get(variant_name) is not None and new_types.get(variant_name) != variant.get(
                    "InstanceType"):
                steps.append(("remove_autoscaling", variant_name))
    steps.extend(("create_model", model) for model in sorted(target.models) if model not in current["models"])
    if target.config_name not in current["configs"]:
        steps.append(("create_endpoint_config", target.config_name))
    if endpoint is not None and status == "Failed":
        steps.append(("delete_failed_endpoint", endpoint["EndpointName"]))
    if endpoint is None or status == "Failed":
        steps.append(("create_endpoint", target.config_name))
    elif moving:
        steps.append(("update_endpoint", target.config_name))
    removed = set(subject for action, subject in steps if action == "remove_autoscaling")
    for variant_name, scaling_wanted in sorted(target.scaling.items()):
        now = None if variant_name in removed else current["scaling"].get(variant_name)
        if not scaling.same(now, scaling_wanted):
            steps.append(("put_autoscaling" if scaling_wanted else "remove_autoscaling", variant_name))
    for variant_name, scaling_now in sorted(current["scaling"].items()):
        if variant_name not in target.scaling and scaling_now is not None and variant_name not in removed:
            steps.append(("remove_autoscaling", variant_name))
    if endpoint is not None and status != "Failed":
        wanted_tags = dict((tag["Key"], tag["Value"]) for tag in target.config["Tags"])
        if any(current["tags"].get(key) != value for key, value in wanted_tags.items()):
            steps.append(("tag_endpoint", sorted(key for key, value in wanted_tags.items()
                                                 if current["tags"].get(key) != value)))
        if set(current["tags"]) - set(wanted_tags):
            steps.append(("untag_endpoint", sorted(set(current["tags"]) - set(wanted_tags))))
    if delete_old:
        steps.extend(("delete_endpoint_config", config) for config in current["configs"]
                     if config != target.config_name)
        steps.extend(("delete_model", model) for model in current["models"] if model not in target.models)
    return steps


def absent_steps(current, delete_old):
    endpoint = current["endpoint"]
    steps = [("remove_autoscaling", variant) for variant, value in sorted(current["scaling"].items())
             if value is not None]
    if endpoint is not None:
        steps.append(("delete_endpoint", endpoint["EndpointName"]))
    if delete_old:
        steps.extend(("delete_endpoint_config", config) for config in current["configs"])
        steps.extend(("delete_model", model) for model in current["models"])
    return steps


def current_view(current):
    endpoint = current["endpoint"]
    if endpoint is None:
        return {}
    return wanted.view(endpoint["EndpointConfigName"], current["variants"], current["containers"],
                       current["scaling"], current["tags"])


def target_view(target):
    return wanted.view(target.config_name, target.config["ProductionVariants"],
                       dict((name, request["PrimaryContainer"]) for name, request in target.models.items()),
                       target.scaling, dict((tag["Key"], tag["Value"]) for tag in target.config["Tags"]))


class Runner:
    """Runs steps against AWS within one deadline (wait_timeout, monotonic) for every wait of the run."""

    def __init__(self, sagemaker, autoscaling, name, wait, wait_timeout, wait_sleep, warn):
        self.sagemaker = sagemaker
        self.autoscaling = autoscaling
        self.name = name
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.wait_sleep = wait_sleep
        self.started = time.monotonic()
        self.deadline = self.started + wait_timeout
        self.warn = warn
        self.waits = []

    def _remaining(self):
        # Never zero: a deadline already spent still gets one check, and the timeout names the whole limit.
        return max(self.deadline - time.monotonic(), 0.001)

    def wait_for_endpoint(self, what, gone=False):
        def check():
            endpoint = calls.describe_endpoint(self.sagemaker, self.name)
            if endpoint is None:
                return waiter.CheckResult(True, "endpoint gone", None)
            status = endpoint["EndpointStatus"]
            return waiter.CheckResult(not gone and status not in TRANSITIONAL, "status %s" % status, endpoint)

        try:
            result = waiter.wait_for(check, "SageMaker endpoint %s %s" % (self.name, what), self._remaining(),
                                     self.wait_sleep)
        except waiter.WaitTimeout as timeout:
            # Name the user's limit and the time spent since the run began, not what was left for this wait.
            raise waiter.WaitTimeout(timeout.what, self.wait_timeout, time.monotonic() - self.started,
                                     timeout.attempts, timeout.last_detail)
        self.waits.append(result.as_dict())
        return result.value

    def settle_first(self, current, target_config=None):
        """An endpoint already moving is waited for before anything changes (SageMaker refuses changes then)."""
        endpoint = current["endpoint"]
        if endpoint is None or endpoint["EndpointStatus"] not in TRANSITIONAL:
            return False
        if not self.wait and target_config is not None and _target_config(endpoint) == target_config:
            return False
        self.wait_for_endpoint("to finish %s before changing it" % endpoint["EndpointStatus"].lower())
        return True

    def _verify(self, config_name, previous_config):
        endpoint = self.wait_for_endpoint("to be InService on %s" % config_name)
        if endpoint is None:
            raise EndpointFailure("SageMaker endpoint %s disappeared while moving to %s" % (self.name, config_name),
                                  None, None)
        reason = endpoint.get("FailureReason")
        if endpoint["EndpointStatus"] == "Failed":
            raise EndpointFailure("SageMaker could not create endpoint %s on %s: %s. Fix the cause and run again; "
                                  "the failed endpoint is replaced then" % (self.name, config_name, reason),
                                  reason, endpoint)
        if endpoint["EndpointConfigName"] != config_name:
            raise EndpointFailure("SageMaker rolled back the update of endpoint %s to %s: %s. The endpoint still "
                                  "serves %s (status %s)" % (self.name, config_name, reason,
                                                             endpoint["EndpointConfigName"] or previous_config,
                                                             endpoint["EndpointStatus"]), reason, endpoint)
        return endpoint

    def run(self, steps, target=None, current=None):
        """Run steps in order; returns {variant: policy ARN} for the policies put."""
        policy_arns = {}
        endpoint = current["endpoint"] if current else None
        # Whether the endpoint is on its final config: deleting superseded resources and scaling wait for that.
        settled = endpoint is None or endpoint["EndpointStatus"] not in TRANSITIONAL
        previous = endpoint["EndpointConfigName"] if endpoint else None
        for action, subject in steps:
            if action == "remove_autoscaling":
                scaling.remove(self.autoscaling, self.name, subject)
            elif action == "create_model":
                calls.create_model(self.sagemaker, target.models[subject])
            elif action == "create_endpoint_config":
                calls.create_endpoint_config(self.sagemaker, target.config)
            elif action == "delete_failed_endpoint":
                calls.delete_endpoint(self.sagemaker, self.name)
                self.wait_for_endpoint("to be deleted (it had failed)", gone=True)
            elif action in ("create_endpoint", "update_endpoint"):
                if action == "create_endpoint":
                    calls.create_endpoint(self.sagemaker, self.name, subject, target.config["Tags"])
                else:
                    calls.update_endpoint(self.sagemaker, self.name, subject)
                if self.wait:
                    self._verify(subject, previous)
                else:
                    settled = False
            elif action == "put_autoscaling":
                if settled:
                    policy_arns[subject] = scaling.apply(self.autoscaling, self.name, subject, target.scaling[subject])
                else:
                    self.warn("auto scaling of variant %s not applied: the endpoint is still moving (wait: false); "
                              "run again once it is InService" % subject)
            elif action == "tag_endpoint":
                endpoint = calls.describe_endpoint(self.sagemaker, self.name)
                wanted_tags = dict((tag["Key"], tag["Value"]) for tag in target.config["Tags"])
                calls.add_tags(self.sagemaker, endpoint["EndpointArn"], dict((key, wanted_tags[key]) for key in subject))
            elif action == "untag_endpoint":
                endpoint = calls.describe_endpoint(self.sagemaker, self.name)
                calls.delete_tags(self.sagemaker, endpoint["EndpointArn"], subject)
            elif action == "delete_endpoint":
                calls.delete_endpoint(self.sagemaker, self.name)
                if self.wait:
                    self.wait_for_endpoint("to be deleted", gone=True)
                else:
                    settled = False
            elif action in ("delete_endpoint_config", "delete_model"):
                if not settled:
                    self.warn("%s %s kept: the endpoint is still moving (wait: false); run again to delete it" % (
                        action.split("_", 1)[1].replace("_", " "), subject))
                elif action == "delete_endpoint_config":
                    calls.delete_endpoint_config(self.sagemaker, subject)
                else:
                    calls.delete_model(self.sagemaker, subject)
            else:
                raise ValueError("unknown step %s" % action)
        return policy_arns


def _steps_out(steps):
    return [{"action": action, "subject": subject} for action, subject in steps]


def _summary(name, view, endpoint, steps, plans, waits, status=None):
    scaling_now = view.get("autoscaling", {})
    return {
        "endpoint_name": name,
        "endpoint_arn": endpoint.get("EndpointArn") if endpoint else None,
        "endpoint_status": status or (endpoint.get("EndpointStatus") if endpoint else None),
        "endpoint_config_name": view.get("endpoint_config_name"),
        "failure_reason": endpoint.get("FailureReason") if endpoint else None,
        "model_names": sorted(view.get("models", {})),
        "variants": view.get("variants", []),
        "autoscaling": scaling_now,
        "changes": _steps_out(steps),
        "plan": plans,
        "waits": waits,
    }


def _policy_arns(current):
    return dict((variant, value.get("policy_arn")) for variant, value in sorted(current["scaling"].items())
                if value is not None and value.get("policy_arn"))


def ensure_present(runner, target, check_mode, delete_old):
    """Bring the endpoint to `target`; returns the module result (changed, diff, returns)."""
    current = read(runner.sagemaker, runner.autoscaling, runner.name, target.variants)
    if not check_mode and runner.settle_first(current, target.config_name):
        current = read(runner.sagemaker, runner.autoscaling, runner.name, target.variants)
    before = current_view(current)
    steps = present_steps(current, target, delete_old)
    plans = dict((variant, dict(plan)) for variant, plan in target.plans.items())
    if check_mode:
        endpoint = current["endpoint"]
        actions = set(action for action, _subject in steps)
        status = ("Creating" if "create_endpoint" in actions else "Updating" if "update_endpoint" in actions
                  else None)
        after = target_view(target)
        result = _summary(runner.name, after, endpoint, steps, plans, runner.waits, status)
        result["scaling_policy_arns"] = _policy_arns(current)
    else:
        runner.run(steps, target, current)
        final = read(runner.sagemaker, runner.autoscaling, runner.name, target.variants)
        after = current_view(final)
        result = _summary(runner.name, after, final["endpoint"], steps, plans, runner.waits)
        result["scaling_policy_arns"] = _policy_arns(final)
    result["changed"] = bool(steps)
    result["diff"] = {"before": before, "after": after}
    return result


def ensure_absent(runner, check_mode, delete_old):
    current = read(runner.sagemaker, runner.autoscaling, runner.name)
    if not check_mode and runner.settle_first(current):
        current = read(runner.sagemaker, runner.autoscaling, runner.name)
    before = current_view(current)
    steps = absent_steps(current, delete_old)
    endpoint = None
    if check_mode:
        status = "Deleting" if current["endpoint"] is not None else None
        endpoint = current["endpoint"]
    else:
        runner.run(steps, current=current)
        endpoint = calls.describe_endpoint(runner.sagemaker, runner.name)
        status = None
    result = _summary(runner.name, {}, endpoint, steps, {}, runner.waits, status)
    result["scaling_policy_arns"] = {}
    result["changed"] = bool(steps)
    result["diff"] = {"before": before, "after": {}}
    return result
