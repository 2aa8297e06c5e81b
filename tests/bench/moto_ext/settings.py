"""Timing knobs of the AWS-behaviour extensions, shared by every extended service.

Real AWS takes time to move resources between states; moto does everything at once. Each delay here is the
time one of those transitions takes in this emulator. Values come from environment variables at start-up and
can be changed while the server runs through the control endpoint (see moto_server.py). A moto reset
(`POST /moto-api/reset`) restores the start-up values, so one test's tuning never leaks into the next.
"""

import math
import os
import threading
import time
from dataclasses import asdict, dataclass, fields

# Every extension mutates moto's models from request threads (werkzeug serves each request in its own thread),
# and lazily advances time-based transitions when a request reads them: one lock keeps those steps atomic.
STATE_LOCK = threading.RLock()

ENV_PREFIX = "LLMSERVE_MOTO_"


def now() -> float:
    """The clock every transition is measured on: monotonic, so wall-clock jumps never move a deadline."""
    return time.monotonic()


@dataclass
class Settings:
    # CreateEndpoint -> Creating, UpdateEndpoint/UpdateEndpointWeightsAndCapacities -> Updating,
    # DeleteEndpoint -> Deleting, each for this long. Real AWS: minutes.
    sagemaker_delay_s: float = 2.0
    # RequestSpotFleet -> `submitted` (no instances yet) for this long, then `active` with its instances.
    spot_fleet_delay_s: float = 1.0
    # RegisterTargets -> `initial` for this long before `healthy`. Real AWS: until the health checks pass;
    # 0 keeps moto's immediate `healthy` because nothing probes the targets here.
    elb_initial_s: float = 0.0
    # DeregisterTargets -> `draining` for the target group's deregistration_delay.timeout_seconds, but never
    # longer than this cap (AWS's default delay is 300 s). Negative: no cap.
    elb_drain_cap_s: float = -1.0
    # Non-empty: every CreateEndpoint/UpdateEndpoint started while it is set fails with this FailureReason when
    # its transition ends (a container that never passes its health check, a quota refusal...). Real AWS: a
    # failed CreateEndpoint ends `Failed`; a failed UpdateEndpoint rolls back and stays `InService` on the
    # previous config, with the reason in FailureReason. Empty: transitions succeed.
    sagemaker_failure_reason: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            variable = ENV_PREFIX + field.name.upper()
            raw = environ.get(variable)
            if raw not in (None, ""):
                values[field.name] = _parse(field.name, variable, raw)
        return cls(**values)

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)

    def update(self, changes: dict[str, object]) -> None:
        """Apply changes from the control endpoint; all or nothing, so a bad key changes nothing."""
        known = {field.name for field in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown settings {unknown}; known: {sorted(known)}")
        parsed = {name: _parse(name, name, value) for name, value in changes.items()}
        for name, value in parsed.items():
            setattr(self, name, value)

    def drain_seconds(self, deregistration_delay_s: float) -> float:
        if self.elb_drain_cap_s < 0:
            return deregistration_delay_s
        return min(deregistration_delay_s, self.elb_drain_cap_s)


# Settings that hold text rather than seconds.
_TEXT_SETTINGS = frozenset({"sagemaker_failure_reason"})
_TEXT_MAX_LENGTH = 1024  # AWS's FailureReason limit


def _parse(field_name: str, label: str, raw: object) -> float | str:
    if field_name in _TEXT_SETTINGS:
        return _parse_text(label, raw)
    return _parse_seconds(label, raw, allow_negative=field_name == "elb_drain_cap_s")


def _parse_text(name: str, raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"{name}: expected text, got {raw!r}")
    if len(raw) > _TEXT_MAX_LENGTH or any(ord(char) < 32 for char in raw):
        raise ValueError(f"{name}: expected at most {_TEXT_MAX_LENGTH} printable characters, got {raw!r}")
    return raw


def _parse_seconds(name: str, raw: object, *, allow_negative: bool) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"{name}: expected seconds, got {raw!r}")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected seconds, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number of seconds, got {raw!r}")
    if value < 0 and not allow_negative:
        raise ValueError(f"{name}: must not be negative, got {raw!r}")
    return value


class _SettingsHolder:
    """The live settings plus the start-up values a moto reset goes back to."""

    def __init__(self) -> None:
        self.startup = Settings.from_env()
        self.current = Settings(**self.startup.as_dict())

    def restore_startup(self) -> None:
        with STATE_LOCK:
            self.current = Settings(**self.startup.as_dict())


SETTINGS = _SettingsHolder()


def current() -> Settings:
    return SETTINGS.current
