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
              never repeats a step. Exits 3 after N identical consecutive failures so systemd restarts it.
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
import re
import signal
import subprocess
import sys
import time
import urllib.parse

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
_SCHEDULED_TIME = re.compile(r"^\s*(\d{1,2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT\s*$")
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
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
    # A spot notice whose time cannot be read still means the instance goes: assume EC2's two minutes.
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
    asg_name: str = ""
    lifecycle_hook_name: str = ""
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
    moment = datetime.datetime.fromtimestamp(time.time() if epoch is None else epoch, datetime.UTC)
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
    if not isinstance(text, str) or not _RFC3339.match(text.strip()):
        raise NoticeError(f"not an RFC 3339 time: {text!r}")
    normalized = text.strip().replace("z", "Z").replace("t", "T")
    try:
        moment = datetime.datetime.fromisoformat(normalized.replace("Z", "+00:00"))
    except ValueError as error:
        raise NoticeError(f"not an RFC 3339 time: {text!r} ({error})") from None
    return moment.timestamp()


def parse_scheduled_time(text):
    """Epoch seconds of a scheduled event time in Go's layout "2 Jan 2006 15:04:05 GMT"."""
    match = _SCHEDULED_TIME.match(text) if isinstance(text, str) else None
    if not match or match.group(2) not in _MONTHS:
        raise NoticeError(f"not a scheduled event time (\"2 Jan 2006 15:04:05 GMT\"): {text!r}")
    day, month, year, hour, minute, second = match.groups()
    try:
        moment = datetime.datetime(
            int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=datetime.UTC
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
    try:
        deadline = parse_rfc3339(raw_time)
        warning = None
    except NoticeError as error:
        # The notice is there, so the instance is going; only when is unreadable. Acting on the usual two
        # minutes is safer than ignoring a termination.
        deadline = now + config.fallback_notice_s
        warning = f"{SPOT_ACTION_PATH}: {error}; assuming {config.fallback_notice_s:.0f} s"
    key = f"spot:{action}:{raw_time}"
    return Notice("spot", key, deadline, f"spot {action} at {raw_time}"), warning


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
    key = f"rebalance:{document['noticeTime']}"
    return Notice("rebalance", key, now + config.rebalance_drain_budget_s, "rebalance recommendation"), warning


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
            raise NoticeError(f"vLLM metric {match.group(1)} has a bad value {match.group(3)!r}") from None
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
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        self._client_error = ClientError
        self._boto_error = BotoCoreError
        boto_config = BotoConfig(
            connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
        )
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
        except self._boto_error as error:
            raise AwsError(f"{what}: {error}") from None

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
        temporary = f"{self.config.stop_request_path}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"unit": self.config.vllm_unit, "notice": notice_key, "requested_at": time.time()}, handle)
        os.replace(temporary, self.config.stop_request_path)

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


# ---------------------------------------------------------------------------------------------- the daemon
class Watcher:
    """Polls IMDS and drives the drain one non-blocking step at a time, saving state after each step."""

    def __init__(self, config, store, *, imds, aws, vllm, stopper, instance_id):
        self.config = config
        self.store = store
        self.imds = imds
        self.aws = aws
        self.vllm = vllm
        self.stopper = stopper
        self.instance_id = instance_id
        self.failures = FailureTracker(config.max_identical_failures)
        self.state = None
        self._idle_readings = 0
        self._last_in_flight = None
        self._ignored = set()
        self._next_poll = 0.0
        self._pending_failures = []
        self._stop_requested_this_run = False
        self._stopping = False

    def _save(self):
        with self.store.locked():
            self.store.save(self.state)

    def _mutate(self, change):
        """Re-reads the state under the lock (the CLI units write it too), applies change, saves."""
        with self.store.locked():
            saved = self.store.load()
            if isinstance(saved, dict) and saved.get("boot_id") == self.state["boot_id"]:
                # Only the registration bookkeeping is written by others; the drain fields are ours.
                for key in ("registered_at", "planned_stops"):
                    self.state[key] = saved.get(key, self.state.get(key))
            change(self.state)
            self.store.save(self.state)

    def start(self):
        with self.store.locked():
            self.state = state_for_boot(self.store.load(), current_boot_id())
            self.store.save(self.state)
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

    def run(self):
        self.start()
        while not self._stopping:
            polled, failures = self.tick()
            if polled:
                count = self.failures.observe(failures)
                if self.failures.exhausted:
                    log("giving_up", identical_failures=count, failure="; ".join(sorted(failures)))
                    return EXIT_REPEATED_FAILURE
            if self.state["phase"] == PHASE_DRAINING:
                pause = self.config.drain_check_interval_s
            else:
                pause = self._next_poll - time.monotonic()
            time.sleep(min(max(pause, 0.0), self.config.poll_interval_s))
        log("stopping", reason="signal", phase=self.state["phase"])
        return 0

    def tick(self):
        """One pass: advance the drain, and poll IMDS when due. Returns (polled, failures of this poll cycle).

        Failures of drain steps between polls are carried into the next poll cycle's signature, so that the
        identical-failure count advances once per poll interval whatever the drain's check rate.
        """
        self._pending_failures += self.advance()
        now_mono = time.monotonic()
        if now_mono < self._next_poll:
            return False, []
        self._next_poll = now_mono + self.config.poll_interval_s
        failures = self.poll_imds() + self._pending_failures
        self._pending_failures = []
        # A notice found by this poll starts its drain now, not a check interval later.
        failures += self.advance()
        return True, failures

    # ------------------------------------------------------------------ IMDS
    def poll_imds(self):
        failures = []
        now = time.time()
        readers = [
            # Rebalance is read even when it does not act, so that its arrival is logged as ignored.
            (True, SPOT_ACTION_PATH, read_spot_action),
            (True, REBALANCE_PATH, read_rebalance),
            (self.config.act_on_scheduled_events, SCHEDULED_EVENTS_PATH, read_scheduled_events),
            (self.config.act_on_asg_termination, LIFECYCLE_STATE_PATH, read_lifecycle_state),
        ]
        for wanted, path, reader in readers:
            if not wanted:
                continue
            try:
                status, body = self.imds.get(path)
                found, warnings = reader(status, body, now, self.config)
            except (ImdsError, NoticeError) as error:
                failures.append(str(error))
                log("imds_failure", path=path, error=str(error))
                continue
            notices = found if isinstance(found, list) else [found] if found else []
            warnings = warnings if isinstance(warnings, list) else [warnings] if warnings else []
            for warning in warnings:
                log("imds_warning", path=path, warning=warning)
            for notice in notices:
                self.consider(notice, now)
        return failures

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

    # ------------------------------------------------------------------ drain
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
            except (AwsError, NoticeError, OSError) as error:
                failures.append(f"{step}: {error}")
                log("step_failure", step=step, error=str(error))
                return failures
            if not done:
                return failures
        return failures

    def _deadline(self):
        return effective_deadline(self.state["notices"])

    def _elapsed(self):
        started = self.state.get("drain_started_at") or time.time()
        return {"since_notice_s": time.time() - started}

    def _finish_step(self, step, event, **fields):
        now = time.time()
        self._mutate(lambda state: state["steps"].__setitem__(step, now))
        log(event, **fields, **self._elapsed())
        return True

    def _step_deregister(self):
        for arn in self.config.target_group_arns:
            if arn in self.state["deregistered_target_groups"]:
                continue
            deregistered = self.aws.deregister(arn, self.instance_id, self.config.target_port)

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
        states = {
            arn: self.aws.target_state(arn, self.instance_id, self.config.target_port)
            for arn in self.config.target_group_arns
        }
        if all(state in OUT_OF_SERVICE_STATES for state in states.values()):
            return self._finish_step("wait_alb", "alb_out_of_service", states=sorted(set(states.values())))
        deregistered_at = self.state["steps"]["deregister"]
        if time.time() >= alb_wait_until(deregistered_at, self._deadline(), self.config):
            return self._finish_step("wait_alb", "alb_wait_bounded", states=sorted(set(states.values())))
        return False

    def _step_wait_requests(self):
        bound = stop_by(self._deadline(), self.config)
        try:
            reading = self.vllm.in_flight()
        except NoticeError:
            if time.time() >= bound:
                return self._finish_step("wait_requests", "requests_wait_bounded", reason="metrics unreadable")
            raise
        if reading is None:
            return self._finish_step("wait_requests", "requests_drained", reason="vLLM not listening")
        running, waiting = reading
        if running + waiting == 0:
            self._idle_readings += 1
            if self._idle_readings >= self.config.idle_confirmations:
                return self._finish_step("wait_requests", "requests_drained", running=0, waiting=0)
            return False
        self._idle_readings = 0
        if time.time() >= bound:
            return self._finish_step("wait_requests", "requests_wait_bounded", running=running, waiting=waiting)
        if self._last_in_flight != (running, waiting):
            self._last_in_flight = (running, waiting)
            log("requests_in_flight", running=running, waiting=waiting, stop_by=utc_stamp(bound))
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
            log("vllm_stop_requested", unit=self.config.vllm_unit, **self._elapsed())
            return False
        result = self.stopper.finished()
        if result is None:
            if time.time() >= stop_wait_until(requested_at, self._deadline(), self.config):
                return self._finish_step("stop_vllm", "vllm_stop_timed_out", unit=self.config.vllm_unit)
            return False
        ok, detail = result
        return self._finish_step("stop_vllm", "vllm_stopped" if ok else "vllm_stop_failed", detail=detail)

    def _step_complete_lifecycle(self):
        completed = self.aws.complete_lifecycle_action(
            self.config.asg_name, self.config.lifecycle_hook_name, self.instance_id
        )
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


def _setup(config, startup_timeout_s):
    imds = ImdsClient(config.imds_endpoint, config.imds_token_ttl_s, config.imds_timeout_s)
    instance_id, region = _discover(imds, config, time.monotonic() + startup_timeout_s)
    aws = Aws(config, region, config.imds_endpoint)
    aws.warm_up()
    return imds, aws, instance_id, region


def command_watch(config):
    startup_timeout = config.poll_interval_s * config.max_identical_failures
    try:
        imds, aws, instance_id, region = _setup(config, startup_timeout)
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
