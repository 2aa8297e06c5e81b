# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""llmserve spot watcher: take this EC2 instance out of service before EC2 takes it away.

Installed by the llmserve.aws.spot_interruption role and run by systemd. Subcommands:

  watch       (the llmserve-spot-watcher.service daemon) polls the instance metadata service (IMDSv2 only)
              for a spot interruption notice, a rebalance recommendation, a scheduled stop/retirement/reboot
              and an Auto Scaling termination; on one that is configured to act it drains this instance:
              deregister from every target group, wait until the load balancer reports the target draining,
              wait until vLLM has no request running or waiting (its /metrics), all bounded by the notice's
              deadline minus a margin, then stop vLLM through systemd (vLLM's --shutdown-timeout finishes the
              rest), then complete the pending Auto Scaling lifecycle action. Each step is logged with a
              timestamp and recorded in the state file, so a restart mid-drain resumes where it stopped and
              never repeats a step. Every step is bounded: one that cannot finish by its bound (AWS denying,
              throttling or not answering, /metrics unreadable) is abandoned and logged, so vLLM's stop is
              requested by the deadline minus stop_margin_s whatever AWS, IMDS or vLLM do. AWS calls retry with
              full-jitter backoff. A spot stop/hibernate that resumes on the same boot ends the drain. An idle
              watcher exits 3 after N identical consecutive failures so systemd restarts it; a draining one
              never gives up.
  register    (ExecStart of llmserve-alb-registration.service) waits for vLLM's /health to answer 200, then
              registers this instance with every target group. Refuses while a drain is on.
  deregister  (ExecStop of that unit: a planned stop of vLLM) deregisters, waits until the load balancer
              reports the target draining and vLLM's in-flight requests reach zero, then returns so systemd
              stops vLLM. Does nothing when the watcher's drain already took the instance out.
  status      prints the state file.
  reset       ends a finished drain on this boot (an operator bringing the instance back into service).

