"""A local EC2 instance metadata service (IMDSv2) for tests.

Standard library only: it runs on the host and inside the Debian bookworm systemd host image with Debian's own
/usr/bin/python3 (3.11.2) and nothing installed. It binds to any address and port given (the real link-local
169.254.169.254 is not available here); point clients at it with their endpoint setting, e.g. botocore's
``AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:PORT``.

Run as a script::

    python3 tests/bench/imds_emulator.py --host 127.0.0.1 --port 0 --port-file /tmp/imds.port \\
        [--instance-id i-...] [--region us-east-1] [--max-token-ttl 21600] [--allow-imdsv1] \\
        [--aws-endpoint-url http://127.0.0.1:MOTO_PORT]

It prints ``IMDS emulator listening on http://HOST:PORT``, writes the bound port to --port-file (if given),
and serves until SIGTERM or SIGINT. Or import it::

    with ImdsEmulator(instance_id="i-0abc") as imds:
        imds.set_spot_action("terminate", in_seconds=120)
        ... imds.url ... imds.requests() ...

What matches real EC2 IMDS
--------------------------
* ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds: 1..21600`` answers the token as text
  and the granted TTL in the same header. Header missing, not a number, or out of range: 400. A token request
  carrying ``X-Forwarded-For`` is refused with 403, as real IMDS refuses tokens to requests that went through
  a proxy. Other methods on the token path: 405.
* ``GET`` under ``/latest/`` needs ``X-aws-ec2-metadata-token``: missing (IMDSv1), unknown or expired: 401.
  Tokens expire after their TTL on the monotonic clock. IMDSv1 is refused unless ``allow_imdsv1`` is set, so
  a test can prove a client never falls back to v1. Non-GET methods on metadata paths: 405.
  Answers carry the token's remaining TTL in ``X-aws-ec2-metadata-token-ttl-seconds``.
* Error bodies are IMDS's HTML pages (``<title>404 - Not Found</title>``); values are ``text/plain``.
* Directories list their children one per line, sub-directories with a trailing ``/``
  (``GET /latest/meta-data/`` -> ``ami-id\\nami-launch-index\\n...\\nplacement/\\n...``).
* ``meta-data/``: ami-id, ami-launch-index, hostname, local-hostname, local-ipv4, instance-id, instance-type,
  instance-life-cycle, mac, placement/availability-zone, placement/region, services/domain,
  services/partition, network/interfaces/macs/<mac>/{device-number,local-ipv4s,mac,subnet-id,vpc-id},
  iam/info, iam/security-credentials/ (the role name) and iam/security-credentials/<role> (JSON: Code,
  LastUpdated, Type AWS-HMAC, AccessKeyId, SecretAccessKey, Token, Expiration). ``role_name=None`` leaves out
  ``iam/`` as on an instance without a profile. The keys are test keys: moto accepts any.
* ``dynamic/instance-identity/document``: accountId, architecture, availabilityZone, billingProducts,
  devpayProductCodes, marketplaceProductCodes, imageId, instanceId, instanceType, kernelId, pendingTime,
  privateIp, ramdiskId, region, version.
* Notices, 404 while none is set (clients treat that 404 as "no notice"):
  ``spot/instance-action`` -> ``{"action": "terminate"|"stop"|"hibernate", "time": "2026-11-28T17:11:44Z"}``;
  ``events/recommendations/rebalance`` -> ``{"noticeTime": "2026-11-28T17:09:44Z"}``;
  ``autoscaling/target-lifecycle-state`` -> ``InService``, ``Terminated``, ``Warmed:...`` (plain text).
* ``events/maintenance/scheduled`` (and ``events/maintenance/history``) answer 200 with a JSON list, ``[]``
  when there are no events, not 404. Why: AWS's docs say only that the path "contains a JSON string" when
  events exist, but AWS's own client, aws-node-termination-handler (pkg/ec2metadata), decodes this path as a
  JSON list and treats any non-2xx answer, 404 included, as an error (its tests assert an error on 404),
  while it treats 404 as "no notice" for spot/instance-action and events/recommendations/rebalance. It polls
  the path on every node all the time, so real IMDS answers ``[]`` here. An event::

      [{"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "system-reboot", "Description": "scheduled reboot",
        "EventId": "instance-event-0d59937288b749b32", "NotAfter": "21 Jan 2019 09:17:23 GMT",
        "State": "active"}]

  Times use Go's layout "2 Jan 2006 15:04:05 GMT" (day without a leading zero, English month, UTC).

Where it differs from EC2 (on purpose)
--------------------------------------
* ``max_token_ttl`` (default 21600) caps the TTL granted: a request is still validated against 1..21600, but
  the token lives min(requested, max_token_ttl) seconds and the answer says so, so a client's token refresh
  can be tested in seconds. ``expire_tokens()`` invalidates every token at once.
* Only the ``latest`` version is served; ``/`` lists ``latest``.
* No user-data, no signatures (pkcs7/rsa2048/signature) of the identity document.
* Faults and the control API below.
* ``fresh_notice_times`` (off by default; real IMDS keeps a notice's time): re-stamps the spot notice's ``time``
  (now + the seconds it was set with) and the rebalance ``noticeTime`` (now) on every read, as AWS's own IMDS mock
  (amazon-ec2-metadata-mock) and some caching proxies do, so a client's notice identity can be tested.

Control API (not part of IMDS; no token needed; JSON bodies; answers are JSON)
------------------------------------------------------------------------------
* ``POST /_emulator/spot-action`` ``{"action": "terminate", "in_seconds": 120}``: notice time = now + in_seconds.
* ``POST /_emulator/rebalance`` ``{}`` or ``{"seconds_ago": 5}``: noticeTime = now - seconds_ago.
* ``POST /_emulator/scheduled-events``: ``{"code": "system-reboot", "in_seconds": 3600, "duration_seconds":
  1800, "description": "...", "state": "active"}`` appends one event (EventId generated); ``{"events": [...]}``
  replaces the list with exactly what is given (for malformed-value tests).
* ``POST /_emulator/lifecycle-state`` ``{"state": "Terminated"}`` (``{"state": null}`` removes it).
* ``POST /_emulator/fault``: ``{"path": "/latest/meta-data/spot/instance-action", "status": 500, "count": 3}``,
  ``{"path": ..., "body": "{not json"}`` (200 with that body), ``{"path": ..., "delay_s": 3}`` (answers after
  the delay). Fields combine. ``count`` limits how many answers the fault takes (default: until cleared).
  ``path`` may be relative to /latest/ (``"meta-data/instance-id"``); a trailing ``/`` does not matter.
  Faults apply after IMDS's own checks pass (a valid token, a valid TTL header), so they model a reachable
  path answering badly, and IMDS's own rules stay testable under faults. ``DELETE /_emulator/faults`` clears.
* ``POST /_emulator/max-token-ttl`` ``{"seconds": 2}``; ``POST /_emulator/expire-tokens``.
* ``POST /_emulator/fresh-notice-times`` ``{"enabled": true}``: see ``fresh_notice_times`` above.
* ``POST /_emulator/metadata`` ``{"key": "instance-life-cycle", "value": "spot"}`` sets a meta-data leaf
  (``"value": null`` removes it).
* ``POST /_emulator/sync-from-aws`` ``{"instance_id": "i-..."}``: see below.
* ``DELETE /_emulator/notices``: clears spot action, rebalance, scheduled events and lifecycle state.
* ``GET /_emulator/requests``: every IMDS request so far, oldest first: ``{"method", "path", "had_token",
  "token_valid", "status", "at"}`` (``at``: epoch seconds when it arrived; control API calls are not logged). ``DELETE /_emulator/requests`` clears the log.
* ``POST /_emulator/reset``: notices, faults, tokens and the request log cleared; max token TTL back to 21600.

Local AWS
---------
With ``aws_endpoint_url`` (e.g. a moto server) and an ``instance_id``, ``start()`` copies that instance's facts
from EC2's DescribeInstances (instance type, AMI, private IP and DNS name, AZ and region, MAC, subnet, VPC,
launch time, spot lifecycle, owner account) and its instance profile's role name from IAM's
GetInstanceProfile, so metadata and the local AWS agree. Requests are SigV4-signed with AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY from the environment, else test keys.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from xml.etree import ElementTree
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_PATH = "/latest/api/token"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL_SECONDS = 21600
CONTROL_PREFIX = "/_emulator/"

SPOT_ACTIONS = ("terminate", "stop", "hibernate")
LIFECYCLE_STATES = (
    "InService",
    "Terminated",
    "Warmed:Stopped",
    "Warmed:Running",
    "Warmed:Hibernated",
    "Warmed:Terminated",
)
RFC3339_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Go's "Jan" is always English; strftime's %b follows the C locale, so spell the months out.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_ERROR_PAGE = (
    '<?xml version="1.0" encoding="iso-8859-1"?>\n'
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
    '\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
    '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
    " <head>\n  <title>{code} - {reason}</title>\n </head>\n"
    " <body>\n  <h1>{code} - {reason}</h1>\n </body>\n</html>\n"
)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def format_rfc3339(moment: datetime.datetime) -> str:
    """IMDS's notice time: seconds precision, UTC, ``Z``."""
    return moment.astimezone(datetime.timezone.utc).strftime(RFC3339_FORMAT)


