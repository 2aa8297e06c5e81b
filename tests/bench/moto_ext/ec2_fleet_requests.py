"""Spot Fleet request lifecycle as AWS runs it, on top of moto 5.2.5 and ec2.py's pools (apply after ec2.py).

What moto lags on (measured with moto 5.2.5 server mode, boto3 1.44.8), and what each patch restores:
- ClientToken is ignored: a retried RequestSpotFleet makes a second fleet. AWS returns the request that token
  already made (idempotency), which is how llmserve.aws.spot_fleet finds its fleet again after a lost answer.
- OnDemandTargetCapacity is ignored: every unit is Spot. AWS fills that many units with on-demand instances
  (part of TargetCapacity), counted in OnDemandFulfilledCapacity, listed by DescribeSpotFleetInstances.
- ModifySpotFleetRequest ignores OnDemandTargetCapacity and, on scale-in, terminates spot instances only; AWS
  moves the on-demand base to its new target and keeps the total at TargetCapacity.
- The request config echoes neither Type, OnDemand*, ReplaceUnhealthyInstances,
  TerminateInstancesWithExpiration, ValidUntil nor ClientToken; AWS echoes what the request set.
- FulfilledCapacity is a running total that misses instances terminated by a scale-in; AWS counts what runs.
- CancelSpotFleetRequests with TerminateInstances deletes the request at once; AWS keeps it describable in
  state `cancelled` (its instances terminated); without TerminateInstances it is `cancelled_running`.
"""

import threading
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.models.spot_requests import SpotFleetRequest, SpotRequestBackend
from moto.ec2.responses.spot_fleets import SpotFleets

from . import ec2
from .settings import STATE_LOCK

ECHOED_KEYS = ("Type", "OnDemandAllocationStrategy", "ValidUntil", "ClientToken")
ECHOED_BOOLEANS = ("ReplaceUnhealthyInstances", "TerminateInstancesWithExpiration")

# The request being created, handed from the response handler to the fleet's constructor (same thread).
_PENDING = threading.local()


def _as_bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _live(instance: Any) -> bool:
    return instance.state not in ("terminated", "shutting-down")


def _on_demand_instances(fleet: SpotFleetRequest) -> list[Any]:
    return [i for i in getattr(fleet, "on_demand_instances", []) if _live(i)]


def _weight_of(fleet: SpotFleetRequest, instance: Any) -> float:
    for pool in fleet.launch_specs:
        if pool.instance_type == instance.instance_type and pool.subnet_id == instance.subnet_id:
            return pool.weighted_capacity
    return 1.0


def _on_demand_pool(fleet: SpotFleetRequest) -> Any:
    # AWS: `prioritized` takes the best Priority; `lowestPrice` the cheapest on-demand price, which this emulator
    # does not know, so the order given stands in for it.
    pools = list(fleet.launch_specs)
    if getattr(fleet, "on_demand_allocation_strategy", "lowestPrice") == "prioritized":
        pools.sort(key=lambda pool: float("inf") if pool.priority is None else pool.priority)
    return pools[0]


def _launch_on_demand(fleet: SpotFleetRequest, pool: Any) -> Any:
    extra: dict[str, Any] = {}
    if pool.launch_template_spec:
        extra["launch_template"] = pool.launch_template_spec
        if getattr(pool, "metadata_options", None):
            extra["metadata_options"] = pool.metadata_options
    if pool.availability_zone and not pool.subnet_id:
        extra["placement"] = pool.availability_zone
    tags = {kind: dict(values) for kind, values in (pool.tag_specifications or {}).items()}
    tags.setdefault("instance", {})[ec2.FLEET_TAG] = fleet.id
    reservation = fleet.ec2_backend.run_instances(
        image_id=pool.image_id,
        count=1,
        user_data=pool.user_data,
        instance_type=pool.instance_type,
        is_instance_type_default=False,
        subnet_id=pool.subnet_id,
        key_name=pool.key_name,
        security_group_names=[],
        security_group_ids=pool.group_set,
        spot_fleet_id=fleet.id,  # so moto's Instance.terminate() takes its weight off FulfilledCapacity
        tags=tags,
        **extra,
    )
    instance = reservation.instances[0]
    ec2.associate_instance_profile(fleet.ec2_backend, instance, getattr(pool, "instance_profile", None))
    return instance


