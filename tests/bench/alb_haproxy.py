"""HAProxy configuration for the bench's ALB stand-in (tests/bench/alb_standin.py): pure text from ELBv2 state.

Each ELBv2 listener becomes a frontend on 127.0.0.1 and a local port; each target group a listener forwards to
becomes a backend with the group's health check. Anything the stand-in cannot reproduce faithfully (an unknown
TLS policy, a condition or action type it does not implement) raises ListenerError naming the listener and what
is unsupported, so a test never passes against routing that silently differs from AWS's.
"""

import re
from dataclasses import dataclass
from typing import Any

# ELBv2 security policies (AWS's "Security policies for your Application Load Balancer" table):
# (ssl-min-ver, ssl-max-ver, TLS <= 1.2 ciphers in OpenSSL names, TLS 1.3 suites).
_TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
_TLS12_2021_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "AES128-GCM-SHA256:AES128-SHA256:AES256-GCM-SHA384:AES256-SHA256"
)
_2016_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES256-SHA:ECDHE-ECDSA-AES256-SHA:"
    "AES128-GCM-SHA256:AES128-SHA256:AES128-SHA:AES256-GCM-SHA384:AES256-SHA256:AES256-SHA"
)
TLS_POLICIES = {
    "ELBSecurityPolicy-TLS13-1-2-2021-06": ("TLSv1.2", "TLSv1.3", _TLS12_2021_CIPHERS, _TLS13_SUITES),
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06": (
        "TLSv1.2",
        "TLSv1.3",
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        "ECDHE-RSA-AES256-GCM-SHA384",
        _TLS13_SUITES,
    ),
    # AWS accepts TLS 1.0/1.1 on this one; OpenSSL 3 allows them only at security level 0, hence @SECLEVEL=0.
    "ELBSecurityPolicy-2016-08": ("TLSv1.0", "TLSv1.2", _2016_CIPHERS + ":@SECLEVEL=0", None),
    "ELBSecurityPolicy-TLS-1-2-2017-01": ("TLSv1.2", "TLSv1.2", _TLS12_2021_CIPHERS, None),
}

# Access log: who, when, which frontend/backend/server, the request line, status, bytes, timings. No headers
# are captured (no `capture request header`), so an Authorization header never reaches the log.
ACCESS_LOG_FORMAT = "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %ac/%fc/%bc/%sc/%rc %{+Q}r"

_NAME = re.compile(r"[A-Za-z0-9-]{1,32}")  # target group names (AWS's grammar)
_TARGET_ID = re.compile(r"[A-Za-z0-9.:-]{1,64}")  # instance ids, IP addresses
# AWS also allows quotes in path patterns; the stand-in does not (they would need escaping inside its regexes).
_PATH_PATTERN = re.compile(r"[A-Za-z0-9_.$/~@:+&*?-]{1,128}")
_HOST_PATTERN = re.compile(r"[A-Za-z0-9.*?-]{1,128}")
_REDIRECT_PART = re.compile(r"[A-Za-z0-9._~/:=&#{}-]{0,128}")
_METHOD = re.compile(r"[A-Z_-]{1,40}")
_HTTP_CODE = re.compile(r"\d{3}")
_SAFE_TEXT = re.compile(r"[A-Za-z0-9 ,.:;!?()/_+=@-]")


class ListenerError(ValueError):
    """A listener (or the target group it forwards to) the stand-in cannot serve as AWS would."""


@dataclass(frozen=True)
class Listener:
    arn: str
    protocol: str  # HTTP or HTTPS
    port: int  # the listener's port on AWS (what #{port} and redirects see)
    local_port: int  # where the stand-in serves it on 127.0.0.1
    ssl_policy: str | None
    certificate_file: str | None  # PEM: certificate, chain, key
    rules: tuple[dict[str, Any], ...]  # DescribeRules' rules, the default one included


def backend_name(target_group: dict[str, Any]) -> str:
    name = target_group["TargetGroupName"]
    if not _NAME.fullmatch(name):
        raise ListenerError(f"target group name {name!r} is not an ELBv2 name")
    return f"tg-{name}"


def server_name(target_id: str, port: int) -> str:
    if not _TARGET_ID.fullmatch(target_id):
        raise ListenerError(f"target id {target_id!r} is neither an instance id nor an IP address")
    return f"{target_id}-{port}"


