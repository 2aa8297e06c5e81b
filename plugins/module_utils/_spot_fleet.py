# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""EC2 Spot Fleet requests for the spot_fleet module: validation, request shaping, boto3 calls.

Private to this collection. Identity is a name: the request carries the tag NAME_TAG=name, and its ClientToken is
derived from the name (plus a generation counting earlier cancelled fleets of that name), so a retried
RequestSpotFleet returns the same request instead of a second fleet. Pure functions (validation, the desired
config, the immutable-field diff) take no client and are unit-tested; the boto3 wrappers retry with
AWSRetry.jittered_backoff and turn NotFound into None.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import re

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

NAME_TAG = "llmserve:spot-fleet"
# States in which a request still holds (or will hold) capacity and can be modified.
LIVE_STATES = ("submitted", "active", "modifying")
GONE_STATES = ("cancelled", "cancelled_terminating", "cancelled_running", "failed")

NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
IAM_ROLE_ARN_RE = r"arn:aws(?:-cn|-us-gov|-iso|-iso-b)?:iam::[0-9]{12}:role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})"
LAUNCH_TEMPLATE_ID_RE = r"lt-[0-9a-f]{8,17}"
LAUNCH_TEMPLATE_NAME_RE = r"[A-Za-z0-9().\-/_]{3,128}"
LAUNCH_TEMPLATE_VERSION_RE = r"\$Latest|\$Default|[1-9][0-9]{0,17}"
INSTANCE_TYPE_RE = r"[a-z][a-z0-9-]*\.[a-z0-9]+"
SUBNET_ID_RE = r"subnet-[0-9a-f]{8,17}"
AVAILABILITY_ZONE_RE = r"[a-z]{2}(?:-[a-z]+)+-[0-9][a-z]"
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
FLEET_OPTIONS = ("name", "state", "iam_fleet_role", "launch_template", "overrides", "allocation_strategy",
                 "on_demand_allocation_strategy", "fleet_type", "instance_interruption_behavior", "valid_until", "tags")

# Module option -> the SpotFleetRequestConfig key it sets, for the fields AWS cannot change on a live request.
IMMUTABLE_FIELDS = (
    ("iam_fleet_role", "IamFleetRole"),
    ("allocation_strategy", "AllocationStrategy"),
    ("on_demand_allocation_strategy", "OnDemandAllocationStrategy"),
    ("fleet_type", "Type"),
    ("instance_interruption_behavior", "InstanceInterruptionBehavior"),
    ("replace_unhealthy_instances", "ReplaceUnhealthyInstances"),
    ("terminate_instances_with_expiration", "TerminateInstancesWithExpiration"),
    ("valid_until", "ValidUntil"),
    ("launch_template", "LaunchTemplateSpecification"),
    ("overrides", "Overrides"),
    ("tags", "Tags"),
)
# What AWS assumes when a request leaves a field out, so an omitted field and its default compare equal.
AWS_DEFAULTS = {
    "OnDemandAllocationStrategy": "lowestPrice",
    "Type": "maintain",
    "InstanceInterruptionBehavior": "terminate",
    "ReplaceUnhealthyInstances": False,
    "TerminateInstancesWithExpiration": False,
    "ValidUntil": None,
}
OVERRIDE_KEYS = (
    ("instance_type", "InstanceType"),
    ("weighted_capacity", "WeightedCapacity"),
    ("subnet_id", "SubnetId"),
    ("availability_zone", "AvailabilityZone"),
    ("priority", "Priority"),
)

_retry = AWSRetry.jittered_backoff(retries=6, delay=1, max_delay=15)


class FleetInputError(Exception):
    """A parameter is unusable; the message names it and the fix."""


# --- validation (pure) -------------------------------------------------------------------------------------------

