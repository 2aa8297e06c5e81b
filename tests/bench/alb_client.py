"""A client of the bench's ALB stand-in (tests/bench/alb_standin.py) as a client of the real ALB would be.

It connects to the listener's local port (from the stand-in's listeners.json) but speaks to the ALB's DNS name:
TLS SNI, certificate verification (against the bench's CA file) and the Host header all use that name, so the
listener's certificate, TLS policy and host rules are exercised as on AWS.

    client = AlbClient.for_listener(listeners_file, listener_arn, cafile)
    status, headers, body = client.request("POST", "/v1/chat/completions", body, {"Content-Type": "..."})
"""

import http.client
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

if __package__:
    from .alb_standin import local_port
else:  # run as a script: the module sits next to this file
    from alb_standin import local_port


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `host` (SNI, certificate name) over a TCP connection to `address`:`port`."""

    def __init__(self, host: str, address: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address
        self._tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls_context.wrap_socket(raw, server_hostname=self.host)


@dataclass
class AlbClient:
    dns_name: str
    local_port: int
    cafile: Path
    address: str = "127.0.0.1"
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
    timeout_s: float = 60.0
    last_tls_version: str = field(default="", init=False)

    @classmethod
    def for_listener(cls, listeners_file: Path, listener_arn: str, cafile: Path, **options: object) -> "AlbClient":
        import json

        served = json.loads(listeners_file.read_text())
        dns_name = next(entry["dns_name"] for entry in served["listeners"] if entry["listener_arn"] == listener_arn)
        port = local_port(listeners_file, listener_arn)
        if port is None:
            raise LookupError(f"the ALB stand-in serves no listener {listener_arn} ({listeners_file})")
        return cls(dns_name, port, cafile, **options)  # type: ignore[arg-type]

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cafile))
        context.minimum_version, context.maximum_version = self.minimum_version, self.maximum_version
        return context

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request on a fresh connection."""
        connection = _PinnedHTTPSConnection(self.dns_name, self.address, self.local_port, self.context(),
                                            self.timeout_s)
        try:
            connection.request(method, path, body=body, headers={"Host": self.dns_name, **(headers or {})})
            response = connection.getresponse()
            payload = response.read()
            self.last_tls_version = connection.sock.version() or ""
            return response.status, dict(response.getheaders()), payload
        finally:
            connection.close()