The configuration is a JSON file (default /etc/llmserve/spot-watcher.json) rendered by the role; see
Config for the keys. IMDS, vLLM and the state file need only the standard library; the AWS calls use boto3.
"""

import argparse
import calendar
import contextlib
import dataclasses
import datetime
import fcntl
import http.client
import json
import math
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

# Not datetime.UTC: that name is Python 3.11+, and hosts run their system python3 (Amazon Linux 2023: 3.9,
# Ubuntu 22.04: 3.10).
UTC = datetime.timezone.utc
DEFAULT_CONFIG_PATH = "/etc/llmserve/spot-watcher.json"
STATE_VERSION = 1
EXIT_CONFIG = 2
EXIT_REPEATED_FAILURE = 3

TOKEN_PATH = "/latest/api/token"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL_S = 21600

SPOT_ACTION_PATH = "meta-data/spot/instance-action"
REBALANCE_PATH = "meta-data/events/recommendations/rebalance"
SCHEDULED_EVENTS_PATH = "meta-data/events/maintenance/scheduled"
LIFECYCLE_STATE_PATH = "meta-data/autoscaling/target-lifecycle-state"
INSTANCE_ID_PATH = "meta-data/instance-id"
REGION_PATH = "meta-data/placement/region"

# The order of a drain. complete_lifecycle only runs once an Auto Scaling termination has been seen.
STEPS = ("deregister", "wait_alb", "wait_requests", "stop_vllm", "complete_lifecycle")
PHASE_IDLE = "idle"
PHASE_DRAINING = "draining"
PHASE_DRAINED = "drained"

# DescribeTargetHealth states that mean the load balancer sends the target no new requests.
OUT_OF_SERVICE_STATES = ("draining", "unused")
LIFECYCLE_TERMINATING = "Terminated"

_MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}
# Go layout "2 Jan 2006 15:04:05 GMT": scheduled events' NotBefore/NotAfter. Month names are English whatever
# the locale, so they are matched here rather than with strptime's locale-dependent %b.
_SCHEDULED_TIME = re.compile(r"\s*(\d{1,2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT\s*")
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)
_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


# ---------------------------------------------------------------------------------------------- configuration
class ConfigError(ValueError):
    """The configuration file is missing, not JSON, or holds a bad value."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The watcher's settings. The role renders every key; only target_group_arns has no default."""

    target_group_arns: tuple = ()
    # Port registered with the target groups; also vLLM's port on this host.
    target_port: int = 8000
    # Seconds the target groups keep draining connections (their deregistration_delay.timeout_seconds).
    deregistration_delay_s: float = 90.0
    imds_endpoint: str = "http://169.254.169.254"
    imds_token_ttl_s: int = 21600
    imds_timeout_s: float = 2.0
    poll_interval_s: float = 1.0
    drain_check_interval_s: float = 0.5
    max_identical_failures: int = 60
    instance_id: str = ""
    region: str = ""
    # Local AWS for tests (moto); empty on AWS.
    aws_endpoint_url: str = ""
    vllm_unit: str = "vllm.service"
    vllm_health_url: str = "http://127.0.0.1:8000/health"
    vllm_metrics_url: str = "http://127.0.0.1:8000/metrics"
    vllm_timeout_s: float = 2.0
    act_on_spot_interruption: bool = True
    act_on_rebalance: bool = False
    act_on_asg_termination: bool = True
    act_on_scheduled_events: bool = True
    scheduled_event_codes: tuple = (
        "instance-stop",
        "instance-retirement",
        "instance-reboot",
        "system-reboot",
        "system-maintenance",
    )
    # A scheduled event acts once its NotBefore is this close; they are announced days ahead.
    scheduled_event_lead_s: float = 900.0
    # Notices without a deadline of their own: how long the drain may take from when it was seen.
    rebalance_drain_budget_s: float = 120.0
    asg_drain_budget_s: float = 120.0
    # A spot notice whose time cannot be read still means the instance goes: assume EC2's two minutes. A time
    # further away than this (clock skew, a bad notice) is capped to it: EC2 never gives more.
    fallback_notice_s: float = 120.0
    # vLLM is asked to stop at the latest this long before the deadline, leaving time for its own drain.
    stop_margin_s: float = 20.0
    # Consecutive idle /metrics readings (running + waiting == 0) that count as drained.
    idle_confirmations: int = 2
    # Upper bound on the wait for systemd to report vLLM stopped (its --shutdown-timeout plus a margin).
    stop_timeout_s: float = 90.0
    state_dir: str = "/var/lib/llmserve-spot-watcher"
    # How vLLM is stopped. Empty: write stop_request_file, which llmserve-vllm-stop.path turns into
    # `systemctl stop <vllm_unit>` run by root, and wait until that service removes it. A command (a list)
    # runs instead; only the host integration tests use that, since they have no systemd.
    stop_command: tuple = ()
    # How vLLM is started again after a Spot stop/hibernate that resumed on the same boot. Empty: write
    # start_request_file, which llmserve-vllm-start.path turns into `systemctl start <vllm_unit>` run by root (the
    # registration unit, wanted by vLLM, follows and registers once /health answers). A command for host tests.
    start_command: tuple = ()
    asg_name: str = ""
    lifecycle_hook_name: str = ""
    # AWS calls that fail are retried after a random delay of up to min(cap, base * 2 ** failures) seconds
    # ("full jitter"), so that a fleet-wide reclaim does not become a herd of synchronized retries.
    aws_backoff_base_s: float = 0.5
    aws_backoff_cap_s: float = 8.0
    registration_health_timeout_s: float = 1200.0
    planned_stop_drain_timeout_s: float = 120.0

    @property
    def state_path(self):
        return os.path.join(self.state_dir, "state.json")

    @property
    def lock_path(self):
        return os.path.join(self.state_dir, "state.lock")

    @property
    def stop_request_path(self):
        return os.path.join(self.state_dir, "stop-vllm.request")

    @property
    def start_request_path(self):
        return os.path.join(self.state_dir, "start-vllm.request")

    @classmethod
    def from_dict(cls, raw):
        if not isinstance(raw, dict):
            raise ConfigError("the configuration must be a JSON object")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise ConfigError(f"unknown keys {unknown}; known: {sorted(fields)}")
        values = {}
        for name, value in raw.items():
            default = fields[name].default
            values[name] = _coerce(name, value, default)
        config = cls(**values)
        config.validate()
        return config

    def validate(self):
        if self.poll_interval_s <= 0 or self.drain_check_interval_s <= 0:
            raise ConfigError("poll_interval_s and drain_check_interval_s must be > 0")
        if not 1 <= self.imds_token_ttl_s <= MAX_TOKEN_TTL_S:
            raise ConfigError(f"imds_token_ttl_s must be 1..{MAX_TOKEN_TTL_S}")
        if self.max_identical_failures < 1 or self.idle_confirmations < 1:
            raise ConfigError("max_identical_failures and idle_confirmations must be >= 1")
        if bool(self.asg_name) != bool(self.lifecycle_hook_name):
            raise ConfigError("asg_name and lifecycle_hook_name go together")
        if not 1 <= self.target_port <= 65535:
            raise ConfigError("target_port must be 1..65535")
        for arn in self.target_group_arns:
            if not re.match(r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:\d{12}:targetgroup/", arn):
                raise ConfigError(f"not a target group ARN: {arn!r}")
        scheme = urllib.parse.urlsplit(self.imds_endpoint).scheme
        if scheme != "http":
            raise ConfigError(f"imds_endpoint must be an http:// URL, got {self.imds_endpoint!r}")


def _coerce(name, value, default):
    """Checks a configuration value against its default's type; lists become tuples."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name}: expected a number of seconds >= 0, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def load_config(path):
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from error
    except ValueError as error:
        raise ConfigError(f"{path} is not JSON: {error}") from error
    return Config.from_dict(raw)


# ---------------------------------------------------------------------------------------------- logging
def utc_stamp(epoch=None):
    moment = datetime.datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_event(event, fields, epoch=None):
    """One log line: UTC timestamp, event=NAME, then key=value pairs (values with spaces JSON-quoted)."""
    parts = [utc_stamp(epoch), f"event={event}"]
    for key, value in fields.items():
        if isinstance(value, float):
            text = f"{value:.3f}"
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = str(value)
        if not text or any(char.isspace() for char in text) or '"' in text:
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def log(event, **fields):
    print(format_event(event, fields), flush=True)


# ---------------------------------------------------------------------------------------------- time formats
class NoticeError(ValueError):
    """An IMDS answer that could not be understood; the text says what and where."""


def parse_rfc3339(text):
    """Epoch seconds of an RFC 3339 timestamp with a zone (IMDS writes "2026-11-28T17:11:44Z")."""
    match = _RFC3339.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise NoticeError(f"not an RFC 3339 time: {text!r}")
    day, clock, fraction, zone = match.groups()
    # fromisoformat before Python 3.11 takes no "Z" and only 3 or 6 fraction digits; RFC 3339 allows any.
    zone = "+00:00" if zone in ("Z", "z") else zone
    fraction = "." + (fraction + "000000")[:6] if fraction else ""
    try:
        moment = datetime.datetime.fromisoformat(f"{day}T{clock}{fraction}{zone}")
    except ValueError as error:
        raise NoticeError(f"not an RFC 3339 time: {text!r} ({error})") from None
    return moment.timestamp()


def parse_scheduled_time(text):
    """Epoch seconds of a scheduled event time in Go's layout "2 Jan 2006 15:04:05 GMT"."""
    match = _SCHEDULED_TIME.fullmatch(text) if isinstance(text, str) else None
    if not match or match.group(2) not in _MONTHS:
        raise NoticeError(f"not a scheduled event time (\"2 Jan 2006 15:04:05 GMT\"): {text!r}")
    day, month, year, hour, minute, second = match.groups()
    try:
        moment = datetime.datetime(
            int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError as error:
        raise NoticeError(f"not a valid date: {text!r} ({error})") from None
    return moment.timestamp()


# ---------------------------------------------------------------------------------------------- notices
@dataclasses.dataclass(frozen=True)
class Notice:
    """Something EC2 told this instance. key identifies it across polls and restarts (act once per key)."""

    kind: str  # spot | rebalance | scheduled | asg
    key: str
    deadline: float  # epoch seconds by which the instance is gone (or the drain must be done)
    detail: str

    def as_dict(self):
        return dataclasses.asdict(self)


def _decode_json(path, body):
    try:
        return json.loads(body)
    except ValueError:
        raise NoticeError(f"{path}: bad JSON: {body[:80]!r}") from None


def _check_status(path, status):
    """True when there is something to read; False on 404 (IMDS's "no notice"); NoticeError otherwise."""
    if status == 200:
        return True
    if status == 404:
        return False
    raise NoticeError(f"{path}: HTTP {status}")


def read_spot_action(status, body, now, config):
    """The spot interruption notice, None without one. Returns (notice, warning)."""
    if not _check_status(SPOT_ACTION_PATH, status):
        return None, None
    document = _decode_json(SPOT_ACTION_PATH, body)
    if not isinstance(document, dict) or not isinstance(document.get("action"), str):
        raise NoticeError(f"{SPOT_ACTION_PATH}: no action in {body[:80]!r}")
    action = document["action"]
    raw_time = document.get("time")
    latest = now + config.fallback_notice_s
    try:
        deadline = parse_rfc3339(raw_time)
        warning = None
    except NoticeError as error:
        # The notice is there, so the instance is going; only when is unreadable. Acting on the usual two
        # minutes is safer than ignoring a termination.
        deadline = latest
        warning = f"{SPOT_ACTION_PATH}: {error}; assuming {config.fallback_notice_s:.0f} s"
    if deadline > latest:
        warning = f"{SPOT_ACTION_PATH}: time {raw_time} is {deadline - now:.0f} s away; capped to {config.fallback_notice_s:.0f} s"
        deadline = latest
    # The key leaves out the time: mocks and proxies re-serve one notice with a fresh time on every read, and
    # EC2 sends one interruption per instance. Only its action tells two notices apart (a hibernated instance
    # that resumed can get another).
    key = f"spot:{action[:32]}"
    return Notice("spot", key, deadline, f"spot {action[:32]} at {str(raw_time)[:40]}"), warning


def read_rebalance(status, body, now, config):
    """A rebalance recommendation, None without one. It has no deadline: the drain gets a budget."""
    if not _check_status(REBALANCE_PATH, status):
        return None, None
    document = _decode_json(REBALANCE_PATH, body)
    if not isinstance(document, dict) or "noticeTime" not in document:
        raise NoticeError(f"{REBALANCE_PATH}: no noticeTime in {body[:80]!r}")
    warning = None
    try:
        parse_rfc3339(document["noticeTime"])
    except NoticeError as error:
        warning = f"{REBALANCE_PATH}: {error}"
    # One recommendation per instance; noticeTime is left out of the key because proxies re-serve it fresh.
    return Notice("rebalance", "rebalance", now + config.rebalance_drain_budget_s, "rebalance recommendation"), warning


def read_scheduled_events(status, body, now, config):
    """Scheduled events that take this instance away soon: (notices, warnings). [] and 404 mean none."""
    if not _check_status(SCHEDULED_EVENTS_PATH, status):
        return [], []
    document = _decode_json(SCHEDULED_EVENTS_PATH, body)
    if not isinstance(document, list):
        raise NoticeError(f"{SCHEDULED_EVENTS_PATH}: expected a JSON list, got {body[:80]!r}")
    notices, warnings = [], []
    for event in document:
        if not isinstance(event, dict):
            warnings.append(f"{SCHEDULED_EVENTS_PATH}: skipped a non-object event {event!r}")
            continue
        code, state, event_id = event.get("Code"), event.get("State"), event.get("EventId", "?")
        if state not in (None, "active") or code not in config.scheduled_event_codes:
            continue  # completed/canceled events, and codes this instance does not act on
        try:
            not_before = parse_scheduled_time(event.get("NotBefore"))
        except NoticeError as error:
            warnings.append(f"{SCHEDULED_EVENTS_PATH}: event {event_id}: {error}")
            continue
        if not_before - now <= config.scheduled_event_lead_s:
            notices.append(Notice("scheduled", f"scheduled:{event_id}", not_before, f"{code} {event_id}"))
    return notices, warnings


def read_lifecycle_state(status, body, now, config):
    """An Auto Scaling termination (target-lifecycle-state Terminated), None otherwise."""
    if not _check_status(LIFECYCLE_STATE_PATH, status):
        return None, None
    state = body.strip()
    if not state or len(state) > 64 or not re.match(r"^[A-Za-z:]+$", state):
        raise NoticeError(f"{LIFECYCLE_STATE_PATH}: unexpected value {body[:80]!r}")
    if state != LIFECYCLE_TERMINATING:
        return None, None
    return Notice("asg", "asg:Terminated", now + config.asg_drain_budget_s, "auto scaling termination"), None


def notice_acts(notice, config):
    """Whether a notice of this kind starts (or tightens) a drain under this configuration."""
    return {
        "spot": config.act_on_spot_interruption,
        "rebalance": config.act_on_rebalance,
        "scheduled": config.act_on_scheduled_events,
        "asg": config.act_on_asg_termination,
    }[notice.kind]


# ---------------------------------------------------------------------------------------------- drain arithmetic
def effective_deadline(notices):
    """The earliest deadline among the acting notices recorded (dicts from the state file)."""
    return min(notice["deadline"] for notice in notices)


def stop_by(deadline, config):
    """The latest moment to ask systemd to stop vLLM: the deadline minus the margin vLLM's drain needs."""
    return deadline - config.stop_margin_s


def alb_wait_until(deregistered_at, deadline, config):
    """The load balancer wait ends at the groups' deregistration delay, or earlier when the deadline is near."""
    return min(deregistered_at + config.deregistration_delay_s, stop_by(deadline, config))


def stop_wait_until(stop_requested_at, deadline, config):
    """How long to wait for vLLM to stop: its stop timeout, but never less than until the deadline."""
    return max(stop_requested_at + config.stop_timeout_s, deadline)


def parse_vllm_in_flight(text):
    """(running, waiting) summed over engines from vLLM's Prometheus text; NoticeError when absent."""
    totals = {"vllm:num_requests_running": None, "vllm:num_requests_waiting": None}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _METRIC_LINE.match(line)
        if not match or match.group(1) not in totals:
            continue  # exact names: vllm:num_requests_waiting_by_reason is a different metric
        try:
            value = float(match.group(3))
        except ValueError:
            value = math.nan
        # Prometheus text allows NaN and +Inf; neither is a number of requests.
        if not math.isfinite(value) or value < 0:
            raise NoticeError(f"vLLM metric {match.group(1)} has a bad value {match.group(3)[:40]!r}")
        totals[match.group(1)] = (totals[match.group(1)] or 0.0) + value
    missing = [name for name, value in totals.items() if value is None]
    if missing:
        raise NoticeError(f"vLLM /metrics lacks {missing}")
    return int(totals["vllm:num_requests_running"]), int(totals["vllm:num_requests_waiting"])


# ---------------------------------------------------------------------------------------------- state
def new_state(boot_id):
    return {
        "version": STATE_VERSION,
        "boot_id": boot_id,
        "phase": PHASE_IDLE,
        "notices": [],
        "steps": {},
        "deregistered_target_groups": [],
        "deregister_calls": 0,
        "stop_requested_at": None,
        "registered_at": None,
        "planned_stops": 0,
    }


def state_for_boot(state, boot_id):
    """The state to continue from: the saved one on the same boot, else a fresh one keeping the last drain."""
    if isinstance(state, dict) and state.get("version") == STATE_VERSION and state.get("boot_id") == boot_id:
        return state
    fresh = new_state(boot_id)
    if isinstance(state, dict) and state.get("phase") not in (None, PHASE_IDLE):
        fresh["previous_boot"] = {key: state.get(key) for key in ("boot_id", "phase", "notices", "steps")}
    return fresh


def record_notice(state, notice, now):
    """Adds an acting notice; returns True when it is new. The first one starts the drain."""
    if any(known["key"] == notice.key for known in state["notices"]):
        return False
    state["notices"].append(dict(notice.as_dict(), seen_at=now))
    if state["phase"] == PHASE_IDLE:
        state["phase"] = PHASE_DRAINING
        state["drain_started_at"] = now
    return True


def lifecycle_pending(state, config):
    """complete_lifecycle is due: an ASG hook is configured and an Auto Scaling termination was seen."""
    return bool(config.asg_name) and any(notice["kind"] == "asg" for notice in state["notices"])


def next_step(state, config):
    """The drain step to work on, None when nothing is left (for now: an ASG termination may come later)."""
    if state["phase"] == PHASE_IDLE:
        return None
    for step in STEPS:
        if step in state["steps"]:
            continue
        if step == "complete_lifecycle" and not lifecycle_pending(state, config):
            return None
        return step
    return None


class FailureTracker:
    """Counts consecutive polls that failed the same way; a success or a different failure starts over."""

    def __init__(self, limit):
        self.limit = limit
        self.signature = None
        self.count = 0

    def observe(self, failures):
        signature = tuple(sorted(failures))
        if not signature:
            self.signature, self.count = None, 0
        elif signature == self.signature:
            self.count += 1
        else:
            self.signature, self.count = signature, 1
        return self.count

    @property
    def exhausted(self):
        return self.count >= self.limit


class StateStore:
    """The state file, written atomically (temp file + rename) under an flock shared with the CLI units."""

    def __init__(self, config):
        self.path = config.state_path
        self.lock_path = config.lock_path

    @contextlib.contextmanager
    def locked(self):
        with open(self.lock_path, "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self):
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except ValueError:
            log("state_unreadable", path=self.path, action="starting from an empty state")
            return None

    def save(self, state):
        state["updated_at"] = time.time()
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def current_boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown-boot"


# ---------------------------------------------------------------------------------------------- IMDSv2
class ImdsError(RuntimeError):
    """IMDS could not be asked (no token, timeout, connection refused)."""


class ImdsClient:
    """IMDSv2 only: every read carries a session token; there is no code path that reads without one.

    The token is refreshed before it expires (at 80 % of the TTL IMDS granted, at most 60 s early); on a 401
    the client takes a new token once and repeats the read once.
    """

    def __init__(self, endpoint, token_ttl_s, timeout_s, clock=time.monotonic):
        parts = urllib.parse.urlsplit(endpoint)
        self.host = parts.hostname
        self.port = parts.port or 80
        self.token_ttl_s = token_ttl_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._token = None
        self._refresh_at = 0.0
        self.tokens_fetched = 0
        self.retokens_after_401 = 0

    def _send(self, method, path, headers):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            connection.request(method, path, headers=headers)
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace"), response.headers
        except TimeoutError:
            raise ImdsError(f"{method} {path}: timeout after {self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as error:
            raise ImdsError(f"{method} {path}: {error.__class__.__name__}: {error}") from None
        finally:
            connection.close()

    @staticmethod
    def refresh_delay(granted_ttl_s):
        """Seconds after issue to take a new token: 80 % of the TTL, and at most 60 s before it expires."""
        return max(granted_ttl_s * 0.8, granted_ttl_s - 60.0)

    def token(self):
        now = self.clock()
        if self._token is not None and now < self._refresh_at:
            return self._token
        status, body, headers = self._send("PUT", TOKEN_PATH, {TOKEN_TTL_HEADER: str(self.token_ttl_s)})
        if status != 200 or not body.strip():
            self._token = None
            raise ImdsError(f"PUT {TOKEN_PATH}: HTTP {status}")
        try:
            granted = int(headers.get(TOKEN_TTL_HEADER, self.token_ttl_s))
        except ValueError:
            granted = self.token_ttl_s
        self._token = body.strip()
        self._refresh_at = now + self.refresh_delay(max(1, min(granted, self.token_ttl_s)))
        self.tokens_fetched += 1
        return self._token

    def get(self, path):
        """(status, body) of GET /latest/<path>."""
        full_path = "/latest/" + path.lstrip("/")
        status, body, _headers = self._send("GET", full_path, {TOKEN_HEADER: self.token()})
        if status == 401:
            self._token = None
            self.retokens_after_401 += 1
            status, body, _headers = self._send("GET", full_path, {TOKEN_HEADER: self.token()})
        return status, body

    def get_text(self, path):
        status, body = self.get(path)
        if status != 200:
            raise ImdsError(f"GET {path}: HTTP {status}")
        return body.strip()


# ---------------------------------------------------------------------------------------------- vLLM
class VllmProbe:
    """vLLM's /health and /metrics on this host (plain HTTP on loopback, never through a proxy)."""

    def __init__(self, health_url, metrics_url, timeout_s):
        self.health_url = health_url
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s

    def _get(self, url):
        parts = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout_s)
        try:
            connection.request("GET", parts.path or "/")
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            connection.close()

    def healthy(self):
        try:
            status, _body = self._get(self.health_url)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def in_flight(self):
        """(running, waiting); None when vLLM does not listen (nothing left to drain); NoticeError otherwise."""
        try:
            status, body = self._get(self.metrics_url)
        except ConnectionRefusedError:
            return None
        except (OSError, http.client.HTTPException) as error:
            raise NoticeError(f"vLLM /metrics: {error.__class__.__name__}: {error}") from None
        if status != 200:
            raise NoticeError(f"vLLM /metrics: HTTP {status}")
        return parse_vllm_in_flight(body)


# ---------------------------------------------------------------------------------------------- AWS
class AwsError(RuntimeError):
    """An AWS call failed; code is AWS's error code when it sent one."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class Aws:
    """The three ELBv2 calls and one Auto Scaling call the watcher makes, with the instance role's rights."""

    def __init__(self, config, region, imds_endpoint):
        # boto3 finds the instance role's credentials in IMDS; keep botocore on IMDSv2 and on this endpoint.
        os.environ.setdefault("AWS_EC2_METADATA_V1_DISABLED", "true")
        os.environ.setdefault("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds_endpoint.rstrip("/") + "/")
        import boto3  # noqa: PLC0415 - the CLI's status/reset subcommands work without boto3
        from botocore.config import Config as BotoConfig  # noqa: PLC0415
        from botocore.exceptions import ClientError  # noqa: PLC0415

        self._client_error = ClientError
        # One attempt per call: the watcher retries itself, with jitter and within the drain's deadline.
        boto_config = BotoConfig(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 1})
        session = boto3.session.Session(region_name=region)
        options = {"config": boto_config}
        if config.aws_endpoint_url:
            options["endpoint_url"] = config.aws_endpoint_url
        self.elbv2 = session.client("elbv2", **options)
        self.autoscaling = session.client("autoscaling", **options)
        self.session = session

    def warm_up(self):
        """Resolves the credentials now, so the first call of a drain does not pay for it."""
        credentials = self.session.get_credentials()
        if credentials is None:
            raise AwsError("no AWS credentials (instance role missing?)")
        credentials.get_frozen_credentials()

    def _call(self, what, function, **kwargs):
        try:
            return function(**kwargs)
        except self._client_error as error:
            code = error.response.get("Error", {}).get("Code")
            raise AwsError(f"{what}: {code}: {error.response.get('Error', {}).get('Message')}", code) from None
        except Exception as error:  # noqa: BLE001 - any answer: ResponseParserError (an HTML 502) is not a BotoCoreError
            raise AwsError(f"{what}: {error.__class__.__name__}: {str(error)[:300]}") from None

    def register(self, target_group_arn, instance_id, port):
        self._call(
            "RegisterTargets",
            self.elbv2.register_targets,
            TargetGroupArn=target_group_arn,
            Targets=[{"Id": instance_id, "Port": port}],
        )

    def deregister(self, target_group_arn, instance_id, port):
        """True when deregistered now, False when the target was not registered (nothing to do)."""
        try:
            self._call(
                "DeregisterTargets",
                self.elbv2.deregister_targets,
                TargetGroupArn=target_group_arn,
                Targets=[{"Id": instance_id, "Port": port}],
            )
        except AwsError as error:
            if error.code == "InvalidTarget":
                return False
            raise
        return True

    def target_state(self, target_group_arn, instance_id, port):
        answer = self._call(
            "DescribeTargetHealth",
            self.elbv2.describe_target_health,
            TargetGroupArn=target_group_arn,
            Targets=[{"Id": instance_id, "Port": port}],
        )
        for description in answer.get("TargetHealthDescriptions", []):
            if description.get("Target", {}).get("Id") == instance_id:
                return description.get("TargetHealth", {}).get("State", "unknown")
        return "unused"

    def complete_lifecycle_action(self, asg_name, hook_name, instance_id):
        """True when a pending lifecycle action was completed, False when none was pending."""
        try:
            self._call(
                "CompleteLifecycleAction",
                self.autoscaling.complete_lifecycle_action,
                AutoScalingGroupName=asg_name,
                LifecycleHookName=hook_name,
                InstanceId=instance_id,
                LifecycleActionResult="CONTINUE",
            )
        except AwsError as error:
            # AWS answers ValidationError "No active Lifecycle Action found with instance ID ..." when the
            # instance is not waiting on the hook.
            if error.code == "ValidationError" and "no active lifecycle action" in str(error).lower():
                return False
            raise
        return True


# ---------------------------------------------------------------------------------------------- stopping vLLM
def write_request(path, payload):
    """A request file for a path unit, written atomically; on a full disk an empty one (the path unit only needs
    the file to exist, and an empty file needs no data block)."""
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
        os.replace(temporary, path)
    except OSError as error:
        log("request_written_empty", error=str(error), path=path)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o640))


class VllmStopper:
    """Asks for vLLM to be stopped and tells when it is.

    Default: write a request file that llmserve-vllm-stop.path turns into `systemctl stop` run by root; the
    stop service removes the file once systemctl returns, i.e. once vLLM has drained and exited. So the
    watcher itself runs unprivileged. With stop_command (host tests without systemd) it runs that instead.
    """

    def __init__(self, config):
        self.config = config
        self._process = None

    def request(self, notice_key):
        if self.config.stop_command:
            self._process = subprocess.Popen(list(self.config.stop_command), stdin=subprocess.DEVNULL)
            return
        write_request(self.config.stop_request_path,
                      {"unit": self.config.vllm_unit, "notice": notice_key, "requested_at": time.time()})

    def finished(self):
        """None while stopping; else (ok, detail)."""
        if self.config.stop_command:
            code = self._process.poll()
            if code is None:
                return None
            return code == 0, f"stop command exited {code}"
        if os.path.exists(self.config.stop_request_path):
            return None
        return True, f"{self.config.vllm_unit} stopped by llmserve-vllm-stop.service"

    def request_start(self, reason):
        """vLLM again after an interruption that did not take the instance: llmserve-vllm-start.path runs
        `systemctl start` as root (or start_command runs, on hosts without systemd). Nothing waits for it: the
        registration unit puts the host back behind the load balancer once vLLM answers /health."""
        if self.config.start_command:
            subprocess.Popen(list(self.config.start_command), stdin=subprocess.DEVNULL)
            return
        write_request(self.config.start_request_path,
                      {"unit": self.config.vllm_unit, "reason": reason, "requested_at": time.time()})


# ---------------------------------------------------------------------------------------------- off the loop
PENDING = object()  # an answer that has not come yet


def backoff_delay(failures, base_s, cap_s, rng=random.random):
    """Seconds before retry number `failures`: full jitter, uniform in [0, min(cap, base * 2 ** failures)]."""
    return rng() * min(cap_s, base_s * 2 ** min(failures, 30))


class BackgroundCall:
    """One call (AWS, vLLM's /metrics) on a daemon thread, so that no answer, however slow, holds the drain.

    The drain's main loop only looks at `done`; a call still running when its step is abandoned is left to end
    on its own timeouts (a daemon thread never blocks the process's exit)."""

    def __init__(self, what, function, args, wake):
        self.what = what
        self.started = time.monotonic()
        self.done = False
        self.result = None
        self.error = None
        self._wake = wake
        threading.Thread(target=self._run, args=(function, args), name=what, daemon=True).start()

    def _run(self, function, args):
        try:
            self.result = function(*args)
        except Exception as error:  # noqa: BLE001 - whatever it raised is the step's failure, never the loop's
            self.error = error
        finally:
            self.done = True
            self._wake.set()


class ImdsPoller:
    """Reads the notice paths every poll interval on a thread of its own and queues each answer as it comes.

    The spot path is read first and its answer handed over before the next read starts, so a notice reaches the
    drain without waiting for the other reads; a read that hangs (up to imds_timeout_s) delays only the poller."""

    CYCLE_END = "cycle-end"

    def __init__(self, imds, paths, interval_s, wake):
        self.imds = imds
        self.paths = paths
        self.interval_s = interval_s
        self.answers = queue.Queue()
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imds-poller", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()

    def _run(self):
        next_cycle = time.monotonic()
        while not self._stop.is_set():
            for path in self.paths:
                now = time.time()
                try:
                    status, body = self.imds.get(path)
                    self.answers.put((path, now, status, body, None))
                except ImdsError as error:
                    self.answers.put((path, now, None, None, error))
                except Exception as error:  # noqa: BLE001 - the poller must outlive any answer
                    self.answers.put((path, now, None, None, ImdsError(f"GET {path}: {error.__class__.__name__}: {error}")))
                self._wake.set()
            self.answers.put((self.CYCLE_END, time.time(), None, None, None))
            self._wake.set()
            next_cycle = max(next_cycle + self.interval_s, time.monotonic())
            self._stop.wait(max(0.0, next_cycle - time.monotonic()))

    def take(self):
        """Every queued answer, oldest first, without waiting."""
        taken = []
        while True:
            try:
                taken.append(self.answers.get_nowait())
            except queue.Empty:
                return taken


# ---------------------------------------------------------------------------------------------- the daemon
READERS = {
    SPOT_ACTION_PATH: read_spot_action,
    REBALANCE_PATH: read_rebalance,
    SCHEDULED_EVENTS_PATH: read_scheduled_events,
    LIFECYCLE_STATE_PATH: read_lifecycle_state,
}
PATH_KINDS = {SPOT_ACTION_PATH: "spot", REBALANCE_PATH: "rebalance", SCHEDULED_EVENTS_PATH: "scheduled",
              LIFECYCLE_STATE_PATH: "asg"}
# Spot actions after which the instance can come back on the same boot (a hibernated one resumes from RAM).
RESUMABLE_SPOT_ACTIONS = ("stop", "hibernate")


class Watcher:
    """Polls IMDS (ImdsPoller) and drives the drain one non-blocking step at a time, saving state after each.

    Nothing the drain waits on runs on the main loop: AWS calls and /metrics reads are BackgroundCalls. Each step
    has a bound (stop_by for the ALB and request steps); a step still unfinished at its bound is abandoned and
    logged, so vLLM's stop is requested by the deadline minus the stop margin whatever AWS, IMDS or vLLM do."""

    def __init__(self, config, store, *, imds, aws, vllm, stopper, instance_id, rng=random.random):
        self.config = config
        self.store = store
        self.imds = imds
        self.aws = aws
        self.vllm = vllm
        self.stopper = stopper
        self.instance_id = instance_id
        self.rng = rng
        self.failures = FailureTracker(config.max_identical_failures)
        self.state = None
        self._idle_readings = 0
        self._last_in_flight = None
        self._ignored = set()
        self._pending_failures = []
        self._cycle_failures = []
        self._stop_requested_this_run = False
        self._stopping = False
        self._wake = threading.Event()
        self._calls = {}  # key -> BackgroundCall in flight
        self._retry_at = {}  # key -> monotonic time before which a failed call is not repeated
        self._call_failures = {}  # key -> consecutive failures
        self._step_errors = {}  # step -> its last failure, named when the step is abandoned
        self._save_error = None
        self.poller = None

    # ------------------------------------------------------------------ state
    def _save_quietly(self, write):
        """Runs a state write; a full or read-only disk is logged once per error and the drain goes on from memory."""
        try:
            write()
        except OSError as error:
            text = f"{error.__class__.__name__}: {error}"
            if text != self._save_error:
                log("state_not_saved", error=text, path=self.store.path, action="continuing from memory")
            self._save_error = text
            return
        if self._save_error is not None:
            log("state_saved_again", path=self.store.path)
            self._save_error = None

    def _save(self):
        def write():
            with self.store.locked():
                self.store.save(self.state)

        self._save_quietly(write)

    def _mutate(self, change):
        """Applies change in memory, then re-reads the file under the lock (the CLI units write it too) and saves."""
        change(self.state)

        def write():
            with self.store.locked():
                saved = self.store.load()
                if isinstance(saved, dict) and saved.get("boot_id") == self.state["boot_id"]:
                    # Only the registration bookkeeping is written by others; the drain fields are ours.
                    for key in ("registered_at", "planned_stops"):
                        self.state[key] = saved.get(key, self.state.get(key))
                self.store.save(self.state)

        self._save_quietly(write)

    def start(self):
        loaded = None
        try:
            with self.store.locked():
                loaded = self.store.load()
        except OSError as error:
            log("state_unreadable", path=self.store.path, error=str(error), action="starting from an empty state")
        self.state = state_for_boot(loaded, current_boot_id())
        self._save()
        step = next_step(self.state, self.config)
        if self.state["phase"] != PHASE_IDLE:
            log(
                "resumed",
                phase=self.state["phase"],
                next_step=step or "none",
                notices=[notice["key"] for notice in self.state["notices"]],
                done=sorted(self.state["steps"]),
            )
        else:
            log(
                "watching",
                instance_id=self.instance_id,
                target_groups=len(self.config.target_group_arns),
                poll_interval_s=self.config.poll_interval_s,
                rebalance=self.config.act_on_rebalance,
                asg=self.config.act_on_asg_termination,
                scheduled=self.config.act_on_scheduled_events,
            )

    def request_shutdown(self, signum, frame):
        self._stopping = True
        self._wake.set()

    def polled_paths(self):
        # Rebalance is read even when it does not act, so that its arrival is logged as ignored.
        wanted = [
            (True, SPOT_ACTION_PATH),
            (True, REBALANCE_PATH),
            (self.config.act_on_scheduled_events, SCHEDULED_EVENTS_PATH),
            (self.config.act_on_asg_termination, LIFECYCLE_STATE_PATH),
        ]
        return [path for on, path in wanted if on]

    def run(self):
        self.start()
        self.poller = ImdsPoller(self.imds, self.polled_paths(), self.config.poll_interval_s, self._wake)
        self.poller.start()
        try:
            while not self._stopping:
                self._wake.clear()
                exhausted = self.tick()
                if exhausted:
                    log("giving_up", identical_failures=self.failures.count,
                        failure="; ".join(self.failures.signature or ()))
                    return EXIT_REPEATED_FAILURE
                self._wake.wait(self._pause())
        finally:
            self.poller.stop()
        log("stopping", reason="signal", phase=self.state["phase"])
        return 0

    def _pause(self):
        """Until the next check: a poll answer or a finished call wakes the loop earlier; a step bound too."""
        if self.state["phase"] != PHASE_DRAINING:
            return self.config.poll_interval_s
        pause = self.config.drain_check_interval_s
        bound = self._bound(next_step(self.state, self.config))
        if bound is not None:
            pause = min(pause, max(0.0, bound - time.time()))
        return pause

    def tick(self):
        """Handles the IMDS answers that came in, advances the drain; True when it is time to give up."""
        exhausted = False
        for path, seen_at, status, body, error in self.poller.take():
            if path == ImdsPoller.CYCLE_END:
                exhausted = self._end_cycle() or exhausted
            else:
                self.handle_answer(path, seen_at, status, body, error)
                # A notice found by this read starts its drain now, not after the cycle's other reads.
                self._pending_failures += self.advance()
        self._pending_failures += self.advance()
        return exhausted

    def _end_cycle(self):
        """Counts this poll cycle's failures; giving up (so that systemd restarts it) is only for an idle watcher:
        a drain has its own bounds, and a restart would only delay it."""
        failures = self._cycle_failures + self._pending_failures
        self._cycle_failures, self._pending_failures = [], []
        self.failures.observe(failures)
        return self.failures.exhausted and self.state["phase"] == PHASE_IDLE

    # ------------------------------------------------------------------ IMDS
    def path_acts(self, path):
        return notice_acts(Notice(PATH_KINDS[path], "", 0.0, ""), self.config)

    def handle_answer(self, path, now, status, body, error):
        try:
            if error is not None:
                raise error
            found, warnings = READERS[path](status, body, now, self.config)
        except (ImdsError, NoticeError) as failure:
            log("imds_failure", path=path, error=str(failure))
            # A path the watcher does not act on cannot make it give up.
            if self.path_acts(path):
                self._cycle_failures.append(str(failure))
            return
        notices = found if isinstance(found, list) else [found] if found else []
        warnings = warnings if isinstance(warnings, list) else [warnings] if warnings else []
        for warning in warnings:
            log("imds_warning", path=path, warning=warning)
        for notice in notices:
            self.consider(notice, now)
        if path == SPOT_ACTION_PATH and not notices:
            self.check_resumed(now)

    def consider(self, notice, now):
        if any(known["key"] == notice.key for known in self.state["notices"]):
            return
        if not notice_acts(notice, self.config):
            if notice.key not in self._ignored:
                self._ignored.add(notice.key)
                log("notice_ignored", kind=notice.kind, key=notice.key, reason=f"act_on_{notice.kind} is off")
            return
        started = self.state["phase"] == PHASE_IDLE

        def add(state):
            record_notice(state, notice, now)
            if state["phase"] == PHASE_DRAINED and notice.kind == "asg":
                state["phase"] = PHASE_DRAINING  # only complete_lifecycle is left to do

        self._mutate(add)
        log(
            "notice",
            kind=notice.kind,
            key=notice.key,
            detail=notice.detail,
            deadline=utc_stamp(notice.deadline),
            seconds_left=notice.deadline - now,
            drain="started" if started else "already under way",
        )

    def check_resumed(self, now):
        """A spot stop or hibernate whose deadline has passed, with IMDS no longer serving the notice: the
        instance came back on this boot (a hibernated instance resumes from RAM). End the drain so that the host
        can serve again instead of staying drained until the next reboot."""
        notices = self.state["notices"]
        if self.state["phase"] == PHASE_IDLE or not notices or now < effective_deadline(notices):
            return
        if not all(notice["kind"] == "spot" and notice["key"].split(":", 1)[1] in RESUMABLE_SPOT_ACTIONS
                   for notice in notices):
            return
        previous = {key: self.state.get(key) for key in ("notices", "steps", "deregister_calls")}
        vllm_was_stopped = bool(self.state.get("stop_requested_at")) or "stop_vllm" in self.state["steps"]
        fresh = new_state(self.state["boot_id"])
        fresh["previous_drain"] = previous
        self.state = fresh
        self._calls, self._retry_at, self._call_failures, self._step_errors = {}, {}, {}, {}
        self._stop_requested_this_run = False
        self._idle_readings = 0
        self._save()
        with contextlib.suppress(OSError):
            os.unlink(self.config.stop_request_path)
        keys = [notice["key"] for notice in notices]
        log("resumed_after_interruption", notices=keys, action="drain ended; registration allowed again")
        if vllm_was_stopped:
            # Nothing else would start it on this boot: systemd started it once, at boot, and the drain stopped it.
            self.stopper.request_start("resumed after " + ",".join(keys))
            log("vllm_start_requested", unit=self.config.vllm_unit, reason="resumed after interruption")

    # ------------------------------------------------------------------ drain
    def _bound(self, step):
        """The wall-clock time by which step must be done (None: it has no bound of its own)."""
        if step is None or not self.state["notices"]:
            return None
        deadline = self._deadline()
        if step in ("deregister", "wait_requests"):
            return stop_by(deadline, self.config)
        if step == "wait_alb":
            return alb_wait_until(self.state["steps"].get("deregister", time.time()), deadline, self.config)
        if step == "complete_lifecycle":
            return deadline
        return None

    def advance(self):
        """Works on the current step until one has to wait; returns failures met."""
        failures = []
        for _attempt in STEPS:
            step = next_step(self.state, self.config)
            if step is None:
                if self.state["phase"] == PHASE_DRAINING:
                    self._mutate(lambda state: state.update(phase=PHASE_DRAINED))
                    log("drain_finished", **self._elapsed(), steps=sorted(self.state["steps"]))
                return failures
            try:
                done = getattr(self, "_step_" + step)()
            except Exception as error:  # noqa: BLE001 - no answer may end the drain; the bound ends the step
                text = f"{error.__class__.__name__}: {error}" if not isinstance(error, (AwsError, NoticeError)) else str(error)
                self._step_errors[step] = text
                failures.append(f"{step}: {text}")
                log("step_failure", step=step, error=text)
                done = False
            if not done:
                bound = self._bound(step)
                if bound is None or time.time() < bound:
                    return failures
                self._abandon(step, bound)
        return failures

    def _abandon(self, step, bound):
        """Gives up a step at its bound and moves on: the next steps (in the end, vLLM's stop) must not wait."""
        pending = [call for key, call in self._calls.items() if key[0] == step]
        if step in self._step_errors:
            reason = self._step_errors[step]
        elif pending:
            reason = f"no answer from {pending[0].what} after {time.monotonic() - pending[0].started:.1f} s"
        else:
            reason = "not finished"
        for key in [key for key in self._calls if key[0] == step]:
            del self._calls[key]  # the thread ends on its own timeouts; its answer is not wanted any more
        if step == "wait_alb" and step not in self._step_errors and not pending:
            event = "alb_wait_bounded"
        elif step == "wait_requests" and step not in self._step_errors and not pending:
            event = "requests_wait_bounded"
        else:
            event = "step_abandoned"
        now = time.time()

        def note(state):
            state["steps"][step] = now
            state.setdefault("abandoned", {})[step] = reason

        self._mutate(note)
        log(event, step=step, reason=reason, bound=utc_stamp(bound), **self._elapsed())

    def _io(self, step, what, function, *args, sent_event=None, **sent_fields):
        """function(*args) off the main loop: PENDING while it runs or waits out its backoff, then its result.
        A failure raises here once; the call is repeated after a jittered, growing delay. With sent_event, each
        attempt is logged as it starts (the drill checks that deregistration starts in the notice's own cycle)."""
        key = (step, what) + tuple(str(arg) for arg in args)
        call = self._calls.get(key)
        if call is None:
            if time.monotonic() < self._retry_at.get(key, 0.0):
                return PENDING
            self._calls[key] = BackgroundCall(what, function, args, self._wake)
            if sent_event:
                log(sent_event, attempt=self._call_failures.get(key, 0) + 1, **sent_fields, **self._elapsed())
            return PENDING
        if not call.done:
            return PENDING
        del self._calls[key]
        if call.error is not None:
            failures = self._call_failures[key] = self._call_failures.get(key, 0) + 1
            delay = backoff_delay(failures, self.config.aws_backoff_base_s, self.config.aws_backoff_cap_s, self.rng)
            self._retry_at[key] = time.monotonic() + delay
            raise call.error
        self._call_failures.pop(key, None)
        self._retry_at.pop(key, None)
        return call.result

    def _deadline(self):
        return effective_deadline(self.state["notices"])

    def _elapsed(self):
        started = self.state.get("drain_started_at") or time.time()
        return {"since_notice_s": time.time() - started}

    def _finish_step(self, step, event, **fields):
        now = time.time()
        self._step_errors.pop(step, None)
        self._mutate(lambda state: state["steps"].__setitem__(step, now))
        log(event, **fields, **self._elapsed())
        return True

    def _step_deregister(self):
        for arn in self.config.target_group_arns:
            if arn in self.state["deregistered_target_groups"]:
                continue
            deregistered = self._io(
                "deregister", "DeregisterTargets", self.aws.deregister, arn, self.instance_id, self.config.target_port,
                sent_event="deregister_sent", target_group=arn,
            )
            if deregistered is PENDING:
                return False

            def note(state, arn=arn):
                state["deregistered_target_groups"].append(arn)
                state["deregister_calls"] += 1

            self._mutate(note)
            log(
                "deregistered" if deregistered else "already_deregistered",
                target_group=arn,
                instance_id=self.instance_id,
                **self._elapsed(),
            )
        return self._finish_step("deregister", "deregister_done", target_groups=len(self.config.target_group_arns))

    def _step_wait_alb(self):
        states = {}
        for arn in self.config.target_group_arns:
            state = self._io(
                "wait_alb", "DescribeTargetHealth", self.aws.target_state, arn, self.instance_id, self.config.target_port
            )
            if state is PENDING:
                return False
            states[arn] = state
        if all(state in OUT_OF_SERVICE_STATES for state in states.values()):
            return self._finish_step("wait_alb", "alb_out_of_service", states=sorted(set(states.values())))
        return False

    def _step_wait_requests(self):
        reading = self._io("wait_requests", "vLLM /metrics", self.vllm.in_flight)
        if reading is PENDING:
            return False
        if reading is None:
            return self._finish_step("wait_requests", "requests_drained", reason="vLLM not listening")
        self._step_errors.pop("wait_requests", None)
        running, waiting = reading
        if running + waiting == 0:
            self._idle_readings += 1
            if self._idle_readings >= self.config.idle_confirmations:
                return self._finish_step("wait_requests", "requests_drained", running=0, waiting=0)
            return False
        self._idle_readings = 0
        if self._last_in_flight != (running, waiting):
            self._last_in_flight = (running, waiting)
            log("requests_in_flight", running=running, waiting=waiting,
                stop_by=utc_stamp(stop_by(self._deadline(), self.config)))
        return False

    def _step_stop_vllm(self):
        requested_at = self.state.get("stop_requested_at")
        # A stop command was a child of the run before a restart and went with it; asking again is harmless.
        # A stop request file outlives a restart: its removal still tells when vLLM has stopped.
        rerun_command = bool(self.config.stop_command) and not self._stop_requested_this_run
        if requested_at is None or rerun_command:
            self.stopper.request(self.state["notices"][0]["key"])
            self._stop_requested_this_run = True
            requested_at = requested_at or time.time()
            self._mutate(lambda state: state.update(stop_requested_at=requested_at))
            log("vllm_stop_requested", unit=self.config.vllm_unit, **self._elapsed(),
                before_stop_by_s=stop_by(self._deadline(), self.config) - time.time())
            return False
        result = self.stopper.finished()
        if result is None:
            if time.time() >= stop_wait_until(requested_at, self._deadline(), self.config):
                return self._finish_step("stop_vllm", "vllm_stop_timed_out", unit=self.config.vllm_unit)
            return False
        ok, detail = result
        return self._finish_step("stop_vllm", "vllm_stopped" if ok else "vllm_stop_failed", detail=detail)

    def _step_complete_lifecycle(self):
        completed = self._io(
            "complete_lifecycle", "CompleteLifecycleAction", self.aws.complete_lifecycle_action,
            self.config.asg_name, self.config.lifecycle_hook_name, self.instance_id,
        )
        if completed is PENDING:
            return False
        return self._finish_step(
            "complete_lifecycle",
            "lifecycle_completed" if completed else "lifecycle_none_pending",
            asg=self.config.asg_name,
            hook=self.config.lifecycle_hook_name,
        )


# ---------------------------------------------------------------------------------------------- entry points
def _discover(imds, config, deadline):
    """Instance id and region: from the configuration, else from IMDS (retried until deadline)."""
    instance_id, region = config.instance_id, config.region
    last_error = None
    while True:
        try:
            instance_id = instance_id or imds.get_text(INSTANCE_ID_PATH)
            region = region or imds.get_text(REGION_PATH)
            return instance_id, region
        except ImdsError as error:
            last_error = error
        if time.monotonic() >= deadline:
            raise ImdsError(f"instance identity not readable from IMDS: {last_error}")
        time.sleep(config.poll_interval_s)


def _setup(config, startup_timeout_s, require_credentials=True):
    imds = ImdsClient(config.imds_endpoint, config.imds_token_ttl_s, config.imds_timeout_s)
    instance_id, region = _discover(imds, config, time.monotonic() + startup_timeout_s)
    aws = Aws(config, region, config.imds_endpoint)
    try:
        aws.warm_up()
    except Exception as error:  # noqa: BLE001 - botocore raises several kinds while fetching credentials
        if require_credentials:
            raise AwsError(f"credentials: {error.__class__.__name__}: {error}") from None
        # The daemon still watches and drains without AWS: a drain's AWS steps fail and are abandoned at their
        # bound, and vLLM is stopped in time all the same.
        log("aws_credentials_unavailable", error=f"{error.__class__.__name__}: {error}", action="watching anyway")
    return imds, aws, instance_id, region


def command_watch(config):
    startup_timeout = config.poll_interval_s * config.max_identical_failures
    try:
        imds, aws, instance_id, region = _setup(config, startup_timeout, require_credentials=False)
    except (ImdsError, AwsError) as error:
        log("startup_failed", error=str(error))
        return EXIT_REPEATED_FAILURE
    store = StateStore(config)
    vllm = VllmProbe(config.vllm_health_url, config.vllm_metrics_url, config.vllm_timeout_s)
    watcher = Watcher(
        config, store, imds=imds, aws=aws, vllm=vllm, stopper=VllmStopper(config), instance_id=instance_id
    )
    signal.signal(signal.SIGTERM, watcher.request_shutdown)
    signal.signal(signal.SIGINT, watcher.request_shutdown)
    log("started", instance_id=instance_id, region=region, imds=config.imds_endpoint, pid=os.getpid())
    return watcher.run()


def _drain_active(store):
    with store.locked():
        state = state_for_boot(store.load(), current_boot_id())
    return state["phase"] != PHASE_IDLE, state


def command_register(config):
    store = StateStore(config)
    vllm = VllmProbe(config.vllm_health_url, config.vllm_metrics_url, config.vllm_timeout_s)
    started = time.monotonic()
    deadline = started + config.registration_health_timeout_s
    while not vllm.healthy():
        if time.monotonic() >= deadline:
            log("register_failed", reason="vLLM not healthy", waited_s=time.monotonic() - started)
            return 1
        time.sleep(1.0)
    log("vllm_healthy", waited_s=time.monotonic() - started, url=config.vllm_health_url)
    draining, state = _drain_active(store)
    if draining:
        log("register_refused", reason="a drain is under way on this boot", phase=state["phase"])
        return 0
    try:
        _imds, aws, instance_id, _region = _setup(config, 60.0)
        for arn in config.target_group_arns:
            aws.register(arn, instance_id, config.target_port)
            log("registered", target_group=arn, instance_id=instance_id, port=config.target_port)
    except (ImdsError, AwsError) as error:
        log("register_failed", error=str(error))
        return 1
    with store.locked():
        state = state_for_boot(store.load(), current_boot_id())
        state["registered_at"] = time.time()
        store.save(state)
    return 0


def command_deregister(config):
    """Planned stop: take the target out and let in-flight requests finish before systemd stops vLLM."""
    store = StateStore(config)
    draining, state = _drain_active(store)
    if draining:
        log("planned_stop_skipped", reason="the spot drain already deregistered", phase=state["phase"])
        return 0
    started = time.time()
    deadline = started + config.planned_stop_drain_timeout_s
    try:
        _imds, aws, instance_id, _region = _setup(config, 30.0)
        for arn in config.target_group_arns:
            done = aws.deregister(arn, instance_id, config.target_port)
            log("deregistered" if done else "already_deregistered", target_group=arn, reason="planned stop")
        alb_bound = min(started + config.deregistration_delay_s, deadline)
        while config.target_group_arns:
            states = {aws.target_state(arn, instance_id, config.target_port) for arn in config.target_group_arns}
            if states <= set(OUT_OF_SERVICE_STATES) or time.time() >= alb_bound:
                log("alb_out_of_service" if states <= set(OUT_OF_SERVICE_STATES) else "alb_wait_bounded",
                    states=sorted(states))
                break
            time.sleep(config.drain_check_interval_s)
    except (ImdsError, AwsError) as error:
        # vLLM stops anyway (its --shutdown-timeout drains what it has); say why the ALB was not told.
        log("planned_stop_deregister_failed", error=str(error))
    vllm = VllmProbe(config.vllm_health_url, config.vllm_metrics_url, config.vllm_timeout_s)
    idle = 0
    while time.time() < deadline:
        try:
            reading = vllm.in_flight()
        except NoticeError as error:
            log("planned_stop_metrics_failure", error=str(error))
            reading = (1, 0)
        if reading is None or sum(reading) == 0:
            idle += 1
            if reading is None or idle >= config.idle_confirmations:
                break
        else:
            idle = 0
        time.sleep(config.drain_check_interval_s)
    log("planned_stop_drained", seconds=time.time() - started)
    with store.locked():
        state = state_for_boot(store.load(), current_boot_id())
        state["planned_stops"] = state.get("planned_stops", 0) + 1
        state["registered_at"] = None
        store.save(state)
    return 0


def command_status(config):
    state = StateStore(config).load()
    print(json.dumps(state, indent=1, sort_keys=True))
    return 0


def command_reset(config):
    store = StateStore(config)
    with store.locked():
        state = state_for_boot(store.load(), current_boot_id())
        if state["phase"] == PHASE_DRAINING:
            print("a drain is under way; stop llmserve-spot-watcher first", file=sys.stderr)
            return 1
        fresh = new_state(state["boot_id"])
        if state["phase"] != PHASE_IDLE:
            fresh["previous_drain"] = {key: state.get(key) for key in ("notices", "steps", "deregister_calls")}
        store.save(fresh)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config.stop_request_path)
    log("reset", previous_phase=state["phase"])
    return 0


COMMANDS = {
    "watch": command_watch,
    "register": command_register,
    "deregister": command_deregister,
    "status": command_status,
    "reset": command_reset,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="watch", choices=sorted(COMMANDS))
    parser.add_argument("--config", default=os.environ.get("LLMSERVE_SPOT_WATCHER_CONFIG", DEFAULT_CONFIG_PATH))
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        log("config_error", error=str(error), path=args.config)
        return EXIT_CONFIG
    if not os.path.isdir(config.state_dir):
        log("config_error", error=f"state_dir {config.state_dir} is not a directory", path=args.config)
        return EXIT_CONFIG
    return COMMANDS[args.command](config)


if __name__ == "__main__":
    sys.exit(main())