def _walk_strings(value, path):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_strings(key, "%s key" % path)
            yield from _walk_strings(item, "%s.%s" % (path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _walk_strings(item, "%s[%d]" % (path, index))
    elif isinstance(value, str):
        yield path, value


def _require(pattern, value, parameter, example):
    if value is not None and not re.fullmatch(pattern, value):
        raise FleetInputError("%s=%r is not valid: expected something like %s" % (parameter, value, example))


def parse_valid_until(text):
    """ISO 8601 -> aware UTC datetime (seconds); None stays None."""
    if text is None:
        return None
    cleaned = text.strip().replace("Z", "+00:00")
    try:
        moment = datetime.datetime.fromisoformat(cleaned)
    except ValueError:
        raise FleetInputError("valid_until=%r is not an ISO 8601 time; give e.g. 2030-01-31T00:00:00Z" % text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).replace(microsecond=0)


def validate(params):
    """Every check that needs no AWS call; raises FleetInputError naming the parameter and the fix."""
    # Only this module's own options: the AWS connection options carry secrets, which no message may repeat.
    own = dict((key, params.get(key)) for key in FLEET_OPTIONS)
    for path, text in _walk_strings(own, "params"):
        if CONTROL_CHARACTERS.search(text):
            raise FleetInputError("%s contains a control character (%r): remove it" % (path[len("params."):], text))
    _require(NAME_RE, params["name"], "name", "llmserve-7b (letters, digits, . _ -, at most 100)")
    if params.get("wait_timeout") is not None and params["wait_timeout"] <= 0:
        raise FleetInputError("wait_timeout=%s must be a positive number of seconds" % params["wait_timeout"])
    if params.get("wait_sleep") is not None and params["wait_sleep"] < 0:
        raise FleetInputError("wait_sleep=%s must not be negative" % params["wait_sleep"])
    if params["state"] == "absent":
        return
    if params.get("target_capacity") is None:
        raise FleetInputError("target_capacity is required with state=present: the fleet's total capacity units")
    target = params["target_capacity"]
    on_demand = params.get("on_demand_target_capacity") or 0
    if target < 0:
        raise FleetInputError("target_capacity=%d must not be negative (0 keeps the request with no instances)"
                              % target)
    if on_demand < 0:
        raise FleetInputError("on_demand_target_capacity=%d must not be negative" % on_demand)
    if on_demand > target:
        raise FleetInputError("on_demand_target_capacity=%d is more than target_capacity=%d: the on-demand base is "
                              "part of the total, so raise target_capacity or lower the base" % (on_demand, target))
    if not params.get("iam_fleet_role"):
        raise FleetInputError("iam_fleet_role is required with state=present: the ARN of the role Spot Fleet assumes "
                              "(trusting spotfleet.amazonaws.com)")
    _require(IAM_ROLE_ARN_RE, params["iam_fleet_role"], "iam_fleet_role",
             "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role")
    template = params.get("launch_template") or {}
    if not (template.get("id") or template.get("name")):
        raise FleetInputError("launch_template needs id or name: the launch template the fleet launches from")
    _require(LAUNCH_TEMPLATE_ID_RE, template.get("id"), "launch_template.id", "lt-0123456789abcdef0")
    _require(LAUNCH_TEMPLATE_NAME_RE, template.get("name"), "launch_template.name", "llmserve-7b")
    _require(LAUNCH_TEMPLATE_VERSION_RE, template.get("version"), "launch_template.version",
             "$Default, $Latest or a version number")
    for index, override in enumerate(params.get("overrides") or []):
        where = "overrides[%d]" % index
        _require(INSTANCE_TYPE_RE, override.get("instance_type"), where + ".instance_type", "g5.xlarge")
        _require(SUBNET_ID_RE, override.get("subnet_id"), where + ".subnet_id", "subnet-0123456789abcdef0")
        _require(AVAILABILITY_ZONE_RE, override.get("availability_zone"), where + ".availability_zone", "us-east-1a")
        if override.get("weighted_capacity") is not None and override["weighted_capacity"] <= 0:
            raise FleetInputError("%s.weighted_capacity=%s must be positive (capacity units one instance counts for)"
                                  % (where, override["weighted_capacity"]))
        if override.get("priority") is not None and override["priority"] < 0:
            raise FleetInputError("%s.priority=%s must not be negative (0 is the highest priority)"
                                  % (where, override["priority"]))
    parse_valid_until(params.get("valid_until"))


def role_name_of(arn):
    return re.fullmatch(IAM_ROLE_ARN_RE, arn).group(1)


def instance_types_of(params):
    return sorted(set(o["instance_type"] for o in params.get("overrides") or [] if o.get("instance_type")))


# --- the desired request (pure) ----------------------------------------------------------------------------------

def _template_spec(template):
    spec = {"Version": template.get("version") or "$Default"}
    if template.get("id"):
        spec["LaunchTemplateId"] = template["id"]
    else:
        spec["LaunchTemplateName"] = template["name"]
    return spec


def _override(override):
    shaped = {}
    for option, key in OVERRIDE_KEYS:
        if override.get(option) is not None:
            shaped[key] = float(override[option]) if key in ("WeightedCapacity", "Priority") else override[option]
    return shaped


def client_token(name, generation):
    """Same name and generation -> same token, so a retried create returns the same request (AWS idempotency)."""
    digest = hashlib.sha256(("%s\n%d" % (name, generation)).encode("utf-8")).hexdigest()[:32]
    return "llmserve-%s" % digest


def desired_config(params, generation):
    """The SpotFleetRequestConfig the module asks for (RequestSpotFleet's shape)."""
    tags = dict(params.get("tags") or {})
    tags[NAME_TAG] = params["name"]
    config = {
        "ClientToken": client_token(params["name"], generation),
        "IamFleetRole": params["iam_fleet_role"],
        "AllocationStrategy": params["allocation_strategy"],
        "OnDemandAllocationStrategy": params["on_demand_allocation_strategy"],
        "TargetCapacity": params["target_capacity"],
        "OnDemandTargetCapacity": params.get("on_demand_target_capacity") or 0,
        "Type": params["fleet_type"],
        "InstanceInterruptionBehavior": params["instance_interruption_behavior"],
        "ReplaceUnhealthyInstances": params["replace_unhealthy_instances"],
        "TerminateInstancesWithExpiration": params["terminate_instances_with_expiration"],
        "LaunchTemplateConfigs": [{
            "LaunchTemplateSpecification": _template_spec(params["launch_template"]),
            "Overrides": [_override(o) for o in params.get("overrides") or []],
        }],
        "TagSpecifications": [{"ResourceType": "spot-fleet-request",
                               "Tags": [{"Key": k, "Value": str(v)} for k, v in sorted(tags.items())]}],
    }
    valid_until = parse_valid_until(params.get("valid_until"))
    if valid_until is not None:
        config["ValidUntil"] = valid_until
    if not config["LaunchTemplateConfigs"][0]["Overrides"]:
        del config["LaunchTemplateConfigs"][0]["Overrides"]
    return config


def _normal_value(key, value):
    if value is None:
        return AWS_DEFAULTS.get(key)
    if key == "ValidUntil":
        moment = value if isinstance(value, datetime.datetime) else parse_valid_until(str(value))
        return moment.astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat()
    if key == "Overrides":
        return [dict((k, float(v) if k in ("WeightedCapacity", "Priority") else v) for k, v in o.items()) for o in value]
    if key == "Tags":
        return dict((t["Key"], t["Value"]) for t in value)
    if key == "LaunchTemplateSpecification":
        return dict((k, str(v)) for k, v in value.items())
    return value


def immutable_view(config):
    """The fields of a request that cannot change in place, normalised for comparison.

    config: a SpotFleetRequestConfig, with the request's Tags added under "Tags" for a live one.
    Tags count as immutable here: EC2 CreateTags on a Spot Fleet request is not applied by the local AWS this
    collection is tested on, so an in-place tag change could not be proven; replacing the fleet is.
    """
    template_config = (config.get("LaunchTemplateConfigs") or [{}])[0]
    view = {}
    for option, key in IMMUTABLE_FIELDS:
        if key in ("LaunchTemplateSpecification", "Overrides"):
            raw = template_config.get(key)
        elif key == "Tags":
            # A live request's tags sit beside its config; a wanted config carries them as TagSpecifications.
            raw = config.get("Tags") or [t for s in config.get("TagSpecifications") or [] for t in s["Tags"]]
        else:
            raw = config.get(key)
        if key in ("Overrides", "Tags") and raw is None:
            raw = []
        view[option] = _normal_value(key, raw)
    return view


def immutable_differences(current_config, wanted_config, template_id=None):
    """Options whose wanted value differs from the live request's; the template compared by id when AWS has it."""
    current, wanted = immutable_view(current_config), immutable_view(wanted_config)
    current_template = dict(current["launch_template"] or {})
    wanted_template = dict(wanted["launch_template"] or {})
    # AWS echoes the template as it was given (by id or by name): a name the wanted one shares is that template.
    wanted_name = wanted_template.pop("LaunchTemplateName", None)
    if wanted_name is not None:
        wanted_template["LaunchTemplateId"] = template_id
    if wanted_name is not None and current_template.get("LaunchTemplateName") == wanted_name:
        del current_template["LaunchTemplateName"]
        current_template["LaunchTemplateId"] = template_id
    current_template.pop("LaunchTemplateName", None) if "LaunchTemplateId" in current_template else None
    current["launch_template"], wanted["launch_template"] = current_template, wanted_template
    return [option for option, _key in IMMUTABLE_FIELDS if current[option] != wanted[option]]


def summary(fleet, instances):
    """What the module returns and diffs: the request as the user thinks of it."""
    if fleet is None:
        return {}
    config = fleet["SpotFleetRequestConfig"]
    return {
        "spot_fleet_request_id": fleet.get("SpotFleetRequestId"),
        "state": fleet.get("SpotFleetRequestState"),
        "activity_status": fleet.get("ActivityStatus"),
        "target_capacity": config.get("TargetCapacity"),
        "on_demand_target_capacity": config.get("OnDemandTargetCapacity") or 0,
        "fulfilled_capacity": config.get("FulfilledCapacity"),
        "tags": dict((t["Key"], t["Value"]) for t in fleet.get("Tags") or []),
        "instances": instances,
    }


def instance_summary(instance):
    return {
        "instance_id": instance["InstanceId"],
        "instance_type": instance.get("InstanceType"),
        "availability_zone": (instance.get("Placement") or {}).get("AvailabilityZone"),
        "private_ip_address": instance.get("PrivateIpAddress"),
        "lifecycle": instance.get("InstanceLifecycle") or "on-demand",
    }


# --- boto3 (retried; NotFound -> None) ---------------------------------------------------------------------------

@_retry
def _describe_fleets_page(client, **kwargs):
    return client.describe_spot_fleet_requests(**kwargs)


def fleets_named(client, name):
    """Every request tagged with this name, newest first (cancelled ones included: they count generations)."""
    found, token = [], None
    while True:
        page = _describe_fleets_page(client, **({"NextToken": token} if token else {}))
        for fleet in page.get("SpotFleetRequestConfigs", []):
            tags = dict((t["Key"], t["Value"]) for t in fleet.get("Tags") or [])
            if tags.get(NAME_TAG) == name:
                found.append(fleet)
        token = page.get("NextToken")
        if not token:
            break
    return sorted(found, key=lambda f: f.get("CreateTime") or 0, reverse=True)


def live_fleet(fleets):
    live = [f for f in fleets if f.get("SpotFleetRequestState") in LIVE_STATES]
    return live[0] if live else None


def describe_fleet(client, fleet_id):
    try:
        fleets = _describe_fleets_page(client, SpotFleetRequestIds=[fleet_id]).get("SpotFleetRequestConfigs", [])
    except is_boto3_error_code("InvalidSpotFleetRequestId.NotFound"):
        return None
    return fleets[0] if fleets else None


@_retry
def _fleet_instances_page(client, **kwargs):
    return client.describe_spot_fleet_instances(**kwargs)


@_retry
def _describe_instances(client, instance_ids):
    return client.describe_instances(InstanceIds=instance_ids)


def fleet_instances(client, fleet_id):
    ids, token = [], None
    while True:
        kwargs = {"SpotFleetRequestId": fleet_id}
        if token:
            kwargs["NextToken"] = token
        try:
            page = _fleet_instances_page(client, **kwargs)
        except is_boto3_error_code("InvalidSpotFleetRequestId.NotFound"):
            return []
        ids.extend(i["InstanceId"] for i in page.get("ActiveInstances", []))
        token = page.get("NextToken")
        if not token:
            break
    if not ids:
        return []
    reservations = _describe_instances(client, sorted(ids)).get("Reservations", [])
    instances = [instance_summary(i) for r in reservations for i in r.get("Instances", [])]
    return sorted(instances, key=lambda i: i["instance_id"])


@_retry
def _get_role(client, name):
    return client.get_role(RoleName=name)


def role_exists(iam_client, arn):
    try:
        _get_role(iam_client, role_name_of(arn))
    except is_boto3_error_code("NoSuchEntity"):
        return False
    return True


@_retry
def _describe_instance_types(client, names):
    return client.describe_instance_types(InstanceTypes=names)


def unknown_instance_types(client, names):
    """The names EC2 does not offer; [] when all exist."""
    if not names:
        return []
    try:
        known = _describe_instance_types(client, names).get("InstanceTypes", [])
    except is_boto3_error_code("InvalidInstanceType"):
        if len(names) == 1:
            return list(names)
        # EC2 rejects the whole call for one bad name: ask one by one to name every culprit.
        return [name for name in names if unknown_instance_types(client, [name])]
    found = set(t["InstanceType"] for t in known)
    return [name for name in names if name not in found]


@_retry
def _describe_launch_templates(client, **kwargs):
    return client.describe_launch_templates(**kwargs)


def launch_template_id(client, template):
    """The template's id, or None when no such template exists."""
    kwargs = {"LaunchTemplateIds": [template["id"]]} if template.get("id") else {"LaunchTemplateNames": [template["name"]]}
    try:
        found = _describe_launch_templates(client, **kwargs).get("LaunchTemplates", [])
    except is_boto3_error_code(["InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFoundException",
                                "InvalidLaunchTemplateId.Malformed"]):
        return None
    return found[0]["LaunchTemplateId"] if found else None


@_retry
def request_fleet(client, config):
    return client.request_spot_fleet(SpotFleetRequestConfig=config)["SpotFleetRequestId"]


@_retry
def modify_capacity(client, fleet_id, target_capacity, on_demand_target_capacity):
    client.modify_spot_fleet_request(SpotFleetRequestId=fleet_id, TargetCapacity=target_capacity,
                                     OnDemandTargetCapacity=on_demand_target_capacity)


@_retry
def cancel_fleet(client, fleet_id, terminate_instances):
    client.cancel_spot_fleet_requests(SpotFleetRequestIds=[fleet_id], TerminateInstances=terminate_instances)
