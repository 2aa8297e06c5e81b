"""ELBv2 target health transitions as AWS reports them, on top of moto 5.2.5.

What moto lags on (measured with moto 5.2.5 server mode, boto3 1.44.8):
- DeregisterTargets drops the target at once: DescribeTargetHealth no longer lists it and, asked by id, says
  `unused`. AWS keeps it `draining` (Target.DeregistrationInProgress) for the target group's
  deregistration_delay.timeout_seconds while connections drain, listing it with the other targets.
- RegisterTargets makes a target `healthy` at once; AWS reports `initial` (Elb.RegistrationInProgress) until
  its health checks pass. Nothing probes targets here, so that period is a setting (elb_initial_s, default 0).

State lives on the backend (reset with it) and advances lazily when target health is read.
"""

from dataclasses import dataclass, field
from typing import Any

from moto.elbv2.exceptions import TargetGroupNotFoundError
from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup

from .settings import STATE_LOCK, current, now

_TIMELINE_ATTR = "_llmserve_target_timelines"


@dataclass
class _TargetTimeline:
    draining_until: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)  # id -> (target, end)
    initial_until: dict[str, float] = field(default_factory=dict)  # id -> end of the `initial` period


def _timeline(backend: ELBv2Backend, target_group_arn: str) -> _TargetTimeline:
    timelines = backend.__dict__.setdefault(_TIMELINE_ATTR, {})
    return timelines.setdefault(target_group_arn, _TargetTimeline())


def _deregistration_delay_s(target_group: FakeTargetGroup) -> float:
    return float(target_group.attributes.get("deregistration_delay.timeout_seconds", 300))


def _forget_expired(timeline: _TargetTimeline, moment: float) -> None:
    for target_id, (_unused, until) in list(timeline.draining_until.items()):
        if moment >= until:
            del timeline.draining_until[target_id]
    for target_id, until in list(timeline.initial_until.items()):
        if moment >= until:
            del timeline.initial_until[target_id]


def _patch_backend() -> None:
    original_register = ELBv2Backend.register_targets
    original_deregister = ELBv2Backend.deregister_targets

    def register_targets(self: ELBv2Backend, target_group_arn: str, instances: list[Any]) -> None:
        # Restores: a (re-)registered target starts `initial`, and stops draining.
        with STATE_LOCK:
            original_register(self, target_group_arn, instances)
            timeline = _timeline(self, target_group_arn)
            initial_s = current().elb_initial_s
            for target in instances:
                timeline.draining_until.pop(target["Id"], None)
                if initial_s > 0:
                    timeline.initial_until[target["Id"]] = now() + initial_s

    def deregister_targets(self: ELBv2Backend, target_group_arn: str, instances: list[dict[str, Any]]) -> None:
        # Restores: a deregistered target is `draining` for the deregistration delay (capped by elb_drain_cap_s).
        with STATE_LOCK:
            target_group = self.target_groups.get(target_group_arn)
            registered = dict(target_group.targets) if target_group is not None else {}
            original_deregister(self, target_group_arn, instances)
            timeline = _timeline(self, target_group_arn)
            drain_s = current().drain_seconds(_deregistration_delay_s(target_group))
            for target in instances:
                timeline.initial_until.pop(target["Id"], None)
                if drain_s > 0:
                    timeline.draining_until[target["Id"]] = (dict(registered[target["Id"]]), now() + drain_s)

    def describe_target_health(
        self: ELBv2Backend, target_group_arn: str, targets: list[dict[str, Any]]
    ) -> list[FakeHealthStatus]:
        # Replaces moto's: adds `draining` targets (listed with the registered ones, as on AWS) and `initial`.
        with STATE_LOCK:
            target_group = self.target_groups.get(target_group_arn)
            if target_group is None:
                raise TargetGroupNotFoundError()
            timeline = _timeline(self, target_group_arn)
            _forget_expired(timeline, now())
            if not targets:
                targets = list(target_group.targets.values()) + [
                    target for target, _unused in timeline.draining_until.values()
                ]
            return [_health(self, target_group, timeline, target) for target in targets]

    ELBv2Backend.register_targets = register_targets
    ELBv2Backend.deregister_targets = deregister_targets
    ELBv2Backend.describe_target_health = describe_target_health


def _health(
    backend: ELBv2Backend, target_group: FakeTargetGroup, timeline: _TargetTimeline, target: dict[str, Any]
) -> FakeHealthStatus:
    target_id = target["Id"]
    if target_id not in target_group.targets and target_id in timeline.draining_until:
        drained, _unused = timeline.draining_until[target_id]
        return FakeHealthStatus(
            target_id,
            target.get("Port", drained["Port"]),
            target_group.health_check_port,
            "draining",
            "Target.DeregistrationInProgress",
            "Target deregistration is in progress",
        )
    health = target_group.health_for(target, backend.ec2_backend)
    if health.status == "healthy" and target_id in timeline.initial_until:
        health.status = "initial"
        health.reason = "Elb.RegistrationInProgress"
        health.description = "Target registration is in progress"
    return health


def apply() -> None:
    _patch_backend()
