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
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

if __package__:
    from .moto_ext import SETTINGS, apply_all, faults
else:  # run as a script: the package sits next to this file
    from moto_ext import SETTINGS, apply_all, faults

CONTROL_PREFIX = "/_llmserve/"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


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


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _remove_if_holds(path: Path | None, text: str) -> None:
    """Remove a pid/port file only while it is still ours (a newer server may have taken the name)."""
    if path is None:
        return
    try:
        if path.read_text() == text:
            path.unlink()
    except FileNotFoundError:
        pass


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
        _write_atomically(pid_file, pid_text)
    if port_file is not None:  # written last: its presence means "serving"
        _write_atomically(port_file, port_text)
    print(url, flush=True)
    try:
        # A timed wait keeps the main thread responsive to signals and notices a dead serving thread.
        while not stop.wait(0.5):
            if not serving.is_alive():
                print("moto_server: serving thread died", file=sys.stderr, flush=True)
                return 1
    finally:
        _remove_if_holds(port_file, port_text)
        _remove_if_holds(pid_file, pid_text)
        server.shutdown()
        server.server_close()
        serving.join(STOP_TIMEOUT_S)
    return 0


def _running_server_pid(pid_file: Path | None) -> int | None:
    """The pid in pid_file when that process is alive and is one of these servers, else None."""
    if pid_file is None:
        return None
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid if Path(__file__).name.encode() in cmdline else None


def daemonize(args: argparse.Namespace) -> int:
    running = _running_server_pid(args.pid_file)
    if running is not None and args.port_file is not None and args.port_file.exists():
        print(args.port_file.read_text().strip(), flush=True)
        return 0
    port_file = args.port_file or Path(tempfile.mkdtemp(prefix="llmserve-moto-")) / "url"
    port_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--host", args.host, "--port", str(args.port)]
    command += ["--port-file", str(port_file)]
    if args.pid_file is not None:
        command += ["--pid-file", str(args.pid_file)]
    command += [flag for flag, wanted in (("--quiet", args.quiet), ("--plain", args.plain)) if wanted]
    log_path = args.log_file or Path(os.devnull)
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            print(port_file.read_text().strip(), flush=True)
            return 0
        if child.poll() is not None:
            print(f"moto_server: exited with {child.returncode} before serving; log: {log_path}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    child.terminate()
    print(f"moto_server: not serving after {args.start_timeout:.0f} s; log: {log_path}", file=sys.stderr)
    return 1


def stop_daemon(pid_file: Path | None, timeout_s: float) -> int:
    pid = _running_server_pid(pid_file)
    if pid is None:
        print("moto_server: not running", flush=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            print(f"moto_server: stopped {pid}", flush=True)
            return 0
        time.sleep(0.05)
    print(f"moto_server: {pid} still running {timeout_s:.0f} s after SIGTERM", file=sys.stderr)
    return 1


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--port-file", type=Path, help="write the server URL here once it is serving")
    parser.add_argument("--pid-file", type=Path, help="write the server's pid here")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    parser.add_argument(
        "--plain", action="store_true", help="serve moto without the extensions (re-measure moto after an upgrade)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--daemon", action="store_true", help="start in the background, return once serving")
    mode.add_argument("--stop", action="store_true", help="stop the server named by --pid-file")
    parser.add_argument("--log-file", type=Path, help="with --daemon: where the server's output goes")
    parser.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S, help="with --daemon: seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.stop or args.daemon) and args.pid_file is None:
        print("moto_server: --daemon and --stop need --pid-file", file=sys.stderr)
        return 2
    if args.stop:
        return stop_daemon(args.pid_file, STOP_TIMEOUT_S)
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
