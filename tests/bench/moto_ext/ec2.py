"""EC2 Spot Fleet and instance filters as AWS runs them, on top of moto 5.2.5.

What moto lags on (measured with moto 5.2.5 server mode, boto3 1.44.8):
- RequestSpotFleet with LaunchTemplateConfigs uses only Overrides[0]: every instance gets the first override's
  instance type and subnet, whatever the allocation strategy.
- The fleet is `active` with all its instances inside the RequestSpotFleet call; AWS shows `submitted` first.
- Fleet instances lack the `aws:ec2spot:fleet-request-id` tag AWS puts on them, and the launch template's
  MetadataOptions (IMDSv2 settings) are not applied to them.
- The launch template Version in the request is ignored (moto always takes the latest version).
- Fleet instances get no instance profile: moto associates one only in RunInstances' response handler, and reads
  only an `Arn` from the pool. AWS launches them with the template's IamInstanceProfile, by Arn or by Name, so
  their instance metadata serves the role's credentials.
- AllocationStrategy is required by moto (KeyError -> 500 when omitted); AWS defaults it to lowestPrice.
- DescribeInstances with the `instance-lifecycle` filter raises NotImplementedError (HTTP 500).
- CreateImage with TagSpecifications for `snapshot` raises NotImplementedError (HTTP 500); amazon.aws.ec2_ami
  always sends them.
- A terminated instance keeps its private address in its subnet ("IP already in use", HTTP 500, for a later
  RunInstances with that PrivateIpAddress); on AWS its primary network interface is deleted with it and the
  address is free again.

How fleets are filled here. Each (launch template config, override) pair is one capacity pool, as on AWS.
This emulator knows neither spot prices nor spare capacity, so:
- diversified: round-robin over all pools, in the order given.
- lowestPrice: the InstancePoolsToUseCount (default 1) cheapest pools, round-robin. A pool's price is its
  SpotPrice (override, else the fleet's) per unit of WeightedCapacity; pools without a price rank after priced
  ones, ties keep the order given.
- capacityOptimizedPrioritized: the pool with the best (lowest) Priority; no Priority ranks last.
- capacityOptimized, priceCapacityOptimized: the cheapest pool by the rule above (all capacity is equal here).
Weighted capacity is honoured: pools are taken in turn until the fulfilled weight reaches the target.
"""

import copy
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2 import utils as ec2_utils
from moto.ec2.exceptions import InvalidParameterValueError, InvalidParameterValueErrorTagSpotFleetRequest
from moto.ec2.models.amis import AmiBackend
from moto.ec2.models.instances import Instance, InstanceBackend
from moto.ec2.models.spot_requests import (
    SpotFleetLaunchSpec,
    SpotFleetRequest,
    SpotInstanceRequest,
    SpotRequestBackend,
)
from moto.ec2.responses.spot_fleets import SpotFleets
from moto.ec2.utils import convert_tag_spec

from .settings import STATE_LOCK, current, now

FLEET_TAG = "aws:ec2spot:fleet-request-id"