def format_scheduled_event_time(moment: datetime.datetime) -> str:
    """Go layout "2 Jan 2006 15:04:05 GMT", as scheduled events carry it."""
    moment = moment.astimezone(datetime.timezone.utc)
    return f"{moment.day} {_MONTHS[moment.month - 1]} {moment.year} {moment:%H:%M:%S} GMT"


class ControlError(ValueError):
    """A control request the emulator cannot apply; answered with 400."""


class _Response:
    __slots__ = ("body", "content_type", "delay_s", "headers", "status")

    def __init__(self, status, body="", content_type="text/plain", headers=None, delay_s=0.0):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}
        self.delay_s = delay_s


def _error_response(status: int, headers: dict | None = None) -> _Response:
    body = _ERROR_PAGE.format(code=status, reason=_REASONS.get(status, "Error"))
    return _Response(status, body, "text/html", headers)


class _Fault:
    __slots__ = ("body", "delay_s", "path", "remaining", "status")

    def __init__(self, path, status, body, delay_s, remaining):
        self.path = path
        self.status = status
        self.body = body
        self.delay_s = delay_s
        self.remaining = remaining

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "status": self.status,
            "body": self.body,
            "delay_s": self.delay_s,
            "remaining": self.remaining,
        }


def _normalize_imds_path(path: str) -> str:
    """Absolute path without a trailing slash; relative paths are under /latest/."""
    if not path.startswith("/"):
        path = "/latest/" + path
    stripped = path.rstrip("/")
    return stripped or "/"


