#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: spot_fleet
short_description: Idempotent EC2 Spot Fleet requests from a launch template, with an on-demand base
version_added: 0.1.0
description:
  - Creates, resizes and cancels an EC2 Spot Fleet request identified by O(name). The request carries the tag
    C(llmserve:spot-fleet=<name>) and a C(ClientToken) derived from the name, so a re-run (or a retry after a lost
    answer) finds the same request instead of making a second fleet.
  - O(target_capacity) and O(on_demand_target_capacity) change in place (C(ModifySpotFleetRequest)). Every other
    field is fixed once the request exists; when one differs the module fails, names the field and says the fleet
    must be replaced (O(state=absent), then O(state=present)); nothing is changed.
  - 'Checks before any call that changes anything: the IAM fleet role exists, every override''s instance type
    exists (C(DescribeInstanceTypes)), the launch template exists, capacities are not negative, the on-demand
    base is not larger than the total, and no string carries a control character.'
author:
  - llmserve.aws maintainers (@llmserve)
options:
  name:
    description:
      - The fleet's identity (letters, digits, C(.), C(_), C(-); at most 100).
    type: str
    required: true
  state:
    description:
      - V(present) creates the request when missing and resizes it in place; V(absent) cancels it.
    type: str
    choices: [present, absent]
    default: present
  target_capacity:
    description:
      - Total capacity units (Spot plus on-demand), as weighted by O(overrides[].weighted_capacity). Required with
        O(state=present).
    type: int
  on_demand_target_capacity:
    description:
      - Units of O(target_capacity) that are always on-demand, so Spot reclaims never take the fleet to zero.
    type: int
    default: 0
  iam_fleet_role:
    description:
      - ARN of the IAM role Spot Fleet assumes (trusting C(spotfleet.amazonaws.com)). Required with O(state=present).
    type: str
  launch_template:
    description:
      - The launch template instances start from. Give O(launch_template.id) or O(launch_template.name).
    type: dict
    suboptions:
      id:
        description: Launch template id (C(lt-...)).
        type: str
      name:
        description: Launch template name.
        type: str
      version:
        description: C($Default), C($Latest) or a version number.
        type: str
        default: $Default
  overrides:
    description:
      - One capacity pool per entry; the fleet spreads over them according to O(allocation_strategy).
    type: list
    elements: dict
    default: []
    suboptions:
      instance_type:
        description: EC2 instance type, checked with C(DescribeInstanceTypes).
        type: str
      weighted_capacity:
        description: Capacity units one instance of this pool counts for.
        type: float
      subnet_id:
        description: Subnet to launch into.
        type: str
      availability_zone:
        description: Availability zone to launch into.
        type: str
      priority:
        description: Pool priority for C(capacityOptimizedPrioritized) and on-demand C(prioritized); 0 is highest.
        type: float
  allocation_strategy:
    description: How Spot capacity is spread over the pools.
    type: str
    choices: [priceCapacityOptimized, capacityOptimized, capacityOptimizedPrioritized, lowestPrice, diversified]
    default: priceCapacityOptimized
  on_demand_allocation_strategy:
    description: How the on-demand base picks its pool.
    type: str
    choices: [lowestPrice, prioritized]
    default: lowestPrice
  fleet_type:
    description: V(maintain) replaces interrupted instances; V(request) fills once.
    type: str
    choices: [maintain, request]
    default: maintain
  instance_interruption_behavior:
    description: What happens to an interrupted Spot instance.
    type: str
    choices: [terminate, stop, hibernate]
    default: terminate
  replace_unhealthy_instances:
    description: Replace instances that fail EC2 health checks (V(maintain) fleets only).
    type: bool
    default: false
  terminate_instances_with_expiration:
    description: Terminate the instances when the request expires at O(valid_until).
    type: bool
    default: false
  valid_until:
    description: ISO 8601 end of the request (e.g. C(2030-01-31T00:00:00Z)); none by default.
    type: str
  tags:
    description:
      - Tags on the Spot Fleet request (not on instances; the launch template tags those). C(llmserve:spot-fleet) is
        added. Fixed once the request exists.
    type: dict
  terminate_instances:
    description: With O(state=absent), terminate the fleet's instances as well as cancelling the request.
    type: bool
    default: true