def check_timing(target_group: dict[str, Any], interval_cap_s: float | None) -> tuple[float, float]:
    """(interval, timeout) of the group's health check in seconds, the interval at most interval_cap_s when given:
    the bench compresses AWS's 5 s minimum interval as the local AWS compresses its other delays
    (moto_ext.settings). The timeout, path, matcher and thresholds stay the group's own, so a target that answers
    within the group's timeout on a busy machine stays healthy, as on AWS (HAProxy schedules the next check after a
    slow one ends)."""
    interval = float(target_group["HealthCheckIntervalSeconds"])
    timeout = float(target_group["HealthCheckTimeoutSeconds"])
    if interval_cap_s is None:
        return interval, timeout
    return min(interval, interval_cap_s), timeout


def server_arguments(target_group: dict[str, Any], address: str, port: int, interval_cap_s: float | None) -> str:
    """The `server` line's address and options, shared by the configuration and the runtime API's `add server`
    (which does not apply `default-server`)."""
    check = [
        "check",
        f"inter {round(check_timing(target_group, interval_cap_s)[0] * 1000)}ms",
        f"rise {int(target_group['HealthyThresholdCount'])}",
        f"fall {int(target_group['UnhealthyThresholdCount'])}",
    ]
    health_port = target_group.get("HealthCheckPort", "traffic-port")
    if health_port != "traffic-port":
        check.append(f"port {int(health_port)}")
    if target_group.get("HealthCheckProtocol") == "HTTPS":
        check.append("check-ssl")
    # AWS does not verify a target's certificate either.
    tls = ["ssl verify none"] if target_group["Protocol"] == "HTTPS" else []
    return " ".join([f"{address}:{port}", *tls, *check])


def render(
    listeners: list[Listener],
    target_groups: dict[str, dict[str, Any]],
    servers: dict[str, list[tuple[str, str]]],
    runtime_socket: str,
    state_file: str,
    interval_cap_s: float | None,
) -> str:
    """The whole configuration. target_groups: ARN -> DescribeTargetGroups entry, for the groups the listeners
    forward to; servers: ARN -> [(server name, server arguments)] present at this (re)load."""
    lines = [
        "global",
        f"    stats socket {runtime_socket} mode 600 level admin expose-fd listeners",
        f"    server-state-file {state_file}",
        "    log stdout format raw local0",
        "defaults",
        "    mode http",
        "    log global",
        f'    log-format "{ACCESS_LOG_FORMAT}"',
        "    load-server-state-from-file global",
        "    option http-server-close",
        "    timeout connect 5s",
        "    timeout client 120s",
        "    timeout server 120s",
        "    timeout http-request 30s",
    ]
    for listener in listeners:
        lines += render_frontend(listener, target_groups)
    for arn, target_group in sorted(target_groups.items()):
        lines += render_backend(target_group, servers.get(arn, []), interval_cap_s)
    return "\n".join(lines) + "\n"


def render_frontend(listener: Listener, target_groups: dict[str, dict[str, Any]]) -> list[str]:
    bind = f"    bind 127.0.0.1:{listener.local_port}"
    if listener.protocol == "HTTPS":
        bind += " " + _tls_options(listener)
    elif listener.protocol != "HTTP":
        raise ListenerError(f"listener {listener.arn}: protocol {listener.protocol} is not an ALB protocol")
    lines = [f"frontend {frontend_name(listener)}", bind, "    acl alb_forwarded var(txn.tg) -m found"]
    for rule in sorted(listener.rules, key=_priority):
        try:
            conditions = [_condition(condition) for condition in rule.get("Conditions", [])]
            lines += _action(listener, _final_action(rule), conditions, target_groups)
        except ListenerError as error:
            raise ListenerError(f"listener {listener.arn}, rule {rule.get('RuleArn')}: {error}") from None
    lines.append("    use_backend %[var(txn.tg)]")
    return lines


def frontend_name(listener: Listener) -> str:
    return f"listener-{listener.local_port}"


