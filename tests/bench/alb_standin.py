"""The bench's Application Load Balancer: HAProxy driven by the local AWS's ELBv2 state.

The local AWS (moto + moto_ext) stores load balancers, listeners, rules and target groups but routes nothing.
This daemon polls that state (DescribeLoadBalancers/Listeners/Rules/TargetGroups/TargetHealth, every
--poll-interval seconds) and drives one HAProxy (Debian bookworm's 2.6, `make host-packages`) so requests
really flow through the listeners' TLS and rules to the targets, and reports the targets' health back.

Why HAProxy (over nginx or Envoy, both also possible): its runtime API changes servers without a reload (add,
drain, remove a target while in-flight requests finish), which is what ELBv2 registration and deregistration
are; `ssl-min-ver`/`ciphers`/`ciphersuites` map an ELBv2 TLS policy one to one; path and host ACLs express
ELBv2 rule conditions; `http-check` runs the target group's health check (path, interval, thresholds, matcher)
and its results are readable from the same API, so they feed DescribeTargetHealth. Envoy is not in Debian's
bookworm; nginx's open-source build has no active health checks.

Run (foreground, or --daemon/--stop as tests/bench/moto_server.py, same pid/port-file conventions):
    python tests/bench/alb_standin.py --aws-endpoint-url http://127.0.0.1:PORT --state-dir DIR \\
        [--port-file F] [--pid-file P] [--poll-interval 0.5] [--target-address 127.0.0.1] [--check-interval-cap S]
--check-interval-cap compresses AWS's health-check interval (its minimum is 5 s) for tests and the demo, as the
local AWS compresses its other delays; timeouts, paths, matchers and thresholds stay the target group's own.
Clients: tests/bench/alb_client.py (AlbClient) talks to a listener as a client of the real ALB would.

Files in DIR:
    listeners.json  which local port serves each listener (rewritten after every change):
        {"listeners": [{"listener_arn", "load_balancer_arn", "dns_name", "protocol", "port", "local_port",
        "ssl_policy"}], "errors": [{"listener_arn", "error"}], "access_log": PATH}
        `local_port(listeners_file, listener_arn)` reads it. A listener the stand-in cannot serve as AWS would
        (an unknown SslPolicy, an unimplemented condition or action) is left out and named under "errors", and
        the reason is logged: it fails loudly rather than routing differently from AWS.
    access.log      HAProxy's access log, one line per request (alb_haproxy.ACCESS_LOG_FORMAT); no request
                    headers are captured, so an Authorization header or API key in a header never reaches it.
    haproxy.cfg, haproxy.log (HAProxy's own messages), runtime.sock (its runtime API), certs/ (listeners' PEMs,
    mode 0600), server-state (carried across reloads).
The --port-file, once written, holds the path of listeners.json: the stand-in has served the state it first read.

Mapping to AWS:
- Each listener -> a frontend on 127.0.0.1:<local port> (a free port picked once per listener and kept; the
  listener's own port, e.g. 443, need not be free on the machine). HTTPS listeners terminate TLS with their
  default certificate (the key comes from the local AWS's internal ACM path, moto_ext/acm.py, as an ALB gets it
  inside AWS) and their SslPolicy's versions and ciphers (alb_haproxy.TLS_POLICIES).
- Rules in priority order, then the default action: path-pattern, host-header and http-request-method
  conditions; forward (one target group), fixed-response and redirect actions (alb_haproxy.py).
- Target group -> backend. Targets: every host on the bench shares the machine's loopback (host networking), so
  a target (instance id or IP, port) is served at --target-address (127.0.0.1) and the target's port.
  A new target starts `initial` (no traffic until its health check passes HealthyThresholdCount times), then
  `healthy` or `unhealthy`; these states are reported to the local AWS (moto_ext/elbv2.py), so
  DescribeTargetHealth shows what the checks found. Deregistration drains: while the local AWS lists the target
  `draining` (the group's deregistration delay, capped by its elb_drain_cap_s setting), it gets no new requests
  and in-flight ones go on; when the local AWS stops listing it, its remaining connections are closed and it is
  removed.
- HAProxy reloads (master-worker, SIGUSR2; servers' states carried in the server-state file) only when
  listeners, rules or target group settings change; target changes go through the runtime API.

Not reproduced (yet): AWS "fails open" (routes to all targets) when every target is unhealthy, where HAProxy
answers 503; AWS ends a deregistration early once the target has no connections left, where the stand-in waits
for the local AWS to end it; weighted forwards to several target groups, authenticate-* actions, query-string,
http-header and source-ip conditions are refused loudly (listeners.json "errors").
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__:
    from . import alb_haproxy, daemon
else:  # run as a script: the modules sit next to this file
    import alb_haproxy
    import daemon

SCRIPT = Path(__file__).name
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
HAPROXY_READY_TIMEOUT_S = 15.0
REPORT_ALL_EVERY_S = 5.0  # health reports go on change, and all of them this often
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def local_port(listeners_file: Path, listener_arn: str) -> int | None:
    """The local port serving listener_arn per the stand-in's listeners.json, None while it serves none."""
    try:
        served = json.loads(listeners_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    ports = [entry["local_port"] for entry in served["listeners"] if entry["listener_arn"] == listener_arn]
    return ports[0] if ports else None


@dataclass
class Server:
    """A target as HAProxy serves it, with what DescribeTargetHealth needs to know about its checks."""

    target_group_arn: str
    backend: str
    target_id: str
    port: int
    added_at: float
    initial_for_s: float  # HAProxy keeps it DOWN while checks run; AWS says `initial` for this long
    draining: bool = False
    ever_up: bool = False
    removing: bool = False


class RuntimeApi:
    """HAProxy's runtime API on its UNIX socket: one connection per command line (";" separates commands)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(str(self.path))
            connection.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        """`show stat` rows keyed by (backend, server)."""
        lines = self("show stat").splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        header = lines[0][2:].split(",")
        rows = (dict(zip(header, line.split(","))) for line in lines[1:] if line)
        return {(row["pxname"], row["svname"]): row for row in rows}


class Standin:
    def __init__(self, args: argparse.Namespace) -> None:
        import boto3  # the control venv's; imported here so --stop does not pay for it

        self.endpoint_url = args.aws_endpoint_url
        self.elbv2 = boto3.client(
            "elbv2",
            endpoint_url=self.endpoint_url,
            region_name=args.region,
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        )
        self.target_address = args.target_address
        self.interval_cap_s = args.check_interval_cap
        self.dir = args.state_dir.resolve()
        (self.dir / "certs").mkdir(parents=True, exist_ok=True)
        self.config_file = self.dir / "haproxy.cfg"
        self.listeners_file = self.dir / "listeners.json"
        self.access_log = self.dir / "access.log"
        self.api = RuntimeApi(self.dir / "runtime.sock")
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}  # listener ARN -> local port, kept for the daemon's life
        self.certificates: dict[str, str] = {}  # certificate ARN -> PEM file
        self.structure: str | None = None  # the configuration without servers, as last applied
        self.backends: dict[str, dict[str, Any]] = {}  # target group ARN -> group, as last applied
        self.servers: dict[str, Server] = {}  # "backend/server" -> Server
        self.reported: dict[tuple[str, str], tuple[str, str | None, str | None]] = {}
        self.report_all_at = 0.0
        self.errors: list[dict[str, str]] = []  # listeners it cannot serve, as last logged

    # --- one poll cycle -------------------------------------------------------------------------------------
    def sync(self) -> None:
        listeners, target_groups = self._read_listeners()
        errors: list[dict[str, str]] = []
        served, backends = self._servable(listeners, target_groups, errors)
        structure = self._render(served, backends, {})
        if structure != self.structure:
            self._apply(served, backends, structure)
        health = {arn: self._target_health(arn) for arn in self.backends}
        self._sync_servers(health)
        self._report_health()
        self._write_listeners(listeners, served, errors)

    def _read_listeners(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        listeners = []
        for page in self.elbv2.get_paginator("describe_load_balancers").paginate():
            for balancer in page["LoadBalancers"]:
                if balancer.get("Type", "application") != "application":
                    continue
                for listener in self.elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])[
                    "Listeners"
                ]:
                    listener["Rules"] = self.elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
                    listener["DNSName"] = balancer["DNSName"]
                    listeners.append(listener)
        target_groups = {
            group["TargetGroupArn"]: group
            for page in self.elbv2.get_paginator("describe_target_groups").paginate()
            for group in page["TargetGroups"]
        }
        return listeners, target_groups

    def _servable(
        self, listeners: list[dict[str, Any]], target_groups: dict[str, dict[str, Any]], errors: list[dict[str, str]]
    ) -> tuple[list[alb_haproxy.Listener], dict[str, dict[str, Any]]]:
        """The listeners the stand-in can serve as AWS would, and the target groups they forward to."""
        served, backends = [], {}
        for entry in listeners:
            arn = entry["ListenerArn"]
            try:
                listener = alb_haproxy.Listener(
                    arn=arn,
                    protocol=entry["Protocol"],
                    port=int(entry["Port"]),
                    local_port=self.ports.get(arn) or _free_port(),
                    ssl_policy=entry.get("SslPolicy"),
                    certificate_file=self._certificate(entry),
                    rules=tuple(entry["Rules"]),
                )
                forwarded = alb_haproxy.forwarded_target_groups(listener.rules)
                missing = forwarded - set(target_groups)
                if missing:
                    raise alb_haproxy.ListenerError(f"listener {arn} forwards to unknown target groups {missing}")
                groups = {group: target_groups[group] for group in forwarded}
                alb_haproxy.render_frontend(listener, groups)
                for group in groups.values():
                    alb_haproxy.render_backend(group, [], self.interval_cap_s)
            except (alb_haproxy.ListenerError, OSError, ValueError, KeyError) as error:
                errors.append({"listener_arn": arn, "error": str(error)})
                continue
            self.ports[arn] = listener.local_port
            served.append(listener)
            backends.update(groups)
        if errors != self.errors:  # logged once, not on every poll
            for error in errors:
                _log(f"cannot serve listener: {error['error']}")
            self.errors = errors
        return served, backends

    def _certificate(self, listener: dict[str, Any]) -> str | None:
        """The PEM file (certificate, chain, key) of the listener's default certificate."""
        default = [cert for cert in listener.get("Certificates", []) if cert.get("IsDefault", True)]
        if listener["Protocol"] != "HTTPS" or not default:
            return None
        arn = default[0]["CertificateArn"]
        if arn not in self.certificates:
            query = urllib.parse.urlencode({"arn": arn})
            with _LOOPBACK.open(f"{self.endpoint_url}/_llmserve/acm/load-balancer-certificate?{query}", timeout=10) as reply:
                pem = json.load(reply)
            path = self.dir / "certs" / (hashlib.sha256(arn.encode()).hexdigest()[:16] + ".pem")
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(pem["certificate"].strip() + "\n")
                if pem["chain"].strip():
                    out.write(pem["chain"].strip() + "\n")
                out.write(pem["private_key"].strip() + "\n")
            self.certificates[arn] = str(path)
        return self.certificates[arn]

    # --- HAProxy's configuration ----------------------------------------------------------------------------
    def _apply(self, served: list[alb_haproxy.Listener], backends: dict[str, dict[str, Any]], structure: str) -> None:
        """Write the configuration (the servers still attached rendered in, their states carried by the
        server-state file), check it, then start HAProxy or reload it."""
        kept = {key: server for key, server in self.servers.items() if server.target_group_arn in backends}
        rendered_servers: dict[str, list[tuple[str, str]]] = {}
        for key, server in kept.items():
            arguments = alb_haproxy.server_arguments(
                backends[server.target_group_arn], self.target_address, server.port, self.interval_cap_s)
            rendered_servers.setdefault(server.target_group_arn, []).append((key.split("/", 1)[1], arguments))
        config = self._render(served, backends, rendered_servers)
        candidate = self.dir / "haproxy.cfg.new"
        candidate.write_text(config)
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(candidate)], capture_output=True, text=True,
                               check=False)
        if check.returncode != 0:
            _log(f"HAProxy refused the configuration (kept the previous one): {check.stdout}{check.stderr}")
            return
        if self.haproxy is not None and self.haproxy.poll() is None:
            (self.dir / "server-state").write_text(self.api("show servers state"))
        os.replace(candidate, self.config_file)
        self._start_or_reload()
        self.structure, self.backends, self.servers = structure, dict(backends), kept
        _log(f"HAProxy serves {len(served)} listeners, {len(backends)} target groups")

    def _render(self, served: list[alb_haproxy.Listener], backends: dict[str, dict[str, Any]],
                servers: dict[str, list[tuple[str, str]]]) -> str:
        return alb_haproxy.render(served, backends, servers, str(self.api.path), str(self.dir / "server-state"),
                                  self.interval_cap_s)

    def _start_or_reload(self) -> None:
        previous = self._worker_pid()
        if self.haproxy is None or self.haproxy.poll() is not None:
            with open(self.access_log, "ab") as access, open(self.dir / "haproxy.log", "ab") as messages:
                self.haproxy = subprocess.Popen(
                    ["haproxy", "-W", "-db", "-f", str(self.config_file)],
                    stdin=subprocess.DEVNULL, stdout=access, stderr=messages,
                )
        else:
            self.haproxy.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + HAPROXY_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            pid = self._worker_pid()
            if pid is not None and pid != previous:
                return
            if self.haproxy.poll() is not None:
                raise RuntimeError(f"HAProxy exited with {self.haproxy.returncode}; see {self.dir / 'haproxy.log'}")
            time.sleep(0.05)
        raise RuntimeError(f"HAProxy's new worker not answering after {HAPROXY_READY_TIMEOUT_S} s")

    def _worker_pid(self) -> str | None:
        try:
            info = self.api("show info")
        except OSError:
            return None
        return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Pid:")), None)

    # --- targets --------------------------------------------------------------------------------------------
    def _target_health(self, arn: str) -> dict[tuple[str, int], str]:
        descriptions = self.elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        return {
            (entry["Target"]["Id"], int(entry["Target"]["Port"])): entry["TargetHealth"]["State"]
            for entry in descriptions
        }

    def _sync_servers(self, health: dict[str, dict[tuple[str, int], str]]) -> None:
        wanted: dict[str, tuple[str, str, int, bool]] = {}
        for arn, targets in health.items():
            backend = alb_haproxy.backend_name(self.backends[arn])
            for (target_id, port), state in targets.items():
                key = f"{backend}/{alb_haproxy.server_name(target_id, port)}"
                wanted[key] = (arn, target_id, port, state == "draining")
        for key, (arn, target_id, port, draining) in wanted.items():
            server = self.servers.get(key)
            if server is None:
                if not draining:  # a target first seen draining never gets traffic here
                    self._add(key, arn, target_id, port)
            elif server.removing:
                continue
            elif draining and not server.draining:
                self._command(f"set server {key} state drain")
                server.draining = True
            elif not draining and server.draining:
                self._command(f"set server {key} state ready")
                server.draining = False
        for key, server in list(self.servers.items()):
            if key not in wanted:
                self._remove(key, server)

    def _add(self, key: str, arn: str, target_id: str, port: int) -> None:
        group = self.backends[arn]
        arguments = alb_haproxy.server_arguments(group, self.target_address, port, self.interval_cap_s)
        # In one line, so no request reaches the server between `ready` and `health down`: HAProxy would call a
        # server leaving maintenance UP before any check, where AWS sends nothing to an `initial` target.
        self._command(f"add server {key} {arguments}; enable health {key}; set server {key} state ready; "
                      f"set server {key} health down")
        interval, timeout = alb_haproxy.check_timing(group, self.interval_cap_s)
        initial_for_s = group["UnhealthyThresholdCount"] * interval + timeout
        self.servers[key] = Server(arn, key.split("/")[0], target_id, port, time.monotonic(), initial_for_s)
        _log(f"target {target_id}:{port} added to {key.split('/')[0]}")

    def _remove(self, key: str, server: Server) -> None:
        """After its drain: close what is left (AWS closes connections at the end of the delay) and delete it."""
        server.removing = True
        answer = self._command(f"set server {key} state maint; shutdown sessions server {key}; del server {key}")
        if "Server deleted" in answer or "No such server" in answer or "No such backend" in answer:
            del self.servers[key]
            self.reported.pop((server.target_group_arn, server.target_id), None)
            _log(f"target {server.target_id}:{server.port} removed from {server.backend}")

    def _command(self, command: str) -> str:
        answer = self.api(command)
        if any(word in answer for word in ("Unknown", "Require", "failed", "error")):
            _log(f"runtime API: {command!r} -> {answer.strip()!r}")
        return answer

    def _report_health(self) -> None:
        """What the checks found, as AWS states (moto_ext/elbv2.py keeps them for DescribeTargetHealth)."""
        stats = self.api.stats()
        if time.monotonic() >= self.report_all_at:  # now and then all again: the local AWS may have been reset
            self.reported.clear()
            self.report_all_at = time.monotonic() + REPORT_ALL_EVERY_S
        changed: dict[str, list[dict[str, Any]]] = {}
        for key, server in self.servers.items():
            row = stats.get(tuple(key.split("/", 1)))  # type: ignore[arg-type]
            if row is None or server.draining or server.removing:
                continue
            health = _aws_health(server, row)
            if self.reported.get((server.target_group_arn, server.target_id)) != health:
                state, reason, description = health
                changed.setdefault(server.target_group_arn, []).append(
                    {"id": server.target_id, "state": state, "reason": reason, "description": description})
                self.reported[(server.target_group_arn, server.target_id)] = health
        for arn, targets in changed.items():
            body = json.dumps({"target_group_arn": arn, "targets": targets}).encode()
            request = urllib.request.Request(f"{self.endpoint_url}/_llmserve/elbv2/target-health", data=body,
                                             method="POST", headers={"Content-Type": "application/json"})
            try:
                _LOOPBACK.open(request, timeout=10).close()
            except OSError as error:  # the group went away since this cycle read it: forget, report again
                _log(f"health report for {arn} not taken: {error}")
                for target in targets:
                    self.reported.pop((arn, target["id"]), None)

    def _write_listeners(
        self, listeners: list[dict[str, Any]], served: list[alb_haproxy.Listener], errors: list[dict[str, str]]
    ) -> None:
        applied = {listener.arn: listener for listener in served}
        entries = [
            {
                "listener_arn": entry["ListenerArn"],
                "load_balancer_arn": entry["LoadBalancerArn"],
                "dns_name": entry["DNSName"],
                "protocol": entry["Protocol"],
                "port": int(entry["Port"]),
                "local_port": applied[entry["ListenerArn"]].local_port,
                "ssl_policy": entry.get("SslPolicy") if entry["Protocol"] == "HTTPS" else None,
            }
            for entry in listeners
            if entry["ListenerArn"] in applied
        ]
        text = json.dumps({"listeners": entries, "errors": errors, "access_log": str(self.access_log)}, indent=1)
        try:
            unchanged = self.listeners_file.read_text() == text + "\n"
        except FileNotFoundError:
            unchanged = False
        if not unchanged:
            daemon.write_atomically(self.listeners_file, text + "\n")

    def close(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait(STOP_TIMEOUT_S)


def _aws_health(server: Server, row: dict[str, str]) -> tuple[str, str | None, str | None]:
    """A server's `show stat` row as an ELBv2 target health (state, reason, description)."""
    if row["status"].startswith("UP"):  # "UP 1/3": failing, not yet past UnhealthyThresholdCount
        server.ever_up = True
        return ("healthy", None, None)
    if not server.ever_up and time.monotonic() - server.added_at < server.initial_for_s:
        return ("initial", "Elb.InitialHealthChecking", "Initial health checks in progress")
    check = row.get("check_status", "").lstrip("* ")  # "* L7STS": the next check is running
    if check == "L7STS":
        return ("unhealthy", "Target.ResponseCodeMismatch", f"Health checks failed with these codes: [{row['check_code']}]")
    if check in ("L4TOUT", "L7TOUT"):
        return ("unhealthy", "Target.Timeout", "Request timed out")
    return ("unhealthy", "Target.FailedHealthChecks", "Health checks failed")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} alb_standin: {message}", flush=True)