def _terminate(fleet: SpotFleetRequest, instances: list[Any]) -> None:
    if instances:
        fleet.ec2_backend.terminate_instances([i.id for i in instances])


def _newest_beyond(fleet: SpotFleetRequest, instances: list[Any], have: float, target: float) -> tuple[list[Any], float]:
    """The newest instances whose weight is above target (AWS scales in newest first), and what is left."""
    excess = []
    for instance in reversed(instances):
        weight = _weight_of(fleet, instance)
        if have - weight >= target:
            excess.append(instance)
            have -= weight
    return excess, have


def _rebalance(fleet: SpotFleetRequest) -> None:
    """Move the on-demand base to its target, then Spot to the rest of TargetCapacity (newest leave first)."""
    on_demand_target = min(fleet.on_demand_target_capacity, fleet.target_capacity)
    on_demand = _on_demand_instances(fleet)
    have = sum(_weight_of(fleet, i) for i in on_demand)
    pool = _on_demand_pool(fleet)
    while have < on_demand_target:
        instance = _launch_on_demand(fleet, pool)
        fleet.on_demand_instances.append(instance)
        fleet.fulfilled_capacity += pool.weighted_capacity
        have += pool.weighted_capacity
    excess, have = _newest_beyond(fleet, on_demand, have, on_demand_target)
    _terminate(fleet, excess)
    spot_target = fleet.target_capacity - have
    spot = [r.instance for r in fleet.spot_requests if _live(r.instance)]
    spot_have = sum(_weight_of(fleet, i) for i in spot)
    if spot_have < spot_target:
        ec2._create_spot_requests(fleet, spot_target - spot_have)
        return
    _terminate(fleet, _newest_beyond(fleet, spot, spot_have, spot_target)[0])