def render_backend(
    target_group: dict[str, Any], servers: list[tuple[str, str]], interval_cap_s: float | None
) -> list[str]:
    protocol = target_group.get("HealthCheckProtocol", "HTTP")
    if protocol not in ("HTTP", "HTTPS"):
        raise ListenerError(f"target group {target_group['TargetGroupArn']}: health check protocol {protocol}")
    path = target_group.get("HealthCheckPath", "/")
    if not _PATH_PATTERN.fullmatch(path) or "*" in path or "?" in path:
        raise ListenerError(f"target group {target_group['TargetGroupArn']}: health check path {path!r}")
    lines = [
        f"backend {backend_name(target_group)}",
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth GET uri {path} ver HTTP/1.1 hdr Host alb-health-check",
        f"    http-check expect rstatus {_matcher(target_group)}",
        f"    timeout check {round(check_timing(target_group, interval_cap_s)[1] * 1000)}ms",
    ]
    lines += [f"    server {name} {arguments}" for name, arguments in servers]
    return lines


def _tls_options(listener: Listener) -> str:
    if listener.ssl_policy not in TLS_POLICIES:
        raise ListenerError(
            f"listener {listener.arn}: SslPolicy {listener.ssl_policy!r} is not one the stand-in knows "
            f"({', '.join(sorted(TLS_POLICIES))}); add its versions and ciphers to TLS_POLICIES"
        )
    if listener.certificate_file is None:
        raise ListenerError(f"listener {listener.arn}: an HTTPS listener needs a certificate")
    low, high, ciphers, suites = TLS_POLICIES[listener.ssl_policy]
    options = f"ssl crt {listener.certificate_file} ssl-min-ver {low} ssl-max-ver {high} ciphers {ciphers}"
    return options + (f" ciphersuites {suites}" if suites else "")


def _priority(rule: dict[str, Any]) -> tuple[int, int]:
    if rule.get("IsDefault") or rule.get("Priority") == "default":
        return (1, 0)
    return (0, int(rule["Priority"]))


def _final_action(rule: dict[str, Any]) -> dict[str, Any]:
    actions = sorted(rule.get("Actions", []), key=lambda action: action.get("Order", 0))
    if len(actions) != 1:
        raise ListenerError(f"{len(actions)} actions (the stand-in implements exactly one per rule)")
    return actions[0]


def _condition(condition: dict[str, Any]) -> str:
    field = condition.get("Field")
    if field == "path-pattern":
        values = condition.get("PathPatternConfig", {}).get("Values") or condition.get("Values", [])
        return "{ path -m reg " + " ".join(_pattern_regex(value, _PATH_PATTERN) for value in values) + " }"
    if field == "host-header":
        values = condition.get("HostHeaderConfig", {}).get("Values") or condition.get("Values", [])
        regexes = " ".join(_pattern_regex(value.lower(), _HOST_PATTERN) for value in values)
        return "{ req.hdr(host),field(1,:),lower -m reg " + regexes + " }"
    if field == "http-request-method":
        values = condition.get("HttpRequestMethodConfig", {}).get("Values", [])
        if not values or not all(_METHOD.fullmatch(value) for value in values):
            raise ListenerError(f"http-request-method values {values!r}")
        return "{ method " + " ".join(values) + " }"
    raise ListenerError(f"condition {field!r} is not implemented by the stand-in")


def _pattern_regex(pattern: str, grammar: re.Pattern[str]) -> str:
    """An ELBv2 pattern (`*`: any characters, `?`: one character, case-sensitive for paths) as an anchored regex
    written without backslashes, so HAProxy's own escaping never applies."""
    if not grammar.fullmatch(pattern):
        raise ListenerError(f"pattern {pattern!r} has characters ELBv2 does not allow")
    pieces = [".*" if char == "*" else "." if char == "?" else char if char.isalnum() or char in "/_-~:@&"
              else f"[{char}]" for char in pattern]  # a regex's special characters (. $ +) as one-character classes
    return "'^" + "".join(pieces) + "$'"


def _action(
    listener: Listener, action: dict[str, Any], conditions: list[str], target_groups: dict[str, dict[str, Any]]
) -> list[str]:
    guard = " ".join(["!alb_forwarded", *conditions])
    kind = action.get("Type")
    if kind == "forward":
        arn = _forward_target(action)
        return [f"    http-request set-var(txn.tg) str({backend_name(target_groups[arn])}) if {guard}"]
    if kind == "fixed-response":
        config = action["FixedResponseConfig"]
        status = config["StatusCode"]
        if not _HTTP_CODE.fullmatch(status):
            raise ListenerError(f"fixed-response status {status!r}")
        reply = f"status {status} content-type {_quote(config.get('ContentType', 'text/plain'))}"
        if config.get("MessageBody"):
            reply += f" string {_quote(config['MessageBody'])}"
        return [f"    http-request return {reply} if {guard}"]
    if kind == "redirect":
        return _redirect(listener, action["RedirectConfig"], guard)
    raise ListenerError(f"action {kind!r} is not implemented by the stand-in")


