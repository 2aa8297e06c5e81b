"""The IMDSv2 emulator answers like EC2's instance metadata service, over real HTTP on loopback."""

import ast
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.wait import still_running, wait_until
from tests.bench.imds_emulator import (
    ImdsEmulator,
    format_scheduled_event_time,
)

EMULATOR_SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "imds_emulator.py"
DEBIAN_PYTHON = "/usr/bin/python3.11"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
SCHEDULED_EVENT_TIME_FORMAT = "%d %b %Y %H:%M:%S GMT"
NOTICE_PATHS_404_WHEN_NONE = (
    "/latest/meta-data/spot/instance-action",
    "/latest/meta-data/events/recommendations/rebalance",
    "/latest/meta-data/autoscaling/target-lifecycle-state",
)
# Never route loopback calls through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(url, path, method="GET", headers=None, body=None, timeout=5.0):
    """(status, headers, text) of one HTTP request; HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers or {})
    try:
        with OPENER.open(request, timeout=timeout) as answer:
            return answer.status, answer.headers, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def token(url, ttl="21600"):
    status, _unused, text = call(url, "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    assert status == 200, text
    return text


def get(url, path, imds_token=None, timeout=5.0):
    headers = {"X-aws-ec2-metadata-token": imds_token} if imds_token else {}
    return call(url, path, headers=headers, timeout=timeout)


def control(url, method, action, body=None):
    status, _unused, text = call(url, f"/_emulator/{action}", method, body=body if body is not None else {})
    return status, json.loads(text)


def parse_rfc3339(text):
    assert RFC3339.match(text), text
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def seconds_from_now(moment):
    return (moment - datetime.datetime.now(datetime.UTC)).total_seconds()


# ------------------------------------------------------------------------------------------ tokens
def test_token_put_answers_token_and_granted_ttl(imds):
    status, headers, text = call(imds.url, "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    assert status == 200
    assert len(text) >= 40
    assert text.strip() == text
    assert headers["X-aws-ec2-metadata-token-ttl-seconds"] == "300"


@pytest.mark.parametrize("ttl", ["1", "21600"])
def test_token_ttl_bounds_are_accepted(imds, ttl):
    status, _unused, _unused = call(imds.url, "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    assert status == 200


@pytest.mark.parametrize("ttl", [None, "0", "21601", "-1", "ten"])
def test_token_without_valid_ttl_header_is_400(imds, ttl):
    headers = {} if ttl is None else {"X-aws-ec2-metadata-token-ttl-seconds": ttl}
    status, _unused, text = call(imds.url, "/latest/api/token", "PUT", headers)
    assert status == 400
    assert "<title>400 - Bad Request</title>" in text


def test_token_request_through_a_proxy_is_403(imds):
    headers = {"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "203.0.113.7"}
    status, _unused, _unused = call(imds.url, "/latest/api/token", "PUT", headers)
    assert status == 403


def test_token_path_only_takes_put(imds):
    status, headers, _unused = call(imds.url, "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert status == 405
    assert headers["Allow"] == "PUT"


def test_imdsv1_get_without_token_is_401(imds):
    status, headers, text = get(imds.url, "/latest/meta-data/instance-id")
    assert status == 401
    assert headers["Content-Type"] == "text/html"
    assert "<h1>401 - Unauthorized</h1>" in text


def test_unknown_token_is_401(imds):
    token(imds.url)
    status, _unused, _unused = get(imds.url, "/latest/meta-data/instance-id", "not-a-token-the-emulator-issued")
    assert status == 401


def test_token_expires_after_its_ttl(imds):
    short = token(imds.url, ttl="1")
    issued = time.monotonic()
    status, headers, _unused = get(imds.url, "/latest/meta-data/instance-id", short)
    assert status == 200
    assert headers["X-aws-ec2-metadata-token-ttl-seconds"] == "1"
    # a 1-second token must stop working within 3 s
    wait_until(lambda: get(imds.url, "/latest/meta-data/instance-id", short)[0] == 401,
               issued + 3.0 - time.monotonic(), "a 1-second token to stop working (401) within 3 s")
    assert time.monotonic() - issued >= 0.95, "the token died before its TTL"


def test_max_token_ttl_caps_the_granted_ttl(imds):
    status, body = control(imds.url, "POST", "max-token-ttl", {"seconds": 5})
    assert (status, body) == (200, {"ok": True})
    status, headers, _unused = call(imds.url, "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    assert status == 200
    assert headers["X-aws-ec2-metadata-token-ttl-seconds"] == "5"


def test_expire_tokens_invalidates_every_token(imds):
    first, second = token(imds.url), token(imds.url)
    assert control(imds.url, "POST", "expire-tokens") == (200, {"ok": True})
    assert get(imds.url, "/latest/meta-data/instance-id", first)[0] == 401
    assert get(imds.url, "/latest/meta-data/instance-id", second)[0] == 401
    assert get(imds.url, "/latest/meta-data/instance-id", token(imds.url))[0] == 200


def test_imdsv1_is_answered_only_when_allowed():
    with ImdsEmulator(allow_imdsv1=True, instance_id="i-0v1allowed0000000") as imds:
        status, _unused, text = get(imds.url, "/latest/meta-data/instance-id")
        assert (status, text) == (200, "i-0v1allowed0000000")
        # A bad token is refused even where v1 is allowed, as on EC2.
        assert get(imds.url, "/latest/meta-data/instance-id", "bogus")[0] == 401


def test_metadata_paths_take_only_get(imds):
    status, _unused, _unused = call(imds.url, "/latest/meta-data/instance-id", "PUT", {"X-aws-ec2-metadata-token": token(imds.url)})
    assert status == 405


# ------------------------------------------------------------------------------------------ metadata
@pytest.fixture
def custom_imds():
    with ImdsEmulator(
        instance_id="i-0feedfacecafe0001",
        region="eu-west-1",
        availability_zone="eu-west-1c",
        instance_type="g6.12xlarge",
        ami_id="ami-0aaaabbbbccccdddd",
        local_ipv4="10.20.30.40",
        mac="0e:aa:bb:cc:dd:ee",
        account_id="210987654321",
        instance_life_cycle="spot",
        role_name="gpu-node-role",
    ) as emulator:
        yield emulator


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("instance-id", "i-0feedfacecafe0001"),
        ("instance-type", "g6.12xlarge"),
        ("ami-id", "ami-0aaaabbbbccccdddd"),
        ("local-ipv4", "10.20.30.40"),
        ("hostname", "ip-10-20-30-40.eu-west-1.compute.internal"),
        ("placement/region", "eu-west-1"),
        ("placement/availability-zone", "eu-west-1c"),
        ("mac", "0e:aa:bb:cc:dd:ee"),
        ("instance-life-cycle", "spot"),
        ("iam/security-credentials/", "gpu-node-role"),
    ],
)
def test_metadata_values(custom_imds, path, expected):
    status, headers, text = get(custom_imds.url, f"/latest/meta-data/{path}", token(custom_imds.url))
    assert (status, text) == (200, expected)
    assert headers["Content-Type"] == "text/plain"


def test_hostname_in_us_east_1_uses_ec2_internal(imds):
    _unused, _unused, text = get(imds.url, "/latest/meta-data/hostname", token(imds.url))
    assert text == "ip-10-0-1-10.ec2.internal"


def test_meta_data_directory_lists_keys_and_subdirectories(imds):
    status, _unused, text = get(imds.url, "/latest/meta-data/", token(imds.url))
    assert status == 200
    entries = text.split("\n")
    for key in ("ami-id", "hostname", "instance-id", "instance-type", "local-ipv4", "mac", "placement/", "iam/"):
        assert key in entries
    assert "spot/" not in entries, "spot/ listed while there is no instance action"
    _unused, _unused, placement = get(imds.url, "/latest/meta-data/placement/", token(imds.url))
    assert placement.split("\n") == ["availability-zone", "region"]


def test_unknown_metadata_path_is_404(imds):
    status, _unused, text = get(imds.url, "/latest/meta-data/no-such-key", token(imds.url))
    assert status == 404
    assert "<title>404 - Not Found</title>" in text


def test_identity_document(custom_imds):
    status, _unused, text = get(custom_imds.url, "/latest/dynamic/instance-identity/document", token(custom_imds.url))
    assert status == 200
    document = json.loads(text)
    assert {
        key: document[key]
        for key in ("accountId", "availabilityZone", "imageId", "instanceId", "instanceType", "privateIp", "region")
    } == {
        "accountId": "210987654321",
        "availabilityZone": "eu-west-1c",
        "imageId": "ami-0aaaabbbbccccdddd",
        "instanceId": "i-0feedfacecafe0001",
        "instanceType": "g6.12xlarge",
        "privateIp": "10.20.30.40",
        "region": "eu-west-1",
    }
    assert document["architecture"] == "x86_64"
    assert document["version"] == "2017-09-30"
    assert abs(seconds_from_now(parse_rfc3339(document["pendingTime"]))) < 60


def test_role_credentials_json(imds):
    _unused, _unused, text = get(imds.url, "/latest/meta-data/iam/security-credentials/llmserve-instance-role", token(imds.url))
    credentials = json.loads(text)
    assert credentials["Code"] == "Success"
    assert credentials["Type"] == "AWS-HMAC"
    assert credentials["AccessKeyId"] == imds.access_key_id
    assert credentials["SecretAccessKey"] == imds.secret_access_key
    assert credentials["Token"] == imds.session_token
    assert seconds_from_now(parse_rfc3339(credentials["Expiration"])) > 3600
    assert seconds_from_now(parse_rfc3339(credentials["LastUpdated"])) <= 1


def test_instance_without_role_has_no_iam_tree():
    with ImdsEmulator(role_name=None) as imds:
        status, _unused, _unused = get(imds.url, "/latest/meta-data/iam/security-credentials/", token(imds.url))
        assert status == 404


def test_set_metadata_adds_and_removes_leaves(imds):
    assert control(imds.url, "POST", "metadata", {"key": "public-ipv4", "value": "198.51.100.4"})[0] == 200
    assert get(imds.url, "/latest/meta-data/public-ipv4", token(imds.url))[2] == "198.51.100.4"
    assert control(imds.url, "POST", "metadata", {"key": "instance-type", "value": None})[0] == 200
    assert get(imds.url, "/latest/meta-data/instance-type", token(imds.url))[0] == 404


# ------------------------------------------------------------------------------------------ notices
@pytest.mark.parametrize("path", NOTICE_PATHS_404_WHEN_NONE)
def test_notice_paths_are_404_when_no_notice(imds, path):
    status, _unused, _unused = get(imds.url, path, token(imds.url))
    assert status == 404


def test_scheduled_events_are_an_empty_list_when_none(imds):
    status, _unused, text = get(imds.url, "/latest/meta-data/events/maintenance/scheduled", token(imds.url))
    assert status == 200
    assert json.loads(text) == []


@pytest.mark.parametrize("action", ["terminate", "stop", "hibernate"])
def test_spot_instance_action_format(imds, action):
    status, notice = control(imds.url, "POST", "spot-action", {"action": action, "in_seconds": 120})
    assert status == 200
    status, _unused, text = get(imds.url, "/latest/meta-data/spot/instance-action", token(imds.url))
    assert status == 200
    answer = json.loads(text)
    assert answer == notice
    assert set(answer) == {"action", "time"}
    assert answer["action"] == action
    assert 117 <= seconds_from_now(parse_rfc3339(answer["time"])) <= 121


def test_spot_action_rejects_unknown_action(imds):
    status, body = control(imds.url, "POST", "spot-action", {"action": "explode"})
    assert status == 400
    assert "explode" in body["error"]


def test_rebalance_recommendation_format(imds):
    assert control(imds.url, "POST", "rebalance", {"seconds_ago": 30})[0] == 200
    status, _unused, text = get(imds.url, "/latest/meta-data/events/recommendations/rebalance", token(imds.url))
    assert status == 200
    answer = json.loads(text)
    assert set(answer) == {"noticeTime"}
    assert -32 <= seconds_from_now(parse_rfc3339(answer["noticeTime"])) <= -28


def test_scheduled_event_format(imds):
    status, _unused = control(
        imds.url, "POST", "scheduled-events", {"code": "instance-stop", "in_seconds": 7200, "duration_seconds": 1800}
    )
    assert status == 200
    status, _unused, text = get(imds.url, "/latest/meta-data/events/maintenance/scheduled", token(imds.url))
    assert status == 200
    (event,) = json.loads(text)
    assert set(event) == {"NotBefore", "Code", "Description", "EventId", "NotAfter", "State"}
    assert event["Code"] == "instance-stop"
    assert event["State"] == "active"
    assert re.fullmatch(r"instance-event-[0-9a-f]{17}", event["EventId"])
    not_before = datetime.datetime.strptime(event["NotBefore"], SCHEDULED_EVENT_TIME_FORMAT)
    not_after = datetime.datetime.strptime(event["NotAfter"], SCHEDULED_EVENT_TIME_FORMAT)
    assert 7140 <= seconds_from_now(not_before.replace(tzinfo=datetime.UTC)) <= 7201  # two hours ahead
    assert (not_after - not_before).total_seconds() == 1800


def test_scheduled_event_time_uses_go_layout_without_leading_zero():
    moment = datetime.datetime(2006, 1, 2, 15, 4, 5, tzinfo=datetime.UTC)
    assert format_scheduled_event_time(moment) == "2 Jan 2006 15:04:05 GMT"
    assert format_scheduled_event_time(moment.replace(day=21, month=11)) == "21 Nov 2006 15:04:05 GMT"


def test_scheduled_events_can_be_replaced_verbatim(imds):
    raw = [{"NotBefore": "not a time", "Code": "system-reboot", "State": "active"}]
    assert control(imds.url, "POST", "scheduled-events", {"events": raw})[0] == 200
    _unused, _unused, text = get(imds.url, "/latest/meta-data/events/maintenance/scheduled", token(imds.url))
    assert json.loads(text) == raw


def test_target_lifecycle_state(imds):
    for state in ("InService", "Terminated"):
        assert control(imds.url, "POST", "lifecycle-state", {"state": state})[0] == 200
        status, _unused, text = get(imds.url, "/latest/meta-data/autoscaling/target-lifecycle-state", token(imds.url))
        assert (status, text) == (200, state)
    assert control(imds.url, "POST", "lifecycle-state", {"state": "Sleeping"})[0] == 400
    assert control(imds.url, "POST", "lifecycle-state", {"state": None})[0] == 200
    assert get(imds.url, "/latest/meta-data/autoscaling/target-lifecycle-state", token(imds.url))[0] == 404


def test_clearing_notices_brings_back_404s(imds):
    imds.set_spot_action("terminate", in_seconds=120)
    imds.set_rebalance_recommendation()
    imds.add_scheduled_event()
    imds.set_lifecycle_state("Terminated")
    assert control(imds.url, "DELETE", "notices") == (200, {"ok": True})
    imds_token = token(imds.url)
    for path in NOTICE_PATHS_404_WHEN_NONE:
        assert get(imds.url, path, imds_token)[0] == 404, path
    assert get(imds.url, "/latest/meta-data/events/maintenance/scheduled", imds_token)[2] == "[]"


# ------------------------------------------------------------------------------------------ faults
def test_fault_answers_status_count_times_then_recovers(imds):
    path = "/latest/meta-data/instance-id"
    status, _unused = control(imds.url, "POST", "fault", {"path": path, "status": 500, "count": 3})
    assert status == 200
    imds_token = token(imds.url)
    statuses = [get(imds.url, path, imds_token)[0] for _unused in range(4)]
    assert statuses == [500, 500, 500, 200]


def test_fault_does_not_bypass_token_checks(imds):
    control(imds.url, "POST", "fault", {"path": "meta-data/instance-id", "status": 503, "count": 1})
    assert get(imds.url, "/latest/meta-data/instance-id")[0] == 401
    assert get(imds.url, "/latest/meta-data/instance-id", token(imds.url))[0] == 503


def test_fault_serves_bad_json(imds):
    path = "/latest/meta-data/spot/instance-action"
    imds.set_spot_action("terminate", in_seconds=120)
    control(imds.url, "POST", "fault", {"path": path, "body": "{not json"})
    status, _unused, text = get(imds.url, path, token(imds.url))
    assert (status, text) == (200, "{not json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert control(imds.url, "DELETE", "faults") == (200, {"ok": True})
    assert json.loads(get(imds.url, path, token(imds.url))[2])["action"] == "terminate"


def test_fault_delays_the_answer(imds):
    path = "/latest/meta-data/instance-id"
    imds_token = token(imds.url)
    control(imds.url, "POST", "fault", {"path": path, "delay_s": 0.6, "count": 1})
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        get(imds.url, path, imds_token, timeout=0.2)
    control(imds.url, "POST", "fault", {"path": path, "delay_s": 0.3, "count": 1})
    started = time.monotonic()
    status, _unused, text = get(imds.url, path, imds_token, timeout=3)
    assert (status, text) == (200, imds.instance_id)
    assert time.monotonic() - started >= 0.3


def test_fault_on_token_path(imds):
    imds.add_fault("/latest/api/token", status=500, count=1)
    headers = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    assert call(imds.url, "/latest/api/token", "PUT", headers)[0] == 500
    assert call(imds.url, "/latest/api/token", "PUT", headers)[0] == 200


@pytest.mark.parametrize(
    "fault",
    [{"path": "/latest/meta-data/mac"}, {"path": "/x", "status": 99}, {"path": "/x", "status": 500, "count": 0}],
)
def test_invalid_fault_is_400(imds, fault):
    assert control(imds.url, "POST", "fault", fault)[0] == 400


# ------------------------------------------------------------------------------------------ control API
def test_control_api_rejects_unknown_endpoints_and_bad_json(imds):
    status, body = control(imds.url, "POST", "no-such-thing")
    assert status == 404
    assert "POST /_emulator/spot-action" in body["endpoints"]
    status, _unused, _unused = call(imds.url, "/_emulator/spot-action", "POST", {"Content-Type": "application/json"})
    assert status == 200  # an empty body means defaults
    request = urllib.request.Request(imds.url + "/_emulator/spot-action", data=b"{nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        OPENER.open(request, timeout=5)
    assert error.value.code == 400


def test_request_log_records_method_path_and_token(imds):
    imds_token = token(imds.url)
    get(imds.url, "/latest/meta-data/instance-id", imds_token)
    get(imds.url, "/latest/meta-data/ami-id")
    status, log = control(imds.url, "GET", "requests")
    assert status == 200
    assert [(r["method"], r["path"], r["had_token"], r["status"]) for r in log] == [
        ("PUT", "/latest/api/token", False, 200),
        ("GET", "/latest/meta-data/instance-id", True, 200),
        ("GET", "/latest/meta-data/ami-id", False, 401),
    ]
    assert [r["path"] for r in imds.imdsv1_requests()] == ["/latest/meta-data/ami-id"]
    assert control(imds.url, "DELETE", "requests") == (200, {"ok": True})
    assert imds.requests() == []


def test_reset_clears_notices_faults_tokens_and_log(imds):
    old_token = token(imds.url)
    imds.set_spot_action()
    imds.add_fault("/latest/meta-data/instance-id", status=500)
    assert control(imds.url, "POST", "reset") == (200, {"ok": True})
    assert imds.requests() == []
    assert get(imds.url, "/latest/meta-data/instance-id", old_token)[0] == 401
    fresh = token(imds.url)
    assert get(imds.url, "/latest/meta-data/instance-id", fresh)[0] == 200
    assert get(imds.url, "/latest/meta-data/spot/instance-action", fresh)[0] == 404


# ------------------------------------------------------------------------------------------ real clients
def test_boto3_instance_metadata_provider_gets_the_emulator_credentials(imds, monkeypatch, tmp_path):
    import boto3

    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_EC2_METADATA_DISABLED",
        "AWS_EC2_METADATA_V1_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
    monkeypatch.setenv("AWS_METADATA_SERVICE_TIMEOUT", "2")
    monkeypatch.setenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    credentials = boto3.session.Session(region_name="us-east-1").get_credentials()
    assert credentials is not None, "boto3 found no credentials at the emulator"
    assert credentials.method == "iam-role"
    frozen = credentials.get_frozen_credentials()
    assert frozen.access_key == imds.access_key_id
    assert frozen.secret_key == imds.secret_access_key
    assert frozen.token == imds.session_token
    assert imds.imdsv1_requests() == [], "boto3 fell back to IMDSv1"
    paths = [r["path"] for r in imds.requests()]
    assert paths[0] == "/latest/api/token"
    assert "/latest/meta-data/iam/security-credentials/llmserve-instance-role" in paths


def test_sync_from_local_aws_copies_the_instance(aws_clean, monkeypatch):
    # aws_clean: the project's moto server (tests/conftest.py), emptied for this test.
    local_aws = aws_clean.endpoint_url
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    iam = aws_clean.client("iam", region_name="eu-west-1")
    ec2 = aws_clean.client("ec2", region_name="eu-west-1")
    iam.create_role(RoleName="gpu-node", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName="gpu-node-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="gpu-node-profile", RoleName="gpu-node")
    (instance,) = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.2xlarge",
        IamInstanceProfile={"Name": "gpu-node-profile"},
        Placement={"AvailabilityZone": "eu-west-1b"},
    )["Instances"]

    with ImdsEmulator(instance_id=instance["InstanceId"], region="eu-west-1", aws_endpoint_url=local_aws) as imds:
        imds_token = token(imds.url)

        def meta(path):
            return get(imds.url, f"/latest/meta-data/{path}", imds_token)[2]

        assert meta("instance-id") == instance["InstanceId"]
        assert meta("instance-type") == "g5.2xlarge"
        assert meta("ami-id") == "ami-12c6146b"
        assert meta("local-ipv4") == instance["PrivateIpAddress"]
        assert meta("placement/availability-zone") == "eu-west-1b"
        assert meta("placement/region") == "eu-west-1"
        assert meta("iam/security-credentials/") == "gpu-node"
        assert meta("mac") == instance["NetworkInterfaces"][0]["MacAddress"]
        document = json.loads(get(imds.url, "/latest/dynamic/instance-identity/document", imds_token)[2])
        assert document["pendingTime"] == instance["LaunchTime"].strftime("%Y-%m-%dT%H:%M:%SZ")

    with pytest.raises(ValueError, match="not found"):
        ImdsEmulator(instance_id="i-0000000000missing", region="eu-west-1", aws_endpoint_url=local_aws).start()


# ------------------------------------------------------------------------------------------ the script
INTERPRETERS = [
    pytest.param([sys.executable], id="venv-python"),
    # Debian bookworm's own Python, isolated and without site-packages: what the systemd host image has.
    pytest.param(
        [DEBIAN_PYTHON, "-I", "-S"],
        id="debian-python3.11-stdlib-only",
        marks=pytest.mark.skipif(not os.path.exists(DEBIAN_PYTHON), reason=f"{DEBIAN_PYTHON} not installed"),
    ),
]


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_script_entry_point_serves_until_sigterm(interpreter, tmp_path):
    port_file = tmp_path / "imds.port"
    command = [
        *interpreter,
        str(EMULATOR_SCRIPT),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--instance-id",
        "i-0script000000001",
        "--region",
        "ap-south-1",
        "--max-token-ttl",
        "7",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: port_file.exists() or still_running(process, "the emulator", lambda: str(process.communicate())),
                   10, "the emulator's port file", interval_s=0.02)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        status, headers, imds_token = call(
            url, "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}
        )
        assert (status, headers["X-aws-ec2-metadata-token-ttl-seconds"]) == (200, "7")
        assert get(url, "/latest/meta-data/instance-id", imds_token)[2] == "i-0script000000001"
        assert get(url, "/latest/meta-data/placement/availability-zone", imds_token)[2] == "ap-south-1a"
        assert get(url, "/latest/meta-data/instance-id")[0] == 401
        assert control(url, "POST", "spot-action", {"action": "terminate", "in_seconds": 60})[0] == 200
        assert json.loads(get(url, "/latest/meta-data/spot/instance-action", imds_token)[2])["action"] == "terminate"
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert stdout.strip() == f"IMDS emulator listening on {url}"


def test_script_fails_fast_when_local_aws_is_unreachable(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    result = subprocess.run(
        [sys.executable, str(EMULATOR_SCRIPT), "--aws-endpoint-url", f"http://127.0.0.1:{closed_port}"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert "DescribeInstances" in result.stderr


IN_IMAGE_CHECK = """
import json, sys, urllib.error, urllib.request
sys.path.insert(0, "/opt/bench")
from imds_emulator import ImdsEmulator