def _patch_fleet() -> None:
    original_init = SpotFleetRequest.__init__
    original_config = SpotFleetRequest.spot_fleet_request_config.fget

    def init(self: SpotFleetRequest, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        config = getattr(_PENDING, "config", None) or {}
        self.on_demand_target_capacity = int(config.get("OnDemandTargetCapacity") or 0)
        self.on_demand_allocation_strategy = config.get("OnDemandAllocationStrategy") or "lowestPrice"
        self.on_demand_instances = []
        self.client_token = config.get("ClientToken")
        self.echoed = {key: config[key] for key in ECHOED_KEYS if config.get(key) not in (None, "")}
        self.echoed.update({key: _as_bool(config[key]) for key in ECHOED_BOOLEANS if key in config})
        self.echoed.setdefault("Type", "maintain")
        self.echoed.setdefault("OnDemandAllocationStrategy", "lowestPrice")

    def create_spot_requests(self: SpotFleetRequest, weight_to_add: float) -> None:
        # Only activation calls this now (modify goes through _rebalance): the on-demand base is filled first,
        # Spot takes the rest.
        if not self.spot_requests and not self.on_demand_instances:
            _rebalance(self)
            return
        ec2._create_spot_requests(self, weight_to_add)

    def config(self: SpotFleetRequest) -> dict[str, Any]:
        shown = original_config(self)
        shown.update(self.echoed)
        shown["OnDemandTargetCapacity"] = self.on_demand_target_capacity
        # Counted from the live instances: moto's running total misses terminations made by ModifySpotFleetRequest.
        on_demand = float(sum(_weight_of(self, i) for i in _on_demand_instances(self)))
        spot = float(sum(_weight_of(self, r.instance) for r in self.spot_requests if _live(r.instance)))
        shown["OnDemandFulfilledCapacity"] = on_demand
        shown["FulfilledCapacity"] = on_demand + spot
        return shown

    SpotFleetRequest.__init__ = init
    SpotFleetRequest.create_spot_requests = create_spot_requests
    SpotFleetRequest.spot_fleet_request_config = property(config)


def _patch_backend() -> None:
    def cancel_spot_fleet_requests(
        self: SpotRequestBackend, spot_fleet_request_ids: list[str], terminate_instances: bool
    ) -> list[tuple[SpotFleetRequest, str]]:
        with STATE_LOCK:
            ec2._activate_due_fleets(self)
            cancelled = []
            for fleet_id in spot_fleet_request_ids:
                fleet = self.spot_fleet_requests[fleet_id]
                previous = fleet.state
                if terminate_instances:
                    spot = [r.instance for r in fleet.spot_requests if _live(r.instance)]
                    _terminate(fleet, spot + _on_demand_instances(fleet))
                    fleet.state = "cancelled"
                    fleet.target_capacity = 0
                    fleet.on_demand_target_capacity = 0
                else:
                    fleet.state = "cancelled_running"
                cancelled.append((fleet, previous))
            return cancelled

    SpotRequestBackend.cancel_spot_fleet_requests = cancel_spot_fleet_requests


def _patch_responses() -> None:
    request_after_ec2 = SpotFleets.request_spot_fleet

    def request_spot_fleet(self: SpotFleets) -> ActionResult:
        config = self._get_param("SpotFleetRequestConfig", {})
        token = config.get("ClientToken")
        with STATE_LOCK:
            for fleet in self.ec2_backend.spot_fleet_requests.values():
                if token and getattr(fleet, "client_token", None) == token:
                    return ActionResult({"SpotFleetRequestId": fleet.id})
            _PENDING.config = config
            try:
                return request_after_ec2(self)
            finally:
                _PENDING.config = None

    def modify_spot_fleet_request(self: SpotFleets) -> ActionResult:
        fleet_id = self._get_param("SpotFleetRequestId")
        target = self._get_int_param("TargetCapacity")
        on_demand = self._get_int_param("OnDemandTargetCapacity")
        with STATE_LOCK:
            ec2._activate_due_fleets(self.ec2_backend)
            fleet = self.ec2_backend.spot_fleet_requests[fleet_id]
            if target is not None:
                fleet.target_capacity = target
            if on_demand is not None:
                fleet.on_demand_target_capacity = on_demand
            if fleet.state == "active":
                _rebalance(fleet)
        return ActionResult({"Return": True})

    def cancel_spot_fleet_requests(self: SpotFleets) -> ActionResult:
        cancelled = self.ec2_backend.cancel_spot_fleet_requests(
            self._get_param("SpotFleetRequestIds", []), self._get_bool_param("TerminateInstances")
        )
        successful = [
            {"SpotFleetRequestId": fleet.id, "CurrentSpotFleetRequestState": fleet.state,
             "PreviousSpotFleetRequestState": previous}
            for fleet, previous in cancelled
        ]
        return ActionResult({"SuccessfulFleetRequests": successful, "UnsuccessfulFleetRequests": []})

    def describe_spot_fleet_instances(self: SpotFleets) -> ActionResult:
        fleet_id = self._get_param("SpotFleetRequestId")
        requests = self.ec2_backend.describe_spot_fleet_instances(fleet_id)
        fleet = self.ec2_backend.get_spot_fleet_request(fleet_id)
        active = [
            {"InstanceId": r.instance.id, "SpotInstanceRequestId": r.id, "InstanceType": r.instance.instance_type}
            for r in requests
            if _live(r.instance)
        ]
        active += [
            {"InstanceId": i.id, "InstanceType": i.instance_type}
            for i in (_on_demand_instances(fleet) if fleet else [])
        ]
        return ActionResult({"SpotFleetRequestId": fleet_id, "ActiveInstances": active})

    SpotFleets.request_spot_fleet = request_spot_fleet
    SpotFleets.modify_spot_fleet_request = modify_spot_fleet_request
    SpotFleets.cancel_spot_fleet_requests = cancel_spot_fleet_requests
    SpotFleets.describe_spot_fleet_instances = describe_spot_fleet_instances


def apply() -> None:
    _patch_fleet()
    _patch_backend()
    _patch_responses()
