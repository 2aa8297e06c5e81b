"""The project's local AWS: moto's server (moto 5.2.5) with the AWS-behaviour extensions of moto_ext.

Run in the foreground (prints the URL once it accepts connections; SIGTERM or SIGINT stops it cleanly):
    python tests/bench/moto_server.py --host 127.0.0.1 --port 0 --port-file F --pid-file P
As a background daemon (returns once the server is serving, prints its URL; a second start with the same
pid file finds it running and prints the same URL):
    python tests/bench/moto_server.py --daemon --port-file F --pid-file P --log-file L
    python tests/bench/moto_server.py --stop --pid-file P

Timing of the emulated AWS transitions comes from LLMSERVE_MOTO_* environment variables (see
moto_ext/settings.py) and can be read or changed while it runs:
    GET  /_llmserve/settings                 -> {"sagemaker_delay_s": 2.0, ...}
    POST /_llmserve/settings  {"sagemaker_delay_s": 0.5}
Faults (moto_ext/faults.py: an action answers denied, throttled, slow or with a proxy's HTML 502):
    POST   /_llmserve/faults  {"action": "DeregisterTargets", "kind": "denied", "count": 2}
    GET    /_llmserve/faults  -> the armed faults;  DELETE /_llmserve/faults clears them
`POST /moto-api/reset` clears moto's state and faults and restores the start-up settings.
(The control path starts with "_", which no S3 bucket name can, so it never shadows a path-style bucket.)
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from moto.core.exceptions import JsonRESTError

if __package__:
    from . import daemon
    from .moto_ext import SETTINGS, acm, apply_all, elbv2, faults
else:  # run as a script: the package sits next to this file
    import daemon
    from moto_ext import SETTINGS, acm, apply_all, elbv2, faults

CONTROL_PREFIX = "/_llmserve/"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
SCRIPT = Path(__file__).name


class ExtendedMotoApp:
    """WSGI app: the control endpoint, then moto's own dispatcher for everything else."""

    def __init__(self, moto_app: Callable[..., Iterable[bytes]]) -> None:
        self.moto_app = moto_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX):
            return self._control(environ, start_response)
        if path == "/moto-api/reset" and environ.get("REQUEST_METHOD") == "POST":
            SETTINGS.restore_startup()
            faults.clear()
        return faults.intercept(environ, start_response, self.moto_app)

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        method = environ.get("REQUEST_METHOD", "GET")
        if path == CONTROL_PREFIX + "faults":
            return self._faults(environ, start_response, method)
        if path in _LOAD_BALANCER_PATHS:
            return _load_balancer(environ, start_response, path, method)
        if path != CONTROL_PREFIX + "settings":
            return _json_reply(start_response, 404, {"error": f"no such control path {path}"})
        if method == "GET":
            return _json_reply(start_response, 200, SETTINGS.current.as_dict())
        if method != "POST":
            return _json_reply(start_response, 405, {"error": "use GET or POST"})
        try:
            SETTINGS.current.update(_json_object(environ, "a JSON object of settings"))
        except ValueError as error:  # json.JSONDecodeError is a ValueError too
            return _json_reply(start_response, 400, {"error": str(error)})
        return _json_reply(start_response, 200, SETTINGS.current.as_dict())

    @staticmethod
    def _faults(environ: dict[str, Any], start_response: Callable[..., Any], method: str) -> Iterable[bytes]:
        if method == "GET":
            return _json_reply(start_response, 200, {"faults": faults.listed()})
        if method == "DELETE":
            faults.clear()
            return _json_reply(start_response, 200, {"faults": []})
        if method != "POST":
            return _json_reply(start_response, 405, {"error": "use GET, POST or DELETE"})
        try:
            added = faults.add(_json_object(environ, "a JSON object: action, kind, delay_s, count"))
        except ValueError as error:
            return _json_reply(start_response, 400, {"error": str(error)})
        return _json_reply(start_response, 200, added)


# The ALB stand-in's side of AWS (tests/bench/alb_standin.py): what a real load balancer gets from ACM and
# feeds to ELBv2 inside AWS (moto_ext/acm.py, moto_ext/elbv2.py say which behaviour each restores).
_LOAD_BALANCER_PATHS = {
    CONTROL_PREFIX + "acm/load-balancer-certificate": "GET",
    CONTROL_PREFIX + "elbv2/target-health": "POST",
}