def fetch(url, method="GET", headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers or {}), timeout=5) as r:
            return [r.status, r.read().decode()]
    except urllib.error.HTTPError as error:
        return [error.code, ""]

with ImdsEmulator(instance_id="i-0container0000001") as imds:
    token = fetch(imds.url + "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})[1]
    auth = {"X-aws-ec2-metadata-token": token}
    imds.set_spot_action("stop", in_seconds=30)
    print(json.dumps({
        "python": sys.version.split()[0],
        "instance_id": fetch(imds.url + "/latest/meta-data/instance-id", headers=auth),
        "imdsv1": fetch(imds.url + "/latest/meta-data/instance-id")[0],
        "spot": fetch(imds.url + "/latest/meta-data/spot/instance-action", headers=auth),
    }))
"""


@pytest.mark.skipif(
    not os.environ.get("LLMSERVE_BENCH_IMAGE"), reason="LLMSERVE_BENCH_IMAGE (tests/bench/host_image.sh) not set"
)
def test_emulator_runs_in_the_bench_host_image_with_debian_python():
    """The systemd host image's /usr/bin/python3, isolated and without site-packages, runs the emulator."""
    result = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{EMULATOR_SCRIPT.parent}:/opt/bench:ro",
            os.environ["LLMSERVE_BENCH_IMAGE"],
            "/usr/bin/python3",
            "-I",
            "-S",
            "-c",
            IN_IMAGE_CHECK,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["python"].startswith("3.11.")
    assert report["instance_id"] == [200, "i-0container0000001"]
    assert report["imdsv1"] == 401
    assert report["spot"][0] == 200
    assert json.loads(report["spot"][1])["action"] == "stop"


def test_emulator_imports_only_the_standard_library():
    tree = ast.parse(EMULATOR_SCRIPT.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported, "found no imports at all: the scan is broken"
    assert sorted(imported - set(sys.stdlib_module_names)) == []
