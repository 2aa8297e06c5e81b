"""Top-level pytest fixtures: the project's local AWS.

`aws` (session): moto in server mode with the project's AWS-behaviour extensions (tests/bench/moto_server.py),
started once per test session (once per xdist worker) on a free 127.0.0.1 port in a subprocess.
`aws_clean` (function): the same server, reset to empty state and start-up settings before the test.
LLMSERVE_MOTO_PLAIN=1 serves moto without the extensions: the tests that rely on them then fail, which shows
what moto itself still lags on (re-check after a moto upgrade).
"""

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.wait import still_running, wait_until

MOTO_SERVER = Path(__file__).parent / "bench" / "moto_server.py"
REGION = "us-east-1"
ACCESS_KEY = SECRET_KEY = "testing"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

# Short AWS transition times, so tests observe Creating/submitted/draining within a second or so instead of
# AWS's minutes; a LLMSERVE_MOTO_* value already in the environment wins.
TEST_TIMINGS = {
    "LLMSERVE_MOTO_SAGEMAKER_DELAY_S": "1.0",
    "LLMSERVE_MOTO_SPOT_FLEET_DELAY_S": "0.5",
    "LLMSERVE_MOTO_ELB_INITIAL_S": "0",
    "LLMSERVE_MOTO_ELB_DRAIN_CAP_S": "1.0",
}

# Only loopback is ever spoken to: never route it through a proxy from the environment.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class LocalAws:
    """Handle on a running local AWS: where it is, how to reach it, and its control endpoint."""

    endpoint_url: str
    region: str = REGION

    @property
    def env(self) -> dict[str, str]:
        """Environment that sends boto3/botocore (and so Ansible's AWS modules) here without endpoint_url."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def client(self, service: str, **kwargs: Any) -> Any:
        import boto3  # imported here so test runs that never touch AWS do not pay for it

        options = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
        }
        options.update(kwargs)
        return boto3.client(service, **options)

    def reset(self) -> None:
        """Clear all moto state and restore the server's start-up settings."""
        self._request("POST", "/moto-api/reset")

    def settings(self) -> dict[str, float | str]:
        return self._request("GET", "/_llmserve/settings")

    def configure(self, **changes: float | str) -> dict[str, float | str]:
        """Change transition timings or forced failures (see tests/bench/moto_ext/settings.py) until the next reset."""
        return self._request("POST", "/_llmserve/settings", changes)

    def inject_fault(self, action: str, kind: str, **options: Any) -> dict[str, Any]:
        """Makes an API action fail like AWS does (tests/bench/moto_ext/faults.py) until the next reset."""
        return self._request("POST", "/_llmserve/faults", {"action": action, "kind": kind, **options})

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.endpoint_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with _LOOPBACK.open(request, timeout=10) as response:
            payload = response.read()
        return json.loads(payload) if payload else None


def _wait_for_url(server: subprocess.Popen, port_file: Path, log: Path) -> str:
    def log_tail() -> str:
        return log.read_text()[-4000:]

    wait_until(lambda: port_file.exists() or still_running(server, "moto server", log_tail), START_TIMEOUT_S,
               "moto server to write its port file", detail=log_tail)
    return port_file.read_text().strip()


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAws]:
    workdir = tmp_path_factory.mktemp("moto")
    port_file, log = workdir / "url", workdir / "server.log"
    env = dict(os.environ)
    for name, value in TEST_TIMINGS.items():
        env.setdefault(name, value)
    command = [sys.executable, str(MOTO_SERVER), "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file)]
    if os.environ.get("LLMSERVE_MOTO_PLAIN") == "1":
        command.append("--plain")
    with open(log, "wb") as output:
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        yield LocalAws(_wait_for_url(server, port_file, log))
    finally:
        _stop(server)


@pytest.fixture
def aws_clean(aws: LocalAws) -> LocalAws:
    aws.reset()
    return aws