def _expect_number(body: dict, key: str, default=None, minimum=None):
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ControlError(f"{key} must be a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ControlError(f"{key} must be >= {minimum}, got {value!r}")
    return value


class ImdsEmulator:
    """An IMDSv2 server on a loopback address, with controls for notices, faults and tokens."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        instance_id: str = "i-0123456789abcdef0",
        region: str = "us-east-1",
        availability_zone: str | None = None,
        instance_type: str = "g5.xlarge",
        ami_id: str = "ami-0123456789abcdef0",
        local_ipv4: str = "10.0.1.10",
        mac: str = "0e:12:34:56:78:9a",
        subnet_id: str = "subnet-0123456789abcdef0",
        vpc_id: str = "vpc-0123456789abcdef0",
        account_id: str = "123456789012",
        architecture: str = "x86_64",
        instance_life_cycle: str = "on-demand",
        role_name: str | None = "llmserve-instance-role",
        access_key_id: str = "ASIAIMDSEMULATORTEST",
        secret_access_key: str = "imds-emulator-secret-access-key-for-tests",
        session_token: str = "imds-emulator-session-token-for-tests",
        credentials_lifetime_s: int = 6 * 3600,
        max_token_ttl: int = MAX_TOKEN_TTL_SECONDS,
        allow_imdsv1: bool = False,
        aws_endpoint_url: str | None = None,
        log_requests: bool = False,
    ):
        self.host = host
        self.port = port
        self.region = region
        self.availability_zone = availability_zone or f"{region}a"
        self.instance_id = instance_id
        self.instance_type = instance_type
        self.ami_id = ami_id
        self.local_ipv4 = local_ipv4
        self.local_hostname: str | None = None
        self.mac = mac
        self.subnet_id = subnet_id
        self.vpc_id = vpc_id
        self.account_id = account_id
        self.architecture = architecture
        self.instance_life_cycle = instance_life_cycle
        self.role_name = role_name
        self.instance_profile_arn: str | None = None
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token
        self.allow_imdsv1 = allow_imdsv1
        self.aws_endpoint_url = aws_endpoint_url
        self.log_requests = log_requests

        started = utc_now()
        self.pending_time = started
        self._credentials_updated = started
        self._credentials_expire = started + datetime.timedelta(seconds=credentials_lifetime_s)

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._tokens: dict[str, float] = {}
        self._max_token_ttl = self._checked_max_ttl(max_token_ttl)
        self._extra_metadata: dict[str, str | None] = {}
        self._spot_action: dict | None = None
        self._spot_in_seconds = 120.0
        self._fresh_notice_times = False
        self._rebalance: dict | None = None
        self._scheduled_events: list = []
        self._lifecycle_state: str | None = None
        self._faults: list[_Fault] = []
        self._requests: list[dict] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> ImdsEmulator:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        if self.aws_endpoint_url:
            self.sync_from_aws()
        server_class = _Ipv6Server if ":" in self.host else _Ipv4Server
        self._server = server_class((self.host, self.port), _Handler)
        self._server.emulator = self
        self.port = self._server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="imds-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        # Wakes handlers sleeping in a delay fault so they do not hold the port.
        self._stopping.set()
        # shutdown() waits for serve_forever's next poll; a connection wakes it at once, so stopping takes
        # milliseconds, not a poll interval (tests start and stop an emulator per test).
        stopper = threading.Thread(target=self._server.shutdown, name="imds-emulator-stop", daemon=True)
        stopper.start()
        deadline = time.monotonic() + 5
        while stopper.is_alive() and time.monotonic() < deadline:
            self._wake_server()
            stopper.join(0.01)
        self._server.server_close()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._server = None
        self._thread = None

    def _wake_server(self) -> None:
        wildcard_to_loopback = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
        try:
            with socket.create_connection((wildcard_to_loopback.get(self.host, self.host), self.port), timeout=0.2):
                pass
        except OSError:
            pass  # Already closed or unreachable: serve_forever still ends at its next poll.

    def __enter__(self) -> ImdsEmulator:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ controls
    def set_spot_action(self, action: str = "terminate", in_seconds: float = 120) -> dict:
        if action not in SPOT_ACTIONS:
            raise ControlError(f"action must be one of {SPOT_ACTIONS}, got {action!r}")
        notice = {"action": action, "time": format_rfc3339(utc_now() + datetime.timedelta(seconds=in_seconds))}
        with self._lock:
            self._spot_action = notice
            self._spot_in_seconds = in_seconds
        return notice

    def set_rebalance_recommendation(self, seconds_ago: float = 0) -> dict:
        notice = {"noticeTime": format_rfc3339(utc_now() - datetime.timedelta(seconds=seconds_ago))}
        with self._lock:
            self._rebalance = notice
        return notice

    def add_scheduled_event(
        self,
        code: str = "system-reboot",
        in_seconds: float = 3600,
        duration_seconds: float = 1800,
        description: str | None = None,
        state: str = "active",
    ) -> dict:
        not_before = utc_now() + datetime.timedelta(seconds=in_seconds)
        event = {
            "NotBefore": format_scheduled_event_time(not_before),
            "Code": code,
            "Description": description or f"scheduled {code.replace('-', ' ')}",
            "EventId": f"instance-event-{secrets.token_hex(9)[:17]}",
            "NotAfter": format_scheduled_event_time(not_before + datetime.timedelta(seconds=duration_seconds)),
            "State": state,
        }
        with self._lock:
            self._scheduled_events.append(event)
        return event

    def set_scheduled_events(self, events: list) -> None:
        """Replaces the events verbatim: a test may serve values a real client must reject."""
        if not isinstance(events, list):
            raise ControlError("events must be a list")
        with self._lock:
            self._scheduled_events = list(events)

    def set_lifecycle_state(self, state: str | None) -> None:
        if state is not None and state not in LIFECYCLE_STATES:
            raise ControlError(f"state must be one of {LIFECYCLE_STATES} or null, got {state!r}")
        with self._lock:
            self._lifecycle_state = state

    def clear_notices(self) -> None:
        with self._lock:
            self._spot_action = None
            self._rebalance = None
            self._scheduled_events = []
            self._lifecycle_state = None

    def add_fault(
        self,
        path: str,
        *,
        status: int | None = None,
        body: str | None = None,
        delay_s: float | None = None,
        count: int | None = None,
    ) -> dict:
        if status is None and body is None and delay_s is None:
            raise ControlError("a fault needs status, body or delay_s")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
            raise ControlError(f"status must be an HTTP status code, got {status!r}")
        if body is not None and not isinstance(body, str):
            raise ControlError("body must be a string")
        if delay_s is not None and (isinstance(delay_s, bool) or not isinstance(delay_s, (int, float)) or delay_s < 0):
            raise ControlError(f"delay_s must be a number >= 0, got {delay_s!r}")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ControlError(f"count must be an integer >= 1, got {count!r}")
        if not isinstance(path, str) or not path:
            raise ControlError("path must be a non-empty string")
        fault = _Fault(_normalize_imds_path(path), status, body, delay_s, count)
        with self._lock:
            self._faults.append(fault)
        return fault.as_dict()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = []

    def set_fresh_notice_times(self, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise ControlError(f"enabled must be true or false, got {enabled!r}")
        with self._lock:
            self._fresh_notice_times = enabled

    def set_max_token_ttl(self, seconds: int) -> None:
        with self._lock:
            self._max_token_ttl = self._checked_max_ttl(seconds)

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def set_metadata(self, key: str, value: str | None) -> None:
        """Sets (or, with None, removes) a leaf under meta-data/, e.g. ``instance-life-cycle``."""
        if not isinstance(key, str) or not key.strip("/"):
            raise ControlError("key must be a non-empty path under meta-data/")
        key = key.strip("/")
        if value is not None and not isinstance(value, str):
            raise ControlError("value must be a string or null")
        with self._lock:
            self._extra_metadata[key] = value

    def requests(self) -> list[dict]:
        with self._lock:
            return [dict(entry) for entry in self._requests]

    def imdsv1_requests(self) -> list[dict]:
        """Metadata reads made without a token, i.e. IMDSv1 attempts."""
        return [r for r in self.requests() if r["method"] == "GET" and not r["had_token"]]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests = []

    def reset(self) -> None:
        self.clear_notices()
        self.clear_faults()
        self.expire_tokens()
        self.clear_requests()
        self.set_max_token_ttl(MAX_TOKEN_TTL_SECONDS)
        with self._lock:
            self._extra_metadata = {}
            self._fresh_notice_times = False

    @property
    def credentials(self) -> dict:
        """The role credentials exactly as iam/security-credentials/<role> serves them."""
        return {
            "Code": "Success",
            "LastUpdated": format_rfc3339(self._credentials_updated),
            "Type": "AWS-HMAC",
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.session_token,
            "Expiration": format_rfc3339(self._credentials_expire),
        }

    # ------------------------------------------------------------------ local AWS
    def sync_from_aws(self, instance_id: str | None = None) -> dict:
        """Copies the instance's facts from the local AWS at aws_endpoint_url (see the module docstring)."""
        if not self.aws_endpoint_url:
            raise ControlError("no aws_endpoint_url configured")
        instance_id = instance_id or self.instance_id
        query = {"Action": "DescribeInstances", "Version": "2016-11-15", "InstanceId.1": instance_id}
        try:
            root = _aws_query(self.aws_endpoint_url, self.region, "ec2", query)
        except AwsQueryError as error:
            if error.code == "InvalidInstanceID.NotFound":
                raise ControlError(f"instance {instance_id} not found at {self.aws_endpoint_url}") from error
            raise
        reservation = root.find("{*}reservationSet/{*}item")
        instance = None if reservation is None else reservation.find("{*}instancesSet/{*}item")
        if instance is None:
            raise ControlError(f"instance {instance_id} not found at {self.aws_endpoint_url}")

        def text(path: str) -> str | None:
            found = instance.find(path)
            return found.text if found is not None and found.text else None

        facts = {
            "instance_id": text("{*}instanceId"),
            "instance_type": text("{*}instanceType"),
            "ami_id": text("{*}imageId"),
            "local_ipv4": text("{*}privateIpAddress"),
            "local_hostname": text("{*}privateDnsName"),
            "availability_zone": text("{*}placement/{*}availabilityZone"),
            "subnet_id": text("{*}subnetId"),
            "vpc_id": text("{*}vpcId"),
            "mac": text("{*}networkInterfaceSet/{*}item/{*}macAddress"),
            "architecture": text("{*}architecture"),
            "account_id": reservation.findtext("{*}ownerId") or None,
        }
        launch_time = text("{*}launchTime")
        profile_arn = text("{*}iamInstanceProfile/{*}arn")
        role_name = self._role_of_instance_profile(profile_arn) if profile_arn else None
        with self._lock:
            for attribute, value in facts.items():
                if value is not None:
                    setattr(self, attribute, value)
            self.region = self.availability_zone[:-1]
            self.instance_life_cycle = "spot" if text("{*}instanceLifecycle") == "spot" else "on-demand"
            if launch_time:
                self.pending_time = datetime.datetime.fromisoformat(launch_time.replace("Z", "+00:00"))
            self.instance_profile_arn = profile_arn
            self.role_name = role_name
        facts.update(
            region=self.region,
            instance_life_cycle=self.instance_life_cycle,
            instance_profile_arn=profile_arn,
            role_name=role_name,
        )
        return facts

    def _role_of_instance_profile(self, profile_arn: str) -> str | None:
        profile_name = profile_arn.rsplit("/", 1)[-1]
        query = {"Action": "GetInstanceProfile", "Version": "2010-05-08", "InstanceProfileName": profile_name}
        root = _aws_query(self.aws_endpoint_url, "us-east-1", "iam", query)
        return root.findtext("{*}GetInstanceProfileResult/{*}InstanceProfile/{*}Roles/{*}member/{*}RoleName")

    # ------------------------------------------------------------------ serving
    @staticmethod
    def _checked_max_ttl(seconds) -> int:
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_TOKEN_TTL_SECONDS:
            raise ControlError(f"max token TTL must be an integer in 1..{MAX_TOKEN_TTL_SECONDS}, got {seconds!r}")
        return seconds

    def _metadata_tree(self) -> dict[str, str]:
        """Every leaf served right now, keyed by its path under /latest/. Caller holds the lock."""
        hostname = self.local_hostname or self._default_hostname()
        meta = {
            "ami-id": self.ami_id,
            "ami-launch-index": "0",
            "hostname": hostname,
            "local-hostname": hostname,
            "local-ipv4": self.local_ipv4,
            "instance-id": self.instance_id,
            "instance-type": self.instance_type,
            "instance-life-cycle": self.instance_life_cycle,
            "mac": self.mac,
            "placement/availability-zone": self.availability_zone,
            "placement/region": self.region,
            "services/domain": "amazonaws.com",
            "services/partition": "aws",
            f"network/interfaces/macs/{self.mac}/device-number": "0",
            f"network/interfaces/macs/{self.mac}/local-ipv4s": self.local_ipv4,
            f"network/interfaces/macs/{self.mac}/mac": self.mac,
            f"network/interfaces/macs/{self.mac}/subnet-id": self.subnet_id,
            f"network/interfaces/macs/{self.mac}/vpc-id": self.vpc_id,
            "events/maintenance/scheduled": json.dumps(self._scheduled_events, indent=2),
            "events/maintenance/history": "[]",
        }
        if self.role_name:
            profile_arn = self.instance_profile_arn or (
                f"arn:aws:iam::{self.account_id}:instance-profile/{self.role_name}"
            )
            meta["iam/info"] = json.dumps(
                {
                    "Code": "Success",
                    "LastUpdated": format_rfc3339(self._credentials_updated),
                    "InstanceProfileArn": profile_arn,
                    "InstanceProfileId": "AIPAIMDSEMULATORTEST",
                },
                indent=2,
            )
            meta[f"iam/security-credentials/{self.role_name}"] = json.dumps(self.credentials, indent=2)
        if self._fresh_notice_times:
            if self._spot_action is not None:
                fresh = utc_now() + datetime.timedelta(seconds=self._spot_in_seconds)
                self._spot_action = dict(self._spot_action, time=format_rfc3339(fresh))
            if self._rebalance is not None:
                self._rebalance = {"noticeTime": format_rfc3339(utc_now())}
        if self._spot_action is not None:
            meta["spot/instance-action"] = json.dumps(self._spot_action)
        if self._rebalance is not None:
            meta["events/recommendations/rebalance"] = json.dumps(self._rebalance)
        if self._lifecycle_state is not None:
            meta["autoscaling/target-lifecycle-state"] = self._lifecycle_state
        for key, value in self._extra_metadata.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        tree = {f"meta-data/{key}": value for key, value in meta.items()}
        tree["dynamic/instance-identity/document"] = json.dumps(self._identity_document(), indent=2)
        return tree

    def _default_hostname(self) -> str:
        dashed = self.local_ipv4.replace(".", "-")
        if self.region == "us-east-1":
            return f"ip-{dashed}.ec2.internal"
        return f"ip-{dashed}.{self.region}.compute.internal"

    def _identity_document(self) -> dict:
        return {
            "accountId": self.account_id,
            "architecture": self.architecture,
            "availabilityZone": self.availability_zone,
            "billingProducts": None,
            "devpayProductCodes": None,
            "marketplaceProductCodes": None,
            "imageId": self.ami_id,
            "instanceId": self.instance_id,
            "instanceType": self.instance_type,
            "kernelId": None,
            "pendingTime": format_rfc3339(self.pending_time),
            "privateIp": self.local_ipv4,
            "ramdiskId": None,
            "region": self.region,
            "version": "2017-09-30",
        }

    def _lookup(self, path: str) -> _Response:
        """Answers a GET of an absolute path; the caller holds the lock."""
        if path == "/":
            return _Response(200, "latest")
        if path != "/latest" and not path.startswith("/latest/"):
            return _error_response(404)
        relative = path[len("/latest/") :] if path != "/latest" else ""
        tree = self._metadata_tree()
        if relative in tree:
            return _Response(200, tree[relative])
        prefix = f"{relative}/" if relative else ""
        children: list[str] = []
        for leaf in tree:
            if leaf.startswith(prefix):
                head, slash, _unused = leaf[len(prefix) :].partition("/")
                child = head + slash
                if child not in children:
                    children.append(child)
        if not children:
            return _error_response(404)
        return _Response(200, "\n".join(sorted(children)))

    def _take_fault(self, path: str) -> _Fault | None:
        """The first active fault on path, counting this answer against it. Caller holds the lock."""
        for fault in self._faults:
            if fault.path == path:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _apply_fault(fault: _Fault | None, response: _Response) -> _Response:
        if fault is None:
            return response
        if fault.status is not None and fault.body is None:
            faulted = _error_response(fault.status) if fault.status >= 400 else _Response(fault.status, "")
        elif fault.body is not None:
            faulted = _Response(fault.status or 200, fault.body)
        else:
            faulted = response
        faulted.headers = {**response.headers, **faulted.headers}
        faulted.delay_s = fault.delay_s or 0.0
        return faulted

    def _answer_token(self, method: str, headers) -> _Response:
        if method != "PUT":
            return _error_response(405, {"Allow": "PUT"})
        if headers.get("X-Forwarded-For") is not None:
            return _error_response(403)
        requested = headers.get(TOKEN_TTL_HEADER)
        try:
            ttl = int(requested) if requested is not None else None
        except ValueError:
            ttl = None
        if ttl is None or not 1 <= ttl <= MAX_TOKEN_TTL_SECONDS:
            return _error_response(400)
        with self._lock:
            fault = self._take_fault(TOKEN_PATH)
            granted = min(ttl, self._max_token_ttl)
            token = secrets.token_urlsafe(42)
            self._tokens[token] = time.monotonic() + granted
        return self._apply_fault(fault, _Response(200, token, headers={TOKEN_TTL_HEADER: str(granted)}))

    def _answer_metadata(self, method: str, path: str, token: str | None) -> tuple[_Response, bool | None]:
        """The answer and whether the token was valid (None when there was none)."""
        if method != "GET":
            return _error_response(405, {"Allow": "GET"}), None
        with self._lock:
            token_valid = None
            ttl_headers = {}
            if token is not None:
                expires = self._tokens.get(token)
                now = time.monotonic()
                token_valid = expires is not None and now < expires
                if not token_valid:
                    self._tokens.pop(token, None)
                    return _error_response(401), False
                ttl_headers = {TOKEN_TTL_HEADER: str(max(1, int(expires - now)))}
            elif not self.allow_imdsv1:
                return _error_response(401), None
            fault = self._take_fault(path)
            response = self._lookup(path)
            response.headers.update(ttl_headers)
        return self._apply_fault(fault, response), token_valid

    def handle_imds(self, method: str, raw_path: str, headers) -> _Response:
        """One IMDS request, logged; headers is any case-insensitive mapping (http.client.HTTPMessage)."""
        arrived_at = time.time()
        sent_path = urllib.parse.urlsplit(raw_path).path
        path = _normalize_imds_path(sent_path)
        token = headers.get(TOKEN_HEADER)
        if path == TOKEN_PATH:
            response = self._answer_token(method, headers)
            token_valid = None
        else:
            response, token_valid = self._answer_metadata(method, path, token)
        with self._lock:
            self._requests.append(
                {
                    "method": method,
                    "path": sent_path,
                    "had_token": token is not None,
                    "token_valid": token_valid,
                    "status": response.status,
                    "at": arrived_at,
                }
            )
        return response

    def handle_control(self, method: str, raw_path: str, body: bytes) -> tuple[int, object]:
        """One control API request; answers (status, JSON-able body)."""
        action = urllib.parse.urlsplit(raw_path).path[len(CONTROL_PREFIX) :].rstrip("/")
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError as error:
            return 400, {"error": f"body is not JSON: {error}"}
        if not isinstance(payload, dict):
            return 400, {"error": "body must be a JSON object"}
        routes = {
            ("POST", "spot-action"): lambda: self.set_spot_action(
                payload.get("action", "terminate"), _expect_number(payload, "in_seconds", 120)
            ),
            ("POST", "rebalance"): lambda: self.set_rebalance_recommendation(_expect_number(payload, "seconds_ago", 0)),
            ("POST", "scheduled-events"): lambda: self._control_scheduled_events(payload),
            ("POST", "lifecycle-state"): lambda: self.set_lifecycle_state(payload.get("state")),
            ("POST", "fault"): lambda: self.add_fault(
                payload.get("path"),
                status=payload.get("status"),
                body=payload.get("body"),
                delay_s=payload.get("delay_s"),
                count=payload.get("count"),
            ),
            ("DELETE", "faults"): self.clear_faults,
            ("POST", "max-token-ttl"): lambda: self.set_max_token_ttl(payload.get("seconds")),
            ("POST", "expire-tokens"): self.expire_tokens,
            ("POST", "fresh-notice-times"): lambda: self.set_fresh_notice_times(payload.get("enabled")),
            ("POST", "metadata"): lambda: self.set_metadata(payload.get("key", ""), payload.get("value")),
            ("POST", "sync-from-aws"): lambda: self.sync_from_aws(payload.get("instance_id")),
            ("DELETE", "notices"): self.clear_notices,
            ("GET", "requests"): self.requests,
            ("DELETE", "requests"): self.clear_requests,
            ("POST", "reset"): self.reset,
        }
        handler = routes.get((method, action))
        if handler is None:
            known = sorted(f"{m} {CONTROL_PREFIX}{a}" for m, a in routes)
            return 404, {"error": f"no control endpoint {method} {raw_path}", "endpoints": known}
        try:
            result = handler()
        except (ControlError, AwsQueryError) as error:
            return 400, {"error": str(error)}
        return 200, {"ok": True} if result is None else result

    def _control_scheduled_events(self, payload: dict):
        if "events" in payload:
            self.set_scheduled_events(payload["events"])
            return None
        return self.add_scheduled_event(
            code=payload.get("code", "system-reboot"),
            in_seconds=_expect_number(payload, "in_seconds", 3600),
            duration_seconds=_expect_number(payload, "duration_seconds", 1800, minimum=0),
            description=payload.get("description"),
            state=payload.get("state", "active"),
        )

    def wait_for_delay(self, seconds: float) -> None:
        """Sleeps for a delay fault; stop() cuts it short."""
        self._stopping.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    sys_version = ""

    def _serve(self) -> None:
        emulator: ImdsEmulator = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if self.path.startswith(CONTROL_PREFIX):
            status, answer = emulator.handle_control(self.command, self.path, body)
            self._write(_Response(status, json.dumps(answer), "application/json"))
            return
        response = emulator.handle_imds(self.command, self.path, self.headers)
        if response.delay_s:
            emulator.wait_for_delay(response.delay_s)
        self._write(response)

    def _write(self, response: _Response) -> None:
        payload = response.body.encode("utf-8")
        try:
            self.send_response(response.status, _REASONS.get(response.status))
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout test); nothing left to tell it.
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _serve  # noqa: N815 - http.server's names

    def log_message(self, format, *args):  # noqa: A002 - the signature is http.server's
        if self.server.emulator.log_requests:
            sys.stderr.write(f"imds-emulator {self.address_string()} {format % args}\n")