extends_documentation_fragment:
  - llmserve.aws.wait
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: all
notes:
  - With O(wait), V(present) waits until the request is C(active) and C(fulfilled); V(absent) until it is
    C(cancelled) (or C(cancelled_running) with O(terminate_instances=false)).
"""

EXAMPLES = r"""
- name: Two instance types behind one on-demand base
  llmserve.aws.spot_fleet:
    name: llmserve-7b
    target_capacity: 4
    on_demand_target_capacity: 1
    iam_fleet_role: arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role
    launch_template:
      name: llmserve-7b
      version: $Latest
    overrides:
      - instance_type: g5.xlarge
        weighted_capacity: 1
        subnet_id: subnet-0123456789abcdef0
      - instance_type: g5.2xlarge
        weighted_capacity: 1
        subnet_id: subnet-0123456789abcdef0
    allocation_strategy: capacityOptimized

- name: Resize in place (every other option as at creation; only the capacities may differ)
  llmserve.aws.spot_fleet:
    name: llmserve-7b
    target_capacity: 2
    on_demand_target_capacity: 1
    iam_fleet_role: "{{ fleet_role_arn }}"
    launch_template:
      name: llmserve-7b
      version: $Latest
    overrides: "{{ fleet_overrides }}"
    allocation_strategy: capacityOptimized

- name: Cancel it and terminate its instances
  llmserve.aws.spot_fleet:
    name: llmserve-7b
    state: absent
"""

RETURN = r"""
spot_fleet_request_id:
  description: The request's id; null in check mode before it exists, or when absent.
  returned: always
  type: str
  sample: sfr-0123456789abcdef0
state:
  description: The request's state (submitted, active, modifying, cancelled, cancelled_running, ...).
  returned: always
  type: str
  sample: active
activity_status:
  description: Fulfilment (pending_fulfillment, fulfilled, error).
  returned: always
  type: str
  sample: fulfilled
target_capacity:
  description: Total capacity units asked for.
  returned: always
  type: int
  sample: 4
on_demand_target_capacity:
  description: On-demand units asked for.
  returned: always
  type: int
  sample: 1
fulfilled_capacity:
  description: Capacity units running now.
  returned: always
  type: float
  sample: 4.0
instances:
  description: The fleet's running instances.
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: Instance id.
      type: str
    instance_type:
      description: Instance type.
      type: str
    availability_zone:
      description: Availability zone.
      type: str
    private_ip_address:
      description: Private IPv4 address.
      type: str
    lifecycle:
      description: C(spot) or C(on-demand).
      type: str
  sample:
    - instance_id: i-0123456789abcdef0
      instance_type: g5.xlarge
      availability_zone: us-east-1a
      private_ip_address: 10.0.1.10
      lifecycle: on-demand
waited:
  description: What the module waited for, how long and how many checks; absent when it did not wait.
  returned: when it waited
  type: dict
  sample: {waited_for: "Spot Fleet sfr-0123 active and fulfilled", elapsed_s: 1.5, attempts: 2, detail: "active"}
