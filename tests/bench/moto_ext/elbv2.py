"""ELBv2 target health transitions as AWS reports them, on top of moto 5.2.5.

What moto lags on (measured with moto 5.2.5 server mode, boto3 1.44.8):
- DeregisterTargets drops the target at once: DescribeTargetHealth no longer lists it and, asked by id, says
  `unused`. AWS keeps it `draining` (Target.DeregistrationInProgress) for the target group's
  deregistration_delay.timeout_seconds while connections drain, listing it with the other targets.
- RegisterTargets makes a target `healthy` at once; AWS reports `initial` (Elb.RegistrationInProgress) until
  its health checks pass. Where nothing probes targets, that period is a setting (elb_initial_s, default 0).
- Target health is the load balancer's own health checks: AWS reports `initial`, then `healthy` or `unhealthy`
  (Target.ResponseCodeMismatch, Target.Timeout, Target.FailedHealthChecks) as its checks find them. Here the
  ALB stand-in (tests/bench/alb_standin.py) probes the targets and reports what it finds through
  `report_target_health` (the control path POST /_llmserve/elbv2/target-health). Once a target group has had a
  report, a newly registered target starts `initial` until the next report, as on AWS, whatever elb_initial_s says.

State lives on the backend (reset with it) and advances lazily when target health is read.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from moto.elbv2.exceptions import TargetGroupNotFoundError
from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup, elbv2_backends

from .settings import STATE_LOCK, current, now

_TIMELINE_ATTR = "_llmserve_target_timelines"


@dataclass
class _TargetTimeline:
    draining_until: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)  # id -> (target, end)
    initial_until: dict[str, float] = field(default_factory=dict)  # id -> end of the `initial` period
    checked: bool = False  # a load balancer reports this group's health (report_target_health)
    reported: dict[str, tuple[str, str | None, str | None]] = field(default_factory=dict)  # id -> (state, reason, description)


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
            target_group = self.target_groups.get(target_group_arn)
            already = set(target_group.targets) if target_group is not None else set()
            original_register(self, target_group_arn, instances)
            timeline = _timeline(self, target_group_arn)
            initial_s = current().elb_initial_s
            for target in instances:
                timeline.draining_until.pop(target["Id"], None)
                # Registering a registered target again changes nothing on AWS: its checks' verdict stands.
                if timeline.checked and target["Id"] not in already:
                    timeline.reported[target["Id"]] = _INITIAL
                elif initial_s > 0:
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
                timeline.reported.pop(target["Id"], None)
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
    if health.status != "unused" and target_id in timeline.reported:
        health.status, health.reason, health.description = timeline.reported[target_id]
        return health
    if health.status == "healthy" and target_id in timeline.initial_until:
        health.status = "initial"
        health.reason = "Elb.RegistrationInProgress"
        health.description = "Target registration is in progress"
    return health


_TARGET_GROUP_ARN = re.compile(
    r"arn:aws:elasticloadbalancing:(?P<region>[a-z]{2}(-[a-z]+)+-\d):(?P<account>\d{12}):targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]+"
)
_INITIAL = ("initial", "Elb.InitialHealthChecking", "Initial health checks in progress")
# What a load balancer may report, with the reasons AWS gives for each state (None: no reason, as for healthy).
_REPORTABLE = {
    "initial": {"Elb.RegistrationInProgress", "Elb.InitialHealthChecking"},
    "healthy": {None},
    "unhealthy": {"Target.ResponseCodeMismatch", "Target.Timeout", "Target.FailedHealthChecks"},
}


def report_target_health(report: dict[str, Any]) -> int:
    """Record a load balancer's health-check results: {"target_group_arn": ARN, "targets": [{"id", "state",
    "reason", "description"}]}; returns how many registered targets it updated. ValueError on a malformed report
    or an unknown target group; targets no longer registered are skipped (their deregistration won the race)."""
    arn = report.get("target_group_arn")
    targets = report.get("targets")
    if not isinstance(arn, str) or not isinstance(targets, list):
        raise ValueError("expected {\"target_group_arn\": ARN, \"targets\": [{\"id\", \"state\", \"reason\"}]}")
    parsed = [_parse_report(target) for target in targets]
    match = _TARGET_GROUP_ARN.fullmatch(arn)
    if match is None:
        raise ValueError(f"not a target group ARN: {arn!r}")
    backend = elbv2_backends[match["account"]][match["region"]]
    with STATE_LOCK:
        target_group = backend.target_groups.get(arn)
        if target_group is None:
            raise ValueError(f"no target group {arn}")
        timeline = _timeline(backend, arn)
        timeline.checked = True
        updated = 0
        for target_id, health in parsed:
            if target_id in target_group.targets:
                timeline.reported[target_id] = health
                timeline.initial_until.pop(target_id, None)
                updated += 1
        return updated


def _parse_report(target: Any) -> tuple[str, tuple[str, str | None, str | None]]:
    if not isinstance(target, dict) or not isinstance(target.get("id"), str):
        raise ValueError(f"each target needs an id: {target!r}")
    state, reason = target.get("state"), target.get("reason")
    if state not in _REPORTABLE or reason not in _REPORTABLE[state]:
        raise ValueError(f"target {target['id']}: state/reason {state!r}/{reason!r}; expected one of {_REPORTABLE}")
    description = target.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 256):
        raise ValueError(f"target {target['id']}: description must be text of at most 256 characters")
    return target["id"], (state, reason, description)


def apply() -> None:
    _patch_backend()
