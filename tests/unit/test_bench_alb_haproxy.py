"""tests/bench/alb_haproxy.py: ELBv2 listeners, rules and target groups as HAProxy configuration (pure text).
HAProxy itself runs in tests/integration/test_alb_standin.py."""

import pytest

from tests.bench import alb_haproxy
from tests.bench.alb_haproxy import Listener, ListenerError

GROUP_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/vllm/0123456789abcdef"
GROUP = {
    "TargetGroupArn": GROUP_ARN, "TargetGroupName": "vllm", "Protocol": "HTTP", "HealthCheckProtocol": "HTTP",
    "HealthCheckPath": "/health", "HealthCheckPort": "traffic-port", "HealthCheckIntervalSeconds": 10,
    "HealthCheckTimeoutSeconds": 5, "HealthyThresholdCount": 3, "UnhealthyThresholdCount": 2,
    "Matcher": {"HttpCode": "200"},
}
NOT_FOUND = {
    "Type": "fixed-response",
    "FixedResponseConfig": {"StatusCode": "404", "ContentType": "text/plain", "MessageBody": "Not Found"},
}


def listener(rules, protocol="HTTPS", policy="ELBSecurityPolicy-TLS13-1-2-2021-06", port=443):
    return Listener("arn:listener", protocol, port, 40443, policy if protocol == "HTTPS" else None,
                    "/state/certs/a.pem" if protocol == "HTTPS" else None, tuple(rules))


def default(action):
    return {"Priority": "default", "IsDefault": True, "Conditions": [], "Actions": [action]}


def frontend(rules, **options):
    return "\n".join(alb_haproxy.render_frontend(listener(rules, **options), {GROUP_ARN: GROUP}))


def test_rules_apply_in_priority_order_and_the_first_match_wins():
    text = frontend([
        default(NOT_FOUND),
        {"Priority": "20", "Conditions": [{"Field": "path-pattern", "Values": ["/v1/*"]}],
         "Actions": [{"Type": "forward", "TargetGroupArn": GROUP_ARN}]},
        {"Priority": "5", "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/v1/admin?x"]}}],
         "Actions": [NOT_FOUND]},
    ])
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("http-request")]
    assert lines == [
        "http-request return status 404 content-type \"text/plain\" string \"Not Found\" "
        "if !alb_forwarded { path -m reg '^/v1/admin.x$' }",
        "http-request set-var(txn.tg) str(tg-vllm) if !alb_forwarded { path -m reg '^/v1/.*$' }",
        "http-request return status 404 content-type \"text/plain\" string \"Not Found\" if !alb_forwarded",
    ]
    assert "ssl crt /state/certs/a.pem ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3" in text
    assert text.rstrip().endswith("use_backend %[var(txn.tg)]")


def test_pattern_characters_are_literal_except_the_wildcards():
    text = frontend([default(NOT_FOUND), {"Priority": "1", "Actions": [NOT_FOUND], "Conditions": [
        {"Field": "path-pattern", "Values": ["/a.b+c$"]},
        {"Field": "host-header", "Values": ["API.*.example.com"]}]}])
    assert "{ path -m reg '^/a[.]b[+]c[$]$' } { req.hdr(host),field(1,:),lower -m reg '^api[.].*[.]example[.]com$' }" in text


def test_redirect_builds_the_location_as_elbv2_does():
    redirect = {"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "Host": "#{host}",
                                                       "Path": "/#{path}", "Query": "#{query}", "StatusCode": "HTTP_301"}}
    text = frontend([default(redirect)], protocol="HTTP", port=80)
    location = "https://%[req.hdr(host),field(1,:)]:443/%[path,regsub(^/,)]"
    assert f"http-request redirect location {location}?%[query] code 301 if !alb_forwarded {{ query -m len 1: }}" in text
    assert f"http-request redirect location {location} code 301 if !alb_forwarded\n" in text + "\n"


def test_body_text_is_quoted_byte_for_byte():
    body = {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "403", "MessageBody": 'no "$HOME" #\\'}}
    assert 'string "no \\x22\\x24HOME\\x22 \\x23\\x5c"' in frontend([default(body)])


@pytest.mark.parametrize("matcher, expected", [
    ("200", "^(200)$"), ("200,202", "^(200|202)$"), ("200-203", "^(200|201|202|203)$")])
def test_matcher_codes_and_ranges(matcher, expected):
    lines = alb_haproxy.render_backend({**GROUP, "Matcher": {"HttpCode": matcher}}, [], None)
    assert f"    http-check expect rstatus {expected}" in lines


def test_check_timing_is_the_groups_own_unless_capped():
    assert "inter 10000ms rise 3 fall 2" in alb_haproxy.server_arguments(GROUP, "127.0.0.1", 8000, None)
    assert alb_haproxy.server_arguments(GROUP, "127.0.0.1", 8000, 0.5).startswith("127.0.0.1:8000 check inter 500ms")
    # Only the interval is compressed: the group's timeout stands.
    timeout_ms = GROUP["HealthCheckTimeoutSeconds"] * 1000
    assert f"    timeout check {timeout_ms}ms" in alb_haproxy.render_backend(GROUP, [], 0.5)


@pytest.mark.parametrize("rules, options, message", [
    ([default(NOT_FOUND)], {"policy": "ELBSecurityPolicy-Made-Up"}, "SslPolicy 'ELBSecurityPolicy-Made-Up'"),
    ([default(NOT_FOUND)], {"protocol": "TCP"}, "protocol TCP is not an ALB protocol"),
    ([default({"Type": "authenticate-oidc"})], {}, "action 'authenticate-oidc' is not implemented"),
    ([default(NOT_FOUND), {"Priority": "1", "Actions": [NOT_FOUND],
                           "Conditions": [{"Field": "source-ip", "SourceIpConfig": {"Values": ["10.0.0.0/8"]}}]}],
     {}, "condition 'source-ip' is not implemented"),
    ([default(NOT_FOUND), {"Priority": "1", "Actions": [NOT_FOUND],
                           "Conditions": [{"Field": "path-pattern", "Values": ["/a b"]}]}],
     {}, "pattern '/a b' has characters"),
    ([default({"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": GROUP_ARN}] * 2}})],
     {}, "2 weighted target groups"),
    ([default({"Type": "redirect", "RedirectConfig": {"Host": "evil host", "StatusCode": "HTTP_301"}})],
     {}, "redirect host 'evil host'"),
    ([default({"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "4O4"}})], {}, "status '4O4'"),
])
def test_what_the_stand_in_cannot_serve_as_aws_would_fails_loudly(rules, options, message):
    with pytest.raises(ListenerError, match=message.replace("(", r"\(").replace("?", r"\?")):
        frontend(rules, **options)


@pytest.mark.parametrize("change", [{"Matcher": {"HttpCode": "2xx"}}, {"HealthCheckPath": "/he alth"},
                                    {"HealthCheckProtocol": "TCP"}, {"TargetGroupName": "bad_name"}])
def test_a_target_group_it_cannot_check_as_aws_would_fails_loudly(change):
    with pytest.raises(ListenerError):
        alb_haproxy.render_backend({**GROUP, **change}, [], None)


@pytest.mark.parametrize("target_id", ["i-0abc/../x", "i 0", "", "i-" + "0" * 80])
def test_server_names_accept_instance_ids_and_addresses_only(target_id):
    assert alb_haproxy.server_name("i-0abc123", 8000) == "i-0abc123-8000"
    assert alb_haproxy.server_name("10.0.1.5", 8000) == "10.0.1.5-8000"
    with pytest.raises(ListenerError):
        alb_haproxy.server_name(target_id, 8000)