"""

try:
    import botocore  # noqa: F401  (AnsibleAWSModule reports it when missing)
except ImportError:
    pass

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.llmserve.aws.plugins.module_utils import _spot_fleet as sf
from ansible_collections.llmserve.aws.plugins.module_utils._waiter import CheckResult, WaitTimeout, wait_for

DIFF_KEYS = ("spot_fleet_request_id", "state", "target_capacity", "on_demand_target_capacity", "tags")


def _read(ec2, fleet_id):
    fleet = sf.describe_fleet(ec2, fleet_id) if fleet_id else None
    instances = sf.fleet_instances(ec2, fleet_id) if fleet is not None else []
    return sf.summary(fleet, instances)


def _diff_view(view):
    return dict((key, view.get(key)) for key in DIFF_KEYS) if view else {}


def _wait(module, ec2, fleet_id, done, what):
    def check():
        fleet = sf.describe_fleet(ec2, fleet_id)
        if fleet is None:
            return CheckResult(True, "gone")
        detail = "%s/%s" % (fleet.get("SpotFleetRequestState"), fleet.get("ActivityStatus"))
        return CheckResult(done(fleet), detail)

    try:
        return wait_for(check, what, module.params["wait_timeout"], module.params["wait_sleep"]).as_dict()
    except WaitTimeout as error:
        module.fail_json(msg=str(error), spot_fleet_request_id=fleet_id)


def _preflight(module, ec2, iam):
    """The checks that need AWS but change nothing; all before the first mutating call."""
    params = module.params
    if not sf.role_exists(iam, params["iam_fleet_role"]):
        module.fail_json(msg="iam_fleet_role %s: no such IAM role in this account; create it (trusting "
                             "spotfleet.amazonaws.com, with AmazonEC2SpotFleetTaggingRole) or fix the ARN"
                             % params["iam_fleet_role"])
    unknown = sf.unknown_instance_types(ec2, sf.instance_types_of(params))
    if unknown:
        module.fail_json(msg="overrides name instance type(s) EC2 does not offer in %s: %s; fix the instance_type "
                             "(aws ec2 describe-instance-types lists them)" % (module.region, ", ".join(unknown)))
    template = params["launch_template"]
    template_id = sf.launch_template_id(ec2, template)
    if template_id is None:
        module.fail_json(msg="launch_template %s: no such launch template; create it first "
                             "(amazon.aws.ec2_launch_template)" % (template.get("id") or template.get("name")))
    return template_id


def ensure_present(module, ec2, iam):
    params = module.params
    template_id = _preflight(module, ec2, iam)
    fleets = sf.fleets_named(ec2, params["name"])
    current = sf.live_fleet(fleets)
    generation = len([f for f in fleets if f is not current])
    wanted = sf.desired_config(params, generation)
    before = _read(ec2, current["SpotFleetRequestId"]) if current else {}
    result = {"changed": False}
    if current is None:
        result["changed"] = True
        if module.check_mode:
            after = {"spot_fleet_request_id": None, "state": None, "activity_status": None,
                     "target_capacity": wanted["TargetCapacity"],
                     "on_demand_target_capacity": wanted["OnDemandTargetCapacity"], "fulfilled_capacity": 0.0,
                     "tags": dict((t["Key"], t["Value"]) for t in wanted["TagSpecifications"][0]["Tags"]),
                     "instances": []}
            return dict(result, diff={"before": {}, "after": _diff_view(after)}, **after)
        fleet_id = sf.request_fleet(ec2, wanted)
    else:
        fleet_id = current["SpotFleetRequestId"]
        live_config = dict(current["SpotFleetRequestConfig"], Tags=current.get("Tags") or [])
        differences = sf.immutable_differences(live_config, wanted, template_id)
        if differences:
            module.fail_json(msg="spot fleet %s (%s): %s cannot change on an existing Spot Fleet request (only "
                                 "target_capacity and on_demand_target_capacity change in place); the fleet must be "
                                 "replaced: run state=absent, then state=present. Nothing was changed."
                                 % (params["name"], fleet_id, ", ".join(differences)),
                             immutable_fields=differences, spot_fleet_request_id=fleet_id)
        capacity = (wanted["TargetCapacity"], wanted["OnDemandTargetCapacity"])
        if capacity != (before["target_capacity"], before["on_demand_target_capacity"]):
            result["changed"] = True
            if module.check_mode:
                after = dict(before, target_capacity=capacity[0], on_demand_target_capacity=capacity[1])
                return dict(result, diff={"before": _diff_view(before), "after": _diff_view(after)}, **after)
            sf.modify_capacity(ec2, fleet_id, capacity[0], capacity[1])
    if params["wait"]:
        result["waited"] = _wait(
            module, ec2, fleet_id,
            lambda f: f.get("SpotFleetRequestState") == "active" and f.get("ActivityStatus") == "fulfilled",
            "Spot Fleet %s active and fulfilled" % fleet_id)
    after = _read(ec2, fleet_id)
    return dict(result, diff={"before": _diff_view(before), "after": _diff_view(after)}, **after)


def ensure_absent(module, ec2):
    params = module.params
    current = sf.live_fleet(sf.fleets_named(ec2, params["name"]))
    empty = {"spot_fleet_request_id": None, "state": None, "activity_status": None, "target_capacity": 0,
             "on_demand_target_capacity": 0, "fulfilled_capacity": 0.0, "tags": {}, "instances": []}
    if current is None:
        return dict(empty, changed=False, diff={"before": {}, "after": {}})
    fleet_id = current["SpotFleetRequestId"]
    before = _read(ec2, fleet_id)
    if module.check_mode:
        return dict(empty, changed=True, diff={"before": _diff_view(before), "after": {}})
    sf.cancel_fleet(ec2, fleet_id, params["terminate_instances"])
    result = {"changed": True}
    if params["wait"]:
        settled = "cancelled" if params["terminate_instances"] else "cancelled_running"
        result["waited"] = _wait(module, ec2, fleet_id, lambda f: f.get("SpotFleetRequestState") == settled,
                                 "Spot Fleet %s %s" % (fleet_id, settled))
    after = _read(ec2, fleet_id)
    return dict(after, diff={"before": _diff_view(before), "after": {}}, **result)


def run(module):
    try:
        sf.validate(module.params)
    except sf.FleetInputError as error:
        module.fail_json(msg=str(error))
    ec2 = module.client("ec2")
    try:
        if module.params["state"] == "present":
            result = ensure_present(module, ec2, module.client("iam"))
        else:
            result = ensure_absent(module, ec2)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        module.fail_json_aws(error, msg="Spot Fleet %s" % module.params["name"])
    module.exit_json(**result)


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        target_capacity=dict(type="int"),
        on_demand_target_capacity=dict(type="int", default=0),
        iam_fleet_role=dict(type="str"),
        launch_template=dict(type="dict", options=dict(
            id=dict(type="str"), name=dict(type="str"), version=dict(type="str", default="$Default"),
        ), mutually_exclusive=[["id", "name"]]),
        overrides=dict(type="list", elements="dict", default=[], options=dict(
            instance_type=dict(type="str"), weighted_capacity=dict(type="float"), subnet_id=dict(type="str"),
            availability_zone=dict(type="str"), priority=dict(type="float"),
        )),
        allocation_strategy=dict(type="str", default="priceCapacityOptimized", choices=[
            "priceCapacityOptimized", "capacityOptimized", "capacityOptimizedPrioritized", "lowestPrice",
            "diversified"]),
        on_demand_allocation_strategy=dict(type="str", default="lowestPrice", choices=["lowestPrice", "prioritized"]),
        fleet_type=dict(type="str", default="maintain", choices=["maintain", "request"]),
        instance_interruption_behavior=dict(type="str", default="terminate",
                                            choices=["terminate", "stop", "hibernate"]),
        replace_unhealthy_instances=dict(type="bool", default=False),
        terminate_instances_with_expiration=dict(type="bool", default=False),
        valid_until=dict(type="str"),
        tags=dict(type="dict"),
        terminate_instances=dict(type="bool", default=True),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=900),
        wait_sleep=dict(type="int", default=5),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "present", ["target_capacity", "iam_fleet_role", "launch_template"])],
    )
    run(module)


if __name__ == "__main__":
    main()