def _float_or_none(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def _security_groups_of(template_data: dict[str, Any]) -> list[str]:
    groups = list(template_data.get("SecurityGroupIds") or []) + list(template_data.get("SecurityGroups") or [])
    for interface in template_data.get("NetworkInterfaces") or []:
        groups.extend(interface.get("Groups") or [])
    return groups


def _subnet_of(template_data: dict[str, Any], override: dict[str, Any]) -> str | None:
    if override.get("SubnetId"):
        return override["SubnetId"]
    for interface in template_data.get("NetworkInterfaces") or []:
        if interface.get("SubnetId"):
            return interface["SubnetId"]
    return template_data.get("SubnetId")


def _checked_weight(raw: Any) -> float:
    # AWS rejects a non-positive WeightedCapacity; accepting one would make the fill loop below endless.
    weight = float(raw)
    if weight <= 0:
        raise InvalidParameterValueError(f"WeightedCapacity {raw}")
    return weight


def _pools_from_template_configs(fleet: SpotFleetRequest, configs: list[dict[str, Any]]) -> list[SpotFleetLaunchSpec]:
    """One capacity pool per (launch template config, override), as AWS builds them."""
    pools = []
    for config in configs:
        spec = config["LaunchTemplateSpecification"]
        if "LaunchTemplateId" in spec:
            template = fleet.ec2_backend.get_launch_template(template_id=spec["LaunchTemplateId"])
        else:
            template = fleet.ec2_backend.get_launch_template_by_name(name=spec["LaunchTemplateName"])
        version = template.get_version(spec.get("Version", "$Default"))
        data = version.data
        for override in config.get("Overrides") or [{}]:
            pool = SpotFleetLaunchSpec(
                ebs_optimized=data.get("EbsOptimized"),
                group_set=_security_groups_of(data),
                iam_instance_profile=(data.get("IamInstanceProfile") or {}).get("Arn"),
                image_id=override.get("ImageId") or data["ImageId"],
                instance_type=override.get("InstanceType") or data["InstanceType"],
                key_name=data.get("KeyName"),
                monitoring=(data.get("Monitoring") or {}).get("Enabled", False),
                spot_price=override.get("SpotPrice") or fleet.spot_price,
                subnet_id=_subnet_of(data, override),
                tag_specifications=convert_tag_spec(data.get("TagSpecifications", [])),
                user_data=data.get("UserData"),
                weighted_capacity=_checked_weight(override.get("WeightedCapacity", 1)),
                launch_template_spec={"LaunchTemplateId": template.id, "Version": str(version.number)},
                overrides=override,
            )
            pool.priority = _float_or_none(override.get("Priority"))
            pool.availability_zone = override.get("AvailabilityZone") or (data.get("Placement") or {}).get(
                "AvailabilityZone"
            )
            pool.metadata_options = data.get("MetadataOptions") or {}
            pool.instance_profile = data.get("IamInstanceProfile") or {}
            pools.append(pool)
    return pools


def _pools_from_launch_specs(fleet: SpotFleetRequest, launch_specs: list[dict[str, Any]]) -> list[SpotFleetLaunchSpec]:
    """Pools given inline as LaunchSpecifications (no launch template); moto's handling, kept."""
    pools = []
    for spec in launch_specs:
        groups = [
            group.get("GroupId") or group.get("GroupName") if isinstance(group, dict) else group
            for group in spec.get("SecurityGroups", [])
        ]
        pool = SpotFleetLaunchSpec(
            ebs_optimized=spec.get("EbsOptimized"),
            group_set=groups,
            iam_instance_profile=(spec.get("IamInstanceProfile") or {}).get("Arn"),
            image_id=spec["ImageId"],
            instance_type=spec["InstanceType"],
            key_name=spec.get("KeyName"),
            monitoring=(spec.get("Monitoring") or {}).get("Enabled", False),
            spot_price=spec.get("SpotPrice", fleet.spot_price),
            subnet_id=spec.get("SubnetId"),
            tag_specifications=convert_tag_spec(spec.get("TagSpecifications", [])),
            user_data=spec.get("UserData"),
            weighted_capacity=_checked_weight(spec.get("WeightedCapacity", 1)),
        )
        pool.priority = None
        pool.availability_zone = (spec.get("Placement") or {}).get("AvailabilityZone")
        pool.metadata_options = {}
        pool.instance_profile = spec.get("IamInstanceProfile") or {}
        pools.append(pool)
    return pools


def _fleet_init(
    self: SpotFleetRequest,
    ec2_backend: Any,
    spot_backend: SpotRequestBackend,
    spot_fleet_request_id: str,
    spot_price: str,
    target_capacity: str,
    iam_fleet_role: str,
    allocation_strategy: str,
    launch_specs: list[dict[str, Any]],
    launch_template_config: list[dict[str, Any]] | None,
    instance_interruption_behaviour: str | None,
    tag_specifications: list[dict[str, Any]] | None,
) -> None:
    # Replaces moto's constructor: every override becomes a pool, and nothing launches until the fleet turns
    # active (see _activate_due_fleets).
    self.ec2_backend = ec2_backend
    self.spot_backend = spot_backend
    self.id = spot_fleet_request_id
    self.spot_price = spot_price
    self.target_capacity = int(target_capacity)
    self.iam_fleet_role = iam_fleet_role
    self.allocation_strategy = allocation_strategy or "lowestPrice"
    self.instance_interruption_behaviour = instance_interruption_behaviour or "terminate"
    self.instance_pools_to_use_count = 1
    self.state = "submitted"
    self.activity_status = "pending_fulfillment"
    self.activate_at = now()
    self.create_time = utcnow()
    self.fulfilled_capacity = 0.0
    self.tags = {}
    if tag_specifications is not None:
        tags = convert_tag_spec(tag_specifications)
        for resource_type in tags:
            if resource_type != "spot-fleet-request":
                raise InvalidParameterValueErrorTagSpotFleetRequest(resource_type)
        self.tags.update(tags)
    self.launch_template_configs = copy.deepcopy(launch_template_config or [])
    self.inline_launch_specs = _pools_from_launch_specs(self, launch_specs or [])
    self.launch_specs = self.inline_launch_specs + _pools_from_template_configs(self, self.launch_template_configs)
    self.spot_requests: list[SpotInstanceRequest] = []


def _price_per_unit(pool: SpotFleetLaunchSpec) -> float:
    price = _float_or_none(pool.spot_price)
    return float("inf") if price is None else price / pool.weighted_capacity


def _chosen_pools(fleet: SpotFleetRequest) -> list[SpotFleetLaunchSpec]:
    pools = list(fleet.launch_specs)
    strategy = fleet.allocation_strategy
    if strategy == "diversified":
        return pools
    if strategy == "capacityOptimizedPrioritized":
        return sorted(pools, key=lambda pool: float("inf") if pool.priority is None else pool.priority)[:1]
    by_price = sorted(pools, key=_price_per_unit)  # sorted() is stable: ties keep the order given
    if strategy == "lowestPrice":
        return by_price[: max(1, fleet.instance_pools_to_use_count)]
    return by_price[:1]


def _create_spot_requests(self: SpotFleetRequest, weight_to_add: float) -> None:
    # Replaces moto's: fills from the chosen pools in turn, and hands each request its pool so the instance
    # gets the pool's launch template, subnet, zone and the fleet tag.
    pools = _chosen_pools(self)
    if not pools or weight_to_add <= 0:
        return
    counts: dict[int, int] = {}
    added = 0.0
    turn = len(self.spot_requests)  # a later scale-out continues the rotation where it stopped
    while added < weight_to_add:
        index = turn % len(pools)
        counts[index] = counts.get(index, 0) + 1
        added += pools[index].weighted_capacity
        turn += 1
    for index, count in sorted(counts.items()):
        pool = pools[index]
        self.spot_requests.extend(
            self.spot_backend.request_spot_instances(
                price=pool.spot_price,
                image_id=pool.image_id,
                count=count,
                spot_instance_type="persistent",
                valid_from=None,
                valid_until=None,
                launch_group=None,
                availability_zone_group=None,
                key_name=pool.key_name,
                security_groups=pool.group_set,
                user_data=pool.user_data,
                instance_type=pool.instance_type,
                placement=pool.availability_zone,
                kernel_id=None,
                ramdisk_id=None,
                monitoring_enabled=pool.monitoring,
                subnet_id=pool.subnet_id,
                spot_fleet_id=self.id,
                tags=pool.tag_specifications,
                launch_spec=pool,
            )
        )
    self.fulfilled_capacity += added


def _fleet_config(self: SpotFleetRequest) -> dict[str, Any]:
    # Replaces moto's: AWS echoes the LaunchTemplateConfigs it was given, not one spec per pool.
    config: dict[str, Any] = {
        "TargetCapacity": self.target_capacity,
        "IamFleetRole": self.iam_fleet_role,
        "AllocationStrategy": self.allocation_strategy,
        "FulfilledCapacity": self.fulfilled_capacity,
        "InstanceInterruptionBehavior": self.instance_interruption_behaviour,
    }
    if self.inline_launch_specs:
        config["LaunchSpecifications"] = self.inline_launch_specs
    if self.launch_template_configs:
        config["LaunchTemplateConfigs"] = self.launch_template_configs
    if self.allocation_strategy == "lowestPrice":
        config["InstancePoolsToUseCount"] = self.instance_pools_to_use_count
    if self.spot_price:
        config["SpotPrice"] = self.spot_price
    return config


def _launch_instance(self: SpotInstanceRequest) -> Instance:
    # Replaces moto's: a fleet's instance is launched from its pool's launch template version (so the
    # template's tags, block devices and MetadataOptions apply, as on AWS) and carries the fleet id tag.
    pool = self.launch_spec
    spec = self.launch_specification
    tags = {resource_type: dict(values) for resource_type, values in self.all_tags.items()}
    extra: dict[str, Any] = {}
    if self.spot_fleet_id:
        tags.setdefault("instance", {})[FLEET_TAG] = self.spot_fleet_id
    if pool is not None and pool.launch_template_spec:
        extra["launch_template"] = pool.launch_template_spec
        if getattr(pool, "metadata_options", None):
            extra["metadata_options"] = pool.metadata_options
    if spec.availability_zone and not spec.subnet_id:
        extra["placement"] = spec.availability_zone
    reservation = self.ec2_backend.run_instances(
        image_id=spec.image_id,
        count=1,
        user_data=self.user_data,
        instance_type=spec.instance_type,
        is_instance_type_default=not spec.instance_type,
        subnet_id=spec.subnet_id,
        key_name=spec.key_name,
        security_group_names=[],
        security_group_ids=spec.groups,
        spot_fleet_id=self.spot_fleet_id,
        tags=tags,
        lifecycle="spot",
        **extra,
    )
    instance = reservation.instances[0]
    associate_instance_profile(self.ec2_backend, instance, getattr(pool, "instance_profile", None))
    return instance


def associate_instance_profile(backend: Any, instance: Instance, profile: dict[str, str] | None) -> None:
    """The pool's IamInstanceProfile ({"Arn": ...} or {"Name": ...}) on a fleet instance, as RunInstances does."""
    if profile and (profile.get("Arn") or profile.get("Name")):
        backend.associate_iam_instance_profile(
            instance_id=instance.id,
            iam_instance_profile_arn=profile.get("Arn"),
            iam_instance_profile_name=profile.get("Name"),
        )


def _activate_due_fleets(backend: SpotRequestBackend) -> None:
    """Turn `submitted` fleets whose time has come `active` and launch their instances."""
    with STATE_LOCK:
        moment = now()
        for fleet in list(backend.spot_fleet_requests.values()):
            if fleet.state == "submitted" and moment >= fleet.activate_at:
                fleet.state = "active"  # first, so a re-entrant read does not launch twice
                fleet.create_spot_requests(fleet.target_capacity)
                fleet.activity_status = "fulfilled"


def _activating_first(original: Any) -> Any:
    def activated_first(self: Any, *args: Any, **kwargs: Any) -> Any:
        _activate_due_fleets(self)
        return original(self, *args, **kwargs)

    activated_first.__wrapped__ = original  # type: ignore[attr-defined]
    return activated_first


def _patch_backend() -> None:
    original_request = SpotRequestBackend.request_spot_fleet
    original_modify = SpotRequestBackend.modify_spot_fleet_request

    def request_spot_fleet(
        self: SpotRequestBackend, *args: Any, instance_pools_to_use_count: int = 1, **kwargs: Any
    ) -> SpotFleetRequest:
        # Restores: AWS answers with the fleet `submitted`; instances come when it turns active.
        with STATE_LOCK:
            fleet = original_request(self, *args, **kwargs)
            fleet.instance_pools_to_use_count = instance_pools_to_use_count
            fleet.activate_at = now() + current().spot_fleet_delay_s
            _activate_due_fleets(self)
            return fleet

    def modify_spot_fleet_request(
        self: SpotRequestBackend, spot_fleet_request_id: str, target_capacity: int, terminate_instances: str
    ) -> None:
        with STATE_LOCK:
            _activate_due_fleets(self)
            fleet = self.spot_fleet_requests[spot_fleet_request_id]
            if fleet.state == "submitted":
                # Nothing launched yet: the new target is what activation will fill.
                if target_capacity < 0:
                    raise ValueError("Cannot reduce spot fleet capacity below 0")
                fleet.target_capacity = target_capacity
                return
            original_modify(self, spot_fleet_request_id, target_capacity, terminate_instances)

    SpotRequestBackend.request_spot_fleet = request_spot_fleet
    SpotRequestBackend.modify_spot_fleet_request = modify_spot_fleet_request
    for name in (
        "describe_spot_fleet_requests",
        "describe_spot_fleet_instances",
        "cancel_spot_fleet_requests",
        "describe_spot_instance_requests",
    ):
        setattr(SpotRequestBackend, name, _activating_first(getattr(SpotRequestBackend, name)))
    for name in ("describe_instances", "describe_instance_status"):
        setattr(InstanceBackend, name, _activating_first(getattr(InstanceBackend, name)))


def _patch_responses() -> None:
    def request_spot_fleet(self: SpotFleets) -> ActionResult:
        # Replaces moto's: AllocationStrategy defaults to lowestPrice as on AWS, and InstancePoolsToUseCount
        # is passed through.
        spot_config = self._get_param("SpotFleetRequestConfig", {})
        request = self.ec2_backend.request_spot_fleet(
            spot_price=spot_config.get("SpotPrice"),
            target_capacity=spot_config["TargetCapacity"],
            iam_fleet_role=spot_config["IamFleetRole"],
            allocation_strategy=spot_config.get("AllocationStrategy") or "lowestPrice",
            launch_specs=spot_config.get("LaunchSpecifications"),
            launch_template_config=self._get_param("SpotFleetRequestConfig.LaunchTemplateConfigs", []),
            instance_interruption_behaviour=spot_config.get("InstanceInterruptionBehavior"),
            tag_specifications=spot_config.get("TagSpecifications", []),
            instance_pools_to_use_count=int(spot_config.get("InstancePoolsToUseCount") or 1),
        )
        return ActionResult({"SpotFleetRequestId": request.id})

    SpotFleets.request_spot_fleet = request_spot_fleet


def _patch_instance_filters() -> None:
    # Restores: DescribeInstances filter `instance-lifecycle` (spot | scheduled | capacity-block). On-demand
    # instances have no lifecycle, so they match none of those values, as on AWS.
    ec2_utils.filter_dict_attribute_mapping["instance-lifecycle"] = "lifecycle"


def _create_image_tagging_snapshots(original: Any) -> Any:
    # Restores: CreateImage's TagSpecifications for `snapshot` tag the snapshots the image is made of (moto raises
    # NotImplementedError, a 500; amazon.aws.ec2_ami always sends the image's tags for both).
    def create_image(self: Any, instance_id: str, name: str, description: str,
                     tag_specifications: list[dict[str, Any]]) -> Any:
        snapshot_tags = [tag for spec in tag_specifications if spec["ResourceType"] == "snapshot"
                         for tag in spec["Tags"]]
        image = original(self, instance_id, name, description,
                         [spec for spec in tag_specifications if spec["ResourceType"] != "snapshot"])
        if snapshot_tags and getattr(image, "ebs_snapshot", None) is not None:
            image.ebs_snapshot.add_tags({tag["Key"]: tag["Value"] for tag in snapshot_tags})
        return image

    return create_image


def _terminate_releasing_addresses(original: Any) -> Any:
    # Restores: a terminated instance's private addresses go back to its subnet (its primary network interface is
    # deleted with it on AWS; moto frees them only when the Python object is garbage-collected).
    def terminate(self: Instance) -> Any:
        state = original(self)
        if self.subnet_id:
            subnet = self.ec2_backend.get_subnet(self.subnet_id)
            for address in list(self._private_ips):
                subnet.del_subnet_ip(address)
        return state

    return terminate


def apply() -> None:
    Instance.terminate = _terminate_releasing_addresses(Instance.terminate)
    AmiBackend.create_image = _create_image_tagging_snapshots(AmiBackend.create_image)
    SpotFleetRequest.__init__ = _fleet_init
    SpotFleetRequest.create_spot_requests = _create_spot_requests
    SpotFleetRequest.spot_fleet_request_config = property(_fleet_config)
    SpotInstanceRequest.launch_instance = _launch_instance
    _patch_backend()
    _patch_responses()
    _patch_instance_filters()
