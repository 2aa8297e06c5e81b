"""The bench's ALB stand-in (tests/bench/alb_standin.py): HAProxy following the local AWS's ELBv2 state.

No vLLM: plain Python HTTP servers on loopback play the targets (instances whose port is on 127.0.0.1)."""

import http.server
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bench import alb_standin, self_signed_cert
from tests.bench.alb_client import AlbClient
from tests.bench.alb_load import AlbLoad
from tests.support.wait import still_running, wait_until

STANDIN = Path(alb_standin.__file__)
TLS13_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
LEGACY_POLICY = "ELBSecurityPolicy-2016-08"
SLOW_CHUNKS, SLOW_CHUNK_S = 6, 0.4  # /v1/slow streams for ~2.4 s
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Backend(http.server.ThreadingHTTPServer):
    """A target: /health answers `health_status`; /v1/slow streams; anything else names the backend."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        self.name, self.health_status, self.requests = name, 200, []
        super().__init__(("127.0.0.1", 0), _BackendHandler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy closes a health check's connection as soon as it has the status line


class _BackendHandler(http.server.BaseHTTPRequestHandler):
    server: Backend

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/health":
            self._reply(self.server.health_status, b"ok")
            return
        self.server.requests.append(self.path)
        if self.path == "/v1/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(SLOW_CHUNKS * len(self.server.name)))
            self.end_headers()
            for _chunk in range(SLOW_CHUNKS):
                self.wfile.write(self.server.name.encode())
                self.wfile.flush()
                time.sleep(SLOW_CHUNK_S)
            return
        self._reply(200, json.dumps({"backend": self.server.name, "path": self.path}).encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Standin:
    state_dir: Path

    @property
    def listeners_file(self) -> Path:
        return self.state_dir / "listeners.json"

    def port(self, listener_arn: str) -> int:
        return wait_until(lambda: alb_standin.local_port(self.listeners_file, listener_arn), 15,
                          f"the stand-in to serve {listener_arn}", detail=self.log)

    def runtime_api(self) -> alb_standin.RuntimeApi:
        return alb_standin.RuntimeApi(self.state_dir / "runtime.sock")

    def errors(self) -> list[dict[str, str]]:
        return json.loads(self.listeners_file.read_text())["errors"]

    def log(self) -> str:
        return (self.state_dir / "standin.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def standin(aws, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    state_dir = tmp_path_factory.mktemp("alb")
    ready = state_dir / "ready"
    command = [sys.executable, str(STANDIN), "--aws-endpoint-url", aws.endpoint_url, "--state-dir", str(state_dir),
               "--port-file", str(ready), "--poll-interval", "0.3", "--check-interval-cap", "0.3"]
    with open(state_dir / "standin.log", "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    handle = Standin(state_dir)
    try:
        wait_until(lambda: ready.exists() or still_running(process, "ALB stand-in", handle.log), 30,
                   "the ALB stand-in to serve", detail=handle.log)
        yield handle
    finally:
        process.terminate()
        process.wait(15)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    # Every ALB's DNS name in the region (moto names them NAME-N.us-east-1.elb.amazonaws.com).
    return self_signed_cert.make(["*.us-east-1.elb.amazonaws.com"], tmp_path / "tls")


@dataclass
class Alb:
    dns_name: str
    target_group_arn: str
    listeners: dict[str, str]  # name -> listener ARN
    instances: list[str]


def make_alb(aws, certificate: tuple[Path, Path], backends: list[Backend], delay_s: int = 300) -> Alb:
    """An ALB as playbooks/network.yml shapes it: HTTP redirects to HTTPS; HTTPS forwards /v1/* to the target
    group, 404 otherwise; plus a 2016-08 listener (the TLS policy control) and one with a policy nobody knows."""
    # The local AWS calls a new target healthy at once unless told otherwise, as nothing probes targets there;
    # behind the stand-in it stays `initial` until the stand-in's health checks report on it, as on AWS.
    aws.configure(elb_initial_s=60)
    ec2, elbv2, acm = aws.client("ec2"), aws.client("elbv2"), aws.client("acm")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.7.{i}.0/24", AvailabilityZone=f"us-east-1{zone}")
               ["Subnet"]["SubnetId"] for i, zone in ((1, "a"), (2, "b"))]
    balancer = elbv2.create_load_balancer(Name="bench-alb", Subnets=subnets, Scheme="internet-facing")
    balancer_arn, dns_name = balancer["LoadBalancers"][0]["LoadBalancerArn"], balancer["LoadBalancers"][0]["DNSName"]
    group = elbv2.create_target_group(
        Name="bench-vllm", Protocol="HTTP", Port=8000, VpcId=vpc, TargetType="instance", HealthCheckPath="/health",
        HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2,
        UnhealthyThresholdCount=2, Matcher={"HttpCode": "200"})["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(TargetGroupArn=group, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": str(delay_s)}])
    instances = [entry["InstanceId"] for entry in ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=len(backends), MaxCount=len(backends))["Instances"]]
    elbv2.register_targets(TargetGroupArn=group, Targets=[
        {"Id": instance, "Port": backend.port} for instance, backend in zip(instances, backends)])
    cert_arn = acm.import_certificate(Certificate=certificate[0].read_bytes(),
                                      PrivateKey=certificate[1].read_bytes())["CertificateArn"]
    not_found = {"Type": "fixed-response", "FixedResponseConfig": {
        "StatusCode": "404", "ContentType": "text/plain", "MessageBody": "Not Found"}}

    def listener(port: int, protocol: str, policy: str | None, action: dict) -> str:
        tls = {"SslPolicy": policy, "Certificates": [{"CertificateArn": cert_arn}]} if policy else {}
        return elbv2.create_listener(LoadBalancerArn=balancer_arn, Protocol=protocol, Port=port,
                                     DefaultActions=[action], **tls)["Listeners"][0]["ListenerArn"]

    listeners = {
        "http": listener(80, "HTTP", None, {"Type": "redirect", "RedirectConfig": {
            "Protocol": "HTTPS", "Port": "443", "Host": "#{host}", "Path": "/#{path}", "Query": "#{query}",
            "StatusCode": "HTTP_301"}}),
        "https": listener(443, "HTTPS", TLS13_POLICY, not_found),
        "legacy": listener(8443, "HTTPS", LEGACY_POLICY, not_found),
        "unknown": listener(9443, "HTTPS", "ELBSecurityPolicy-Bench-Unknown", not_found),
    }
    elbv2.create_rule(ListenerArn=listeners["https"], Priority=10, Actions=[
        {"Type": "forward", "TargetGroupArn": group}], Conditions=[{"Field": "path-pattern", "Values": ["/v1/*"]}])
    return Alb(dns_name, group, listeners, instances)


def https_get(port: int, path: str, dns_name: str, cafile: Path, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
              max_version: ssl.TLSVersion | None = None) -> tuple[int, bytes, str]:
    """(status, body, negotiated TLS version) of GET path through the listener, verifying its certificate with
    cafile and the ALB's DNS name as SNI and Host, as a client of the real ALB would."""
    client = AlbClient(dns_name, port, cafile, minimum_version=version,
                       maximum_version=max_version or ssl.TLSVersion.MAXIMUM_SUPPORTED, timeout_s=10)
    status, _headers, body = client.request("GET", path)
    return status, body, client.last_tls_version


def handshake_with_only_tls11(port: int, dns_name: str, cafile: Path) -> str:
    """The TLS version negotiated by a client offering only TLS 1.1 (at OpenSSL security level 0, so the client
    itself does not refuse it: a refusal is the server's); raises ssl.SSLError when the server refuses."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=dns_name) as tls:
            return tls.version() or ""


def target_states(aws, alb: Alb) -> dict[str, str]:
    described = aws.client("elbv2").describe_target_health(TargetGroupArn=alb.target_group_arn)
    return {entry["Target"]["Id"]: entry["TargetHealth"]["State"] for entry in described["TargetHealthDescriptions"]}


def wait_for_states(aws, alb: Alb, expected: dict[str, str], timeout_s: float = 15) -> None:
    wait_until(lambda: target_states(aws, alb) == expected, timeout_s, f"target health {expected}")


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    servers = [Backend("alpha"), Backend("beta")]
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def test_routes_v1_to_the_targets_404s_the_rest_and_redirects_http(aws_clean, standin, certificate, backends):
    alb = make_alb(aws_clean, certificate, backends)
    https, http = standin.port(alb.listeners["https"]), standin.port(alb.listeners["http"])
    wait_for_states(aws_clean, alb, dict.fromkeys(alb.instances, "healthy"))

    answered = {json.loads(https_get(https, "/v1/models", alb.dns_name, certificate[0])[1])["backend"]
                for _request in range(4)}
    assert answered == {"alpha", "beta"}  # round robin over both healthy targets
    assert https_get(https, "/metrics", alb.dns_name, certificate[0])[:2] == (404, b"Not Found")
    assert https_get(https, "/v1", alb.dns_name, certificate[0])[0] == 404  # "/v1/*" needs the slash
    assert all("/metrics" not in server.requests for server in backends)

    for path, location in (("/v1/models?limit=2", "/v1/models?limit=2"), ("/v1/chat", "/v1/chat")):
        request = urllib.request.Request(f"http://127.0.0.1:{http}{path}", headers={"Host": f"{alb.dns_name}:80"})
        with pytest.raises(urllib.error.HTTPError) as redirect:
            _NoRedirect.open(request, timeout=10)
        assert redirect.value.code == 301
        assert redirect.value.headers["Location"] == f"https://{alb.dns_name}:443{location}"

    assert "Authorization" not in (standin.state_dir / "access.log").read_text()


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_NoRedirect = urllib.request.build_opener(urllib.request.ProxyHandler({}), _RefuseRedirects())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")  # offered on purpose
def test_tls_policy_sets_the_versions_and_an_unknown_policy_fails_loudly(aws_clean, standin, certificate, backends):
    alb = make_alb(aws_clean, certificate, backends)
    tls13, legacy = standin.port(alb.listeners["https"]), standin.port(alb.listeners["legacy"])

    with pytest.raises(ssl.SSLError):
        handshake_with_only_tls11(tls13, alb.dns_name, certificate[0])
    # The same client gets TLS 1.1 from the 2016-08 policy: the refusal above is the listener's policy.
    assert handshake_with_only_tls11(legacy, alb.dns_name, certificate[0]) == "TLSv1.1"
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        status, _body, negotiated = https_get(tls13, "/metrics", alb.dns_name, certificate[0], version, version)
        assert (status, negotiated) == (404, version.name.replace("_", "."))
    with pytest.raises(ssl.SSLError):  # 2016-08 has no TLS 1.3
        https_get(legacy, "/", alb.dns_name, certificate[0], ssl.TLSVersion.TLSv1_3)

    errors = wait_until(standin.errors, 10, "the unknown policy's listener to be reported")
    assert [error["listener_arn"] for error in errors] == [alb.listeners["unknown"]]
    assert "ELBSecurityPolicy-Bench-Unknown" in errors[0]["error"]
    assert alb_standin.local_port(standin.listeners_file, alb.listeners["unknown"]) is None


def test_failing_health_check_takes_a_target_out_and_reports_it_unhealthy(aws_clean, standin, certificate, backends):
    alb = make_alb(aws_clean, certificate, backends)
    https = standin.port(alb.listeners["https"])
    wait_for_states(aws_clean, alb, dict.fromkeys(alb.instances, "healthy"))

    # Registering a registered target again (the hosts' registration units do) leaves its verdict alone.
    aws_clean.client("elbv2").register_targets(
        TargetGroupArn=alb.target_group_arn, Targets=[{"Id": alb.instances[0], "Port": backends[0].port}])
    assert target_states(aws_clean, alb) == dict.fromkeys(alb.instances, "healthy")

    backends[1].health_status = 500
    wait_for_states(aws_clean, alb, {alb.instances[0]: "healthy", alb.instances[1]: "unhealthy"})
    reason = aws_clean.client("elbv2").describe_target_health(
        TargetGroupArn=alb.target_group_arn, Targets=[{"Id": alb.instances[1], "Port": backends[1].port}]
    )["TargetHealthDescriptions"][0]["TargetHealth"]
    assert reason["Reason"] == "Target.ResponseCodeMismatch"
    answered = [json.loads(https_get(https, "/v1/models", alb.dns_name, certificate[0])[1])["backend"]
                for _request in range(4)]
    assert answered == ["alpha"] * 4

    backends[1].health_status = 200
    wait_for_states(aws_clean, alb, dict.fromkeys(alb.instances, "healthy"))


def test_deregistration_drains_in_flight_requests_then_removes_the_target(aws_clean, standin, certificate, backends):
    aws_clean.configure(elb_drain_cap_s=-1)  # drain for the group's own delay
    delay_s = 4
    alb = make_alb(aws_clean, certificate, backends, delay_s=delay_s)
    https = standin.port(alb.listeners["https"])
    wait_for_states(aws_clean, alb, dict.fromkeys(alb.instances, "healthy"))

    slow: dict[str, object] = {}

    def fetch_slow(slot: int) -> None:
        slow[slot] = https_get(https, "/v1/slow", alb.dns_name, certificate[0])

    fetchers = [threading.Thread(target=fetch_slow, args=(slot,)) for slot in (0, 1)]
    for fetcher in fetchers:  # round robin: one slow request on each target
        fetcher.start()
    wait_until(lambda: all("/v1/slow" in server.requests for server in backends), 5, "a slow request on each")
    client = AlbClient(alb.dns_name, https, certificate[0], timeout_s=10)
    with AlbLoad(client, path="/v1/models", method="GET", workers=2, pause_s=0.1) as load:
        aws_clean.client("elbv2").deregister_targets(
            TargetGroupArn=alb.target_group_arn, Targets=[{"Id": alb.instances[1], "Port": backends[1].port}])
        deregistered = time.monotonic()
        assert target_states(aws_clean, alb)[alb.instances[1]] == "draining"
        server = ("tg-bench-vllm", f"{alb.instances[1]}-{backends[1].port}")
        wait_until(lambda: standin.runtime_api().stats()[server]["status"] == "DRAIN", 5, "the stand-in to drain it")
        answered = [json.loads(https_get(https, "/v1/models", alb.dns_name, certificate[0])[1])["backend"]
                    for _request in range(6)]
        assert answered == ["alpha"] * 6
        for fetcher in fetchers:
            fetcher.join(10)
        assert sorted((status, body) for status, body, _version in slow.values()) == [
            (200, b"alpha" * SLOW_CHUNKS), (200, b"beta" * SLOW_CHUNKS)]  # the draining one finished too

        wait_until(lambda: alb.instances[1] not in target_states(aws_clean, alb), delay_s + 3, "the drain to end")
        assert time.monotonic() - deregistered >= delay_s - 0.5
    print(load.summary())
    assert len(load.outcomes) >= 10 and load.failed() == []  # clients never saw the deregistration
    server_lines = (standin.state_dir / "haproxy.cfg").read_text()  # no reload: it goes through the runtime API
    assert f"{alb.instances[1]}-{backends[1].port}" not in server_lines
    wait_until(lambda: f"{alb.instances[1]}:{backends[1].port} removed" in standin.log(), 3, "the server removed")
