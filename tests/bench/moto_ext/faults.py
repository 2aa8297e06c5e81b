"""Fault injection: an AWS API action answers the way AWS (or what stands between it and the caller) does on a
bad day. Driven through the control endpoint (see moto_server.py); a moto reset clears every fault.

Kinds, each the answer of a real failure:
- ``denied``: HTTP 403 ``AccessDenied`` in the query protocol's ``ErrorResponse`` XML, what AWS answers when the
  caller's role lacks the action (an instance role whose policy was narrowed).
- ``throttled``: HTTP 400 ``Throttling`` "Rate exceeded", what ELBv2 and Auto Scaling answer over their request
  rate (a fleet-wide reclaim with every host calling at once).
- ``slow``: moto's own answer, ``delay_s`` late (a congested path or an overloaded endpoint).
- ``html_502``: HTTP 502 with a proxy's HTML error page and no AWS error document, what a proxy in the path
  answers when it cannot reach AWS. botocore (1.44) cannot parse it and raises ResponseParserError, which is not a
  ClientError.

Only query-protocol actions (form-encoded ``Action=...``: ELBv2, Auto Scaling, EC2, IAM...) are matched.
"""

import io
import threading
import time
import urllib.parse
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Optional

KINDS = ("denied", "throttled", "slow", "html_502")
_LOCK = threading.Lock()
_FAULTS: list["Fault"] = []

_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/'
    '2015-12-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>'
    "<RequestId>{request_id}</RequestId></ErrorResponse>"
)
# A proxy's error page: a doctype and an unclosed <hr>, as HTML allows. botocore takes a 5xx body opening with
# "<html>" for a generic error (a ClientError); this one fails its XML parser with ResponseParserError.
_HTML_PAGE = (
    '<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">\n'
    "<html><head><title>ERROR: The requested URL could not be retrieved</title></head>\n"
    "<body><h1>502 Bad Gateway</h1><hr><p>The proxy could not reach the server.</body></html>\n"
)


@dataclass
class Fault:
    action: str
    kind: str
    delay_s: float = 0.0
    remaining: Optional[int] = None  # None: until cleared
    hits: int = 0


def add(spec: dict[str, Any]) -> dict[str, Any]:
    """Adds a fault from its control-API form: {"action": "DeregisterTargets", "kind": "denied", "count": 2}."""
    action, kind = spec.get("action"), spec.get("kind")
    if not isinstance(action, str) or not action.isalnum():
        raise ValueError(f"action must be an API action name such as DeregisterTargets, got {action!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    delay_s = spec.get("delay_s", 0.0)
    if isinstance(delay_s, bool) or not isinstance(delay_s, (int, float)) or not 0 <= delay_s <= 600:
        raise ValueError(f"delay_s must be 0..600 seconds, got {delay_s!r}")
    if kind == "slow" and delay_s <= 0:
        raise ValueError("a slow fault needs delay_s > 0")
    count = spec.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"count must be an integer >= 1 or null, got {count!r}")
    unknown = sorted(set(spec) - {"action", "kind", "delay_s", "count"})
    if unknown:
        raise ValueError(f"unknown fault keys {unknown}")
    fault = Fault(action, kind, float(delay_s), count)
    with _LOCK:
        _FAULTS.append(fault)
    return asdict(fault)


def clear() -> None:
    with _LOCK:
        _FAULTS.clear()


def listed() -> list[dict[str, Any]]:
    with _LOCK:
        return [asdict(fault) for fault in _FAULTS]


def _take(action: str) -> Optional[Fault]:
    with _LOCK:
        fault = next((fault for fault in _FAULTS if fault.action == action), None)
        if fault is not None:
            fault.hits += 1
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    _FAULTS.remove(fault)
        return fault


def intercept(
    environ: dict[str, Any], start_response: Callable[..., Any], app: Callable[..., Iterable[bytes]]
) -> Iterable[bytes]:
    """Answers a request with its fault, or hands it to app (moto) unchanged."""
    with _LOCK:
        armed = bool(_FAULTS)
    if not armed or environ.get("REQUEST_METHOD") != "POST":
        return app(environ, start_response)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)  # moto reads the body again
    action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
    fault = _take(action) if action else None
    if fault is None:
        return app(environ, start_response)
    if fault.kind == "slow":
        time.sleep(fault.delay_s)
        return app(environ, start_response)
    if fault.kind == "html_502":
        return _reply(start_response, "502 Bad Gateway", "text/html", _HTML_PAGE)
    code, status, message = {
        "denied": ("AccessDenied", "403 Forbidden",
                   f"User: arn:aws:sts::123456789012:assumed-role/instance/i-0 is not authorized to perform: {action}"),
        "throttled": ("Throttling", "400 Bad Request", "Rate exceeded"),
    }[fault.kind]
    document = _ERROR_XML.format(code=code, message=message, request_id=uuid.uuid4())
    return _reply(start_response, status, "text/xml", document)


def _reply(start_response: Callable[..., Any], status: str, content_type: str, text: str) -> list[bytes]:
    payload = text.encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(payload)))])
    return [payload]