def serve(args: argparse.Namespace) -> int:
    standin = Standin(args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    pid_text, port_text = f"{os.getpid()}\n", f"{standin.listeners_file}\n"
    if args.pid_file is not None:
        daemon.write_atomically(args.pid_file, pid_text)
    ready = False
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                standin.sync()
            except Exception as error:  # noqa: BLE001 - the daemon outlives a bad cycle (the local AWS reset...)
                _log(f"cycle failed, next in {args.poll_interval} s: {type(error).__name__}: {error}")
            else:
                if not ready and args.port_file is not None:  # written once: the first state is served
                    daemon.write_atomically(args.port_file, port_text)
                ready = True
            if standin.haproxy is not None and standin.haproxy.poll() is not None:
                _log(f"HAProxy exited with {standin.haproxy.returncode}; see {standin.dir / 'haproxy.log'}")
                return 1
            stop.wait(max(0.0, args.poll_interval - (time.monotonic() - started)))
    finally:
        standin.close()
        daemon.remove_if_holds(args.port_file, port_text)
        daemon.remove_if_holds(args.pid_file, pid_text)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aws-endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"),
                        help="the local AWS (default: $AWS_ENDPOINT_URL)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--state-dir", type=Path, help="where the configuration, logs and listeners.json go")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between reads of ELBv2 state")
    parser.add_argument("--target-address", default="127.0.0.1",
                        help="address every target is reached at (the bench's hosts share the loopback)")
    parser.add_argument("--check-interval-cap", type=float,
                        help="seconds: run health checks at most this far apart, compressing AWS's 5 s minimum "
                             "interval for tests; default: the groups' own interval")
    parser.add_argument("--port-file", type=Path, help="once serving, write the path of listeners.json here")
    daemon.add_arguments(parser, "stand-in", START_TIMEOUT_S)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stop:
        if args.pid_file is None:
            print("alb_standin: --stop needs --pid-file", file=sys.stderr)
            return 2
        return daemon.stop("alb_standin", args.pid_file, SCRIPT, STOP_TIMEOUT_S)
    if not args.aws_endpoint_url or args.state_dir is None:
        print("alb_standin: needs --aws-endpoint-url (or AWS_ENDPOINT_URL) and --state-dir", file=sys.stderr)
        return 2
    if not 0.1 <= args.poll_interval <= 10:
        print("alb_standin: --poll-interval must be 0.1-10 seconds", file=sys.stderr)
        return 2
    if args.check_interval_cap is not None and not 0.1 <= args.check_interval_cap <= 300:
        print("alb_standin: --check-interval-cap must be 0.1-300 seconds", file=sys.stderr)
        return 2
    if args.daemon:
        if args.pid_file is None or args.port_file is None:
            print("alb_standin: --daemon needs --pid-file and --port-file", file=sys.stderr)
            return 2
        if daemon.running_pid(args.pid_file, SCRIPT) is not None and args.port_file.exists():
            print(args.port_file.read_text().strip(), flush=True)
            return 0
        command = [sys.executable, str(Path(__file__).resolve()), "--aws-endpoint-url", args.aws_endpoint_url,
                   "--region", args.region, "--state-dir", str(args.state_dir.resolve()),
                   "--poll-interval", str(args.poll_interval), "--target-address", args.target_address,
                   *(["--check-interval-cap", str(args.check_interval_cap)] if args.check_interval_cap else []),
                   "--port-file", str(args.port_file), "--pid-file", str(args.pid_file)]
        listeners = daemon.start("alb_standin", command, args.port_file, args.log_file or Path(os.devnull),
                                 args.start_timeout)
        if listeners is None:
            return 1
        print(listeners, flush=True)
        return 0
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