def _load_balancer(environ: dict[str, Any], start_response: Callable[..., Any], path: str, method: str) -> list[bytes]:
    if method != _LOAD_BALANCER_PATHS[path]:
        return _json_reply(start_response, 405, {"error": f"use {_LOAD_BALANCER_PATHS[path]}"})
    try:
        if method == "GET":
            arn = parse_qs(environ.get("QUERY_STRING", "")).get("arn", [""])[0]
            return _json_reply(start_response, 200, acm.load_balancer_certificate(arn))
        report = _json_object(environ, "a JSON object: target_group_arn, targets")
        return _json_reply(start_response, 200, {"updated": elbv2.report_target_health(report)})
    except ValueError as error:
        return _json_reply(start_response, 400, {"error": str(error)})
    except JsonRESTError as error:  # moto's not-found errors
        return _json_reply(start_response, 404, {"error": error.message})


def _json_object(environ: dict[str, Any], expected: str) -> dict[str, Any]:
    """A control request's JSON body; ValueError when it is not JSON or not an object."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.loads(environ["wsgi.input"].read(length) or b"{}")
    if not isinstance(body, dict):
        raise ValueError(f"expected {expected}")
    return body


def _json_reply(start_response: Callable[..., Any], status: int, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body).encode()
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
    start_response(
        f"{status} {reasons[status]}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(host: str, port: int, port_file: Path | None, pid_file: Path | None, quiet: bool, plain: bool) -> int:
    if not plain:
        apply_all()  # before the first request: every backend class is patched by then
    # Imported after patching so nothing binds a reference to an unpatched function first.
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    if quiet:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    app = ExtendedMotoApp(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    url = _url(host, server.server_port)
    # moto builds some URLs it returns (e.g. SQS queue URLs) from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(server.server_port)

    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    serving.start()
    pid_text, port_text = f"{os.getpid()}\n", f"{url}\n"
    if pid_file is not None:
        daemon.write_atomically(pid_file, pid_text)
    if port_file is not None:  # written last: its presence means "serving"
        daemon.write_atomically(port_file, port_text)
    print(url, flush=True)
    try:
        # A timed wait keeps the main thread responsive to signals and notices a dead serving thread.
        while not stop.wait(0.5):
            if not serving.is_alive():
                print("moto_server: serving thread died", file=sys.stderr, flush=True)
                return 1
    finally:
        daemon.remove_if_holds(port_file, port_text)
        daemon.remove_if_holds(pid_file, pid_text)
        server.shutdown()
        server.server_close()
        serving.join(STOP_TIMEOUT_S)
    return 0


def daemonize(args: argparse.Namespace) -> int:
    if daemon.running_pid(args.pid_file, SCRIPT) is not None and args.port_file is not None and args.port_file.exists():
        print(args.port_file.read_text().strip(), flush=True)
        return 0
    port_file = args.port_file or Path(tempfile.mkdtemp(prefix="llmserve-moto-")) / "url"
    command = [sys.executable, str(Path(__file__).resolve()), "--host", args.host, "--port", str(args.port)]
    command += ["--port-file", str(port_file)]
    if args.pid_file is not None:
        command += ["--pid-file", str(args.pid_file)]
    command += [flag for flag, wanted in (("--quiet", args.quiet), ("--plain", args.plain)) if wanted]
    url = daemon.start("moto_server", command, port_file, args.log_file or Path(os.devnull), args.start_timeout)
    if url is None:
        return 1
    print(url, flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--port-file", type=Path, help="write the server URL here once it is serving")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    parser.add_argument(
        "--plain", action="store_true", help="serve moto without the extensions (re-measure moto after an upgrade)"
    )
    daemon.add_arguments(parser, "server", START_TIMEOUT_S)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.stop or args.daemon) and args.pid_file is None:
        print("moto_server: --daemon and --stop need --pid-file", file=sys.stderr)
        return 2
    if args.stop:
        return daemon.stop("moto_server", args.pid_file, SCRIPT, STOP_TIMEOUT_S)
    if args.daemon:
        return daemonize(args)
    return serve(args.host, args.port, args.port_file, args.pid_file, args.quiet, args.plain)


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is closed and cleaned up by now; skip the interpreter's teardown of moto's in-memory state,
    # which alone takes seconds (measured 1.8-3.4 s on 2 cores) and would delay every stop.
    os._exit(exit_code)