def _forward_target(action: dict[str, Any]) -> str:
    if action.get("TargetGroupArn"):
        return action["TargetGroupArn"]
    groups = action.get("ForwardConfig", {}).get("TargetGroups", [])
    if len(groups) != 1:
        raise ListenerError(f"forward to {len(groups)} weighted target groups (the stand-in forwards to one)")
    return groups[0]["TargetGroupArn"]


def forwarded_target_groups(rules: tuple[dict[str, Any], ...]) -> set[str]:
    """The target group ARNs a listener's rules forward to (unsupported forwards are reported by render)."""
    arns = set()
    for rule in rules:
        for action in rule.get("Actions", []):
            if action.get("Type") == "forward":
                groups = action.get("ForwardConfig", {}).get("TargetGroups", [])
                arns.update([action["TargetGroupArn"]] if action.get("TargetGroupArn") else
                            [group["TargetGroupArn"] for group in groups])
    return arns


def _redirect(listener: Listener, config: dict[str, Any], guard: str) -> list[str]:
    """ELBv2's redirect: protocol://host:port/path?query, each part literal or built from #{protocol}, #{host},
    #{port}, #{path} (the request path without its leading /) and #{query}; `?query` only when it is not empty."""
    parts = {name: config.get(key, default) for name, key, default in (
        ("protocol", "Protocol", "#{protocol}"), ("host", "Host", "#{host}"), ("port", "Port", "#{port}"),
        ("path", "Path", "/#{path}"), ("query", "Query", "#{query}"))}
    for name, value in parts.items():
        if not _REDIRECT_PART.fullmatch(value):
            raise ListenerError(f"redirect {name} {value!r} has characters the stand-in does not accept")
    substitutions = {
        "#{protocol}": listener.protocol.lower(),
        "#{host}": "%[req.hdr(host),field(1,:)]",
        "#{port}": str(listener.port),
        "#{path}": "%[path,regsub(^/,)]",
        "#{query}": "%[query]",
    }

    def expand(text: str) -> str:
        for variable, value in substitutions.items():
            text = text.replace(variable, value)
        return text

    code = {"HTTP_301": "301", "HTTP_302": "302"}.get(config.get("StatusCode", ""))
    if code is None:
        raise ListenerError(f"redirect status {config.get('StatusCode')!r}")
    location = f"{expand(parts['protocol'].lower())}://{expand(parts['host'])}:{expand(parts['port'])}"
    location += expand(parts["path"])
    query = expand(parts["query"])
    if not query:
        return [f"    http-request redirect location {location} code {code} if {guard}"]
    with_query = f"    http-request redirect location {location}?{query} code {code}"
    if parts["query"] != "#{query}":
        return [f"{with_query} if {guard}"]
    return [
        f"{with_query} if {guard} {{ query -m len 1: }}",
        f"    http-request redirect location {location} code {code} if {guard}",
    ]


def _matcher(target_group: dict[str, Any]) -> str:
    """ELBv2's HttpCode matcher ("200", "200,202", "200-299") as an anchored status regex."""
    matcher = target_group.get("Matcher", {}).get("HttpCode", "200")
    codes: list[str] = []
    for part in matcher.split(","):
        low, _dash, high = part.partition("-")
        if not _HTTP_CODE.fullmatch(low) or (high and not _HTTP_CODE.fullmatch(high)):
            raise ListenerError(f"target group {target_group['TargetGroupArn']}: matcher {matcher!r}")
        codes += [str(code) for code in range(int(low), int(high or low) + 1)]
    return "^(" + "|".join(codes) + ")$"


def _quote(text: str) -> str:
    """A double-quoted HAProxy word holding text exactly: anything beyond plain characters as \\xNN."""
    return '"' + "".join(
        char if _SAFE_TEXT.fullmatch(char) else "".join(f"\\x{byte:02x}" for byte in char.encode())
        for char in text
    ) + '"'