class _Ipv4Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: ImdsEmulator


class _Ipv6Server(_Ipv4Server):
    address_family = socket.AF_INET6


# ---------------------------------------------------------------------- AWS query API (SigV4, stdlib only)
class AwsQueryError(RuntimeError):
    """The local AWS endpoint could not answer a query; code is AWS's error code when it sent one."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def _aws_query(endpoint_url: str, region: str, service: str, params: dict, timeout: float = 10.0):
    """POSTs an AWS query-protocol call signed with SigV4; returns the parsed XML root."""
    access_key = os.environ.get("AWS_ACCESS_KEY_ID", "testing")
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY", "testing")
    session_token = os.environ.get("AWS_SESSION_TOKEN")
    body = urllib.parse.urlencode(params).encode("utf-8")
    parts = urllib.parse.urlsplit(endpoint_url)
    now = utc_now()
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date_stamp = now.strftime("%Y%m%d")
    content_type = "application/x-www-form-urlencoded; charset=utf-8"
    signed = {"content-type": content_type, "host": parts.netloc, "x-amz-date": amz_date}
    if session_token:
        signed["x-amz-security-token"] = session_token
    signed_names = ";".join(sorted(signed))
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in sorted(signed))
    canonical_request = "\n".join(
        ["POST", parts.path or "/", "", canonical_headers, signed_names, hashlib.sha256(body).hexdigest()]
    )
    scope = f"{date_stamp}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
    )
    key = _sign(("AWS4" + secret_key).encode("utf-8"), date_stamp)
    for part in (region, service, "aws4_request"):
        key = _sign(key, part)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    headers = {name: value for name, value in signed.items() if name != "host"}
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_names}, Signature={signature}"
    )
    request = urllib.request.Request(endpoint_url.rstrip("/") + "/", data=body, headers=headers, method="POST")
    # The local AWS is on loopback: never route it through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as answer:
            return ElementTree.fromstring(answer.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        try:
            code = ElementTree.fromstring(detail).findtext(".//{*}Code")
        except ElementTree.ParseError:
            code = None
        message = f"{service} {params.get('Action')} at {endpoint_url}: HTTP {error.code}: {detail[:500]}"
        raise AwsQueryError(message, code) from error
    except (urllib.error.URLError, OSError, ElementTree.ParseError) as error:
        raise AwsQueryError(f"{service} {params.get('Action')} at {endpoint_url}: {error}") from error


# ---------------------------------------------------------------------- script entry point
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Local EC2 IMDSv2 emulator (see the module docstring).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--instance-id", default="i-0123456789abcdef0")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--availability-zone", help="default: REGION + 'a'")
    parser.add_argument("--instance-type", default="g5.xlarge")
    parser.add_argument("--ami-id", default="ami-0123456789abcdef0")
    parser.add_argument("--local-ipv4", default="10.0.1.10")
    parser.add_argument("--account-id", default="123456789012")
    parser.add_argument("--instance-life-cycle", default="on-demand", choices=("on-demand", "spot"))
    parser.add_argument("--role-name", default="llmserve-instance-role", help="'' for an instance without a role")
    parser.add_argument("--max-token-ttl", type=int, default=MAX_TOKEN_TTL_SECONDS)
    parser.add_argument("--allow-imdsv1", action="store_true", help="answer GETs without a token (default: 401)")
    parser.add_argument("--aws-endpoint-url", help="local AWS (moto) to copy the instance's facts from")
    parser.add_argument("--log-requests", action="store_true", help="log each request to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        emulator = ImdsEmulator(
            args.host,
            args.port,
            instance_id=args.instance_id,
            region=args.region,
            availability_zone=args.availability_zone,
            instance_type=args.instance_type,
            ami_id=args.ami_id,
            local_ipv4=args.local_ipv4,
            account_id=args.account_id,
            instance_life_cycle=args.instance_life_cycle,
            role_name=args.role_name or None,
            max_token_ttl=args.max_token_ttl,
            allow_imdsv1=args.allow_imdsv1,
            aws_endpoint_url=args.aws_endpoint_url,
            log_requests=args.log_requests,
        )
        emulator.start()
    except (ControlError, AwsQueryError, OSError) as error:
        print(f"imds-emulator: {error}", file=sys.stderr)
        return 2

    stop_requested = threading.Event()

    def request_stop(signum, frame):
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if args.port_file:
        # Written whole then renamed, so a reader never sees a half-written port.
        partial = f"{args.port_file}.partial"
        with open(partial, "w", encoding="ascii") as handle:
            handle.write(f"{emulator.port}\n")
        os.replace(partial, args.port_file)
    print(f"IMDS emulator listening on {emulator.url}", flush=True)
    while not stop_requested.wait(3600):
        pass
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
