"""The spot-interruption bench on this host: the real watcher process, the IMDSv2 emulator, moto, vLLM on CPU.

Used by tests/integration/test_spot_watcher_on_host.py and benchmarks/spot_drill/. Nothing here imitates the parts:
the watcher is roles/spot_interruption/files/llmserve_spot_watcher.py run as a process, its AWS calls go to a
moto server, its credentials come from the emulator's instance-role endpoint, and vLLM serves the tiny model.
The one thing the host lacks is systemd: here the watcher stops vLLM with a `stop_command` that sends SIGTERM to
vLLM's main process only (what KillMode=mixed does) and waits for it to exit. The systemd path (path unit ->
`systemctl stop`) is proven by the role's molecule scenario.
"""

import dataclasses
import http.client
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: the spot_interruption scenario's `provision` step
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.wait import poll, still_running, wait_until  # noqa: E402
WATCHER = REPO_ROOT / "roles" / "spot_interruption" / "files" / "llmserve_spot_watcher.py"
# The drill playbook's stopwatch; a process of its own, so that polling moto every 50 ms does not share a GIL
# with the streaming clients.
STOPWATCH = REPO_ROOT / "playbooks" / "files" / "spot_drill_monitor.py"
GENERATOR = REPO_ROOT / "playbooks" / "files" / "spot_drill_requests.py"
BENCH_DIR = REPO_ROOT / "tests" / "bench"
SERVED_MODEL_NAME = "tiny"
REGION = "us-east-1"
VLLM_HEALTH_TIMEOUT_S = 240.0
VLLM_STOP_TIMEOUT_S = 60.0
WATCHER_START_TIMEOUT_S = 30.0


# ---------------------------------------------------------------------------------------------- local AWS
@dataclasses.dataclass(frozen=True)
class BenchInstance:
    """One "EC2 instance" in moto, behind one target group, maybe in an Auto Scaling group with a hook."""

    instance_id: str
    target_group_arn: str
    port: int
    vpc_id: str
    asg_name: str = ""
    hook_name: str = ""


def aws_client(endpoint_url: str, service: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def provision(
    endpoint_url: str,
    *,
    port: int,
    deregistration_delay_s: int = 5,
    with_asg: bool = False,
    with_target_group: bool = True,
    name: str = "spot",
) -> BenchInstance:
    """VPC, instance role + profile, a running instance (from an ASG with a termination hook when asked),
    and unless with_target_group is false a target group with health check /health and the deregistration delay,
    with the instance registered."""
    ec2, elbv2, iam = (aws_client(endpoint_url, service) for service in ("ec2", "elbv2", "iam"))
    vpc_id = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.42.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"][
        "SubnetId"
    ]
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_role(RoleName=f"{name}-instance", AssumeRolePolicyDocument=json.dumps(trust))
    iam.create_instance_profile(InstanceProfileName=f"{name}-instance")
    iam.add_role_to_instance_profile(InstanceProfileName=f"{name}-instance", RoleName=f"{name}-instance")
    asg_name = hook_name = ""
    if with_asg:
        autoscaling = aws_client(endpoint_url, "autoscaling")
        ec2.create_launch_template(
            LaunchTemplateName=f"{name}-template",
            LaunchTemplateData={
                "ImageId": "ami-12c6146b",
                "InstanceType": "g5.xlarge",
                "IamInstanceProfile": {"Name": f"{name}-instance"},
            },
        )
        asg_name, hook_name = f"{name}-asg", "drain-vllm"
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=asg_name,
            LaunchTemplate={"LaunchTemplateName": f"{name}-template"},
            MinSize=0,
            MaxSize=1,
            DesiredCapacity=1,
            VPCZoneIdentifier=subnet_id,
        )
        autoscaling.put_lifecycle_hook(
            AutoScalingGroupName=asg_name,
            LifecycleHookName=hook_name,
            LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
            HeartbeatTimeout=300,
        )
        instance_id = autoscaling.describe_auto_scaling_instances()["AutoScalingInstances"][0]["InstanceId"]
        # moto does not give instances launched by a group their template's instance profile; AWS does.
        ec2.associate_iam_instance_profile(IamInstanceProfile={"Name": f"{name}-instance"}, InstanceId=instance_id)
    else:
        instance_id = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet_id,
            InstanceType="g5.xlarge",
            IamInstanceProfile={"Name": f"{name}-instance"},
            InstanceMarketOptions={"MarketType": "spot"},
        )["Instances"][0]["InstanceId"]
    if not with_target_group:
        return BenchInstance(instance_id, "", port, vpc_id, asg_name, hook_name)
    target_group_arn = elbv2.create_target_group(
        Name=f"{name}-vllm",
        Protocol="HTTP",
        Port=port,
        VpcId=vpc_id,
        HealthCheckPath="/health",
        TargetType="instance",
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(
        TargetGroupArn=target_group_arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(deregistration_delay_s)}],
    )
    elbv2.register_targets(TargetGroupArn=target_group_arn, Targets=[{"Id": instance_id, "Port": port}])
    return BenchInstance(instance_id, target_group_arn, port, vpc_id, asg_name, hook_name)


def target_state(endpoint_url: str, instance: BenchInstance, elbv2: Any = None) -> str:
    elbv2 = elbv2 or aws_client(endpoint_url, "elbv2")
    answer = elbv2.describe_target_health(
        TargetGroupArn=instance.target_group_arn, Targets=[{"Id": instance.instance_id, "Port": instance.port}]
    )
    (description,) = answer["TargetHealthDescriptions"]
    return description["TargetHealth"]["State"]


def register(endpoint_url: str, instance: BenchInstance) -> None:
    aws_client(endpoint_url, "elbv2").register_targets(
        TargetGroupArn=instance.target_group_arn, Targets=[{"Id": instance.instance_id, "Port": instance.port}]
    )


# ---------------------------------------------------------------------------------------------- vLLM
def _last_line(command: list[str]) -> str:
    completed = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, timeout=1800)
    return completed.stdout.strip().splitlines()[-1]


def bench_vllm_venv() -> Path:
    return Path(os.environ.get("LLMSERVE_VLLM_VENV") or _last_line([str(BENCH_DIR / "vllm_venv.sh")]))


def bench_tiny_model() -> Path:
    return Path(os.environ.get("LLMSERVE_TINY_MODEL") or _last_line([str(BENCH_DIR / "models.sh"), "tiny"]))


VLLM_NICE = 10


def lower_session_priority(pid: int, nice: int) -> bool:
    """Give the session of `pid` (its own, from start_new_session) the scheduling weight of `nice`.

    With sched_autogroup (Linux's default on desktops and on this machine) each session is a scheduling group of
    equal weight, and a process's nice ranks it only inside its own session: vLLM at nice 10 in a session of its own
    still got as much CPU as the watcher's session, and the watcher stalled for seconds (spot drill: notice ->
    deregistered p95 9.1 s, 0.6 s with this). On a host, systemd puts each unit in its own cgroup, where CPUWeight
    plays this part (the watcher's unit sets it). Lowering a group's priority needs no privilege in most kernels;
    False when the kernel has no autogroups or refuses."""
    try:
        with open(f"/proc/{pid}/autogroup", "w", encoding="ascii") as handle:
            handle.write(str(nice))
        return True
    except OSError:
        return False


class VllmServer:
    """vLLM on CPU serving the tiny model on 127.0.0.1, drain-safe: --shutdown-timeout and SIGTERM to the main
    process only (KillMode=mixed's behaviour). A reaper thread records the moment the main process exits."""

    def __init__(self, workdir: Path, port: int, shutdown_timeout_s: int = 60):
        self.workdir = workdir
        self.port = port
        self.shutdown_timeout_s = shutdown_timeout_s
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"vllm-{port}.log"
        self.process: subprocess.Popen | None = None
        self.exited_at: float | None = None
        self._reaper: threading.Thread | None = None

    def start(self) -> float:
        venv, model = bench_vllm_venv(), bench_tiny_model()
        env = dict(
            os.environ,
            VLLM_CPU_KVCACHE_SPACE="1",
            VLLM_CACHE_ROOT=str(self.workdir / "vllm-cache"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        # nice 10: on AWS, IMDS and the ELB API answer from elsewhere; here their stand-ins share two cores with
        # vLLM's busy CPU threads, which would otherwise delay every answer by seconds.
        command = [
            "nice",
            "-n",
            str(VLLM_NICE),
            str(venv / "bin" / "python"),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model),
            "--served-model-name",
            SERVED_MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--enforce-eager",
            "--dtype",
            "bfloat16",
            "--shutdown-timeout",
            str(self.shutdown_timeout_s),
        ]
        self.exited_at = None
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = self.process
        lower_session_priority(process.pid, VLLM_NICE)

        def reap() -> None:
            process.wait()
            self.exited_at = time.time()

        self._reaper = threading.Thread(target=reap, name=f"vllm-reaper-{self.port}", daemon=True)
        self._reaper.start()

        def healthy() -> bool:
            if self.exited_at is not None:
                raise RuntimeError(f"vLLM exited with {process.returncode}:\n{self.log_tail()}")
            return http_get(self.url + "/health", timeout_s=2)[0] == 200

        return poll(healthy, timeout_s=VLLM_HEALTH_TIMEOUT_S, what=f"{self.url}/health 200", interval_s=0.5,
                    detail=self.log_tail)[1]

    @property
    def running(self) -> bool:
        return self.process is not None and self.exited_at is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop_command(self) -> list[str]:
        """What the watcher runs on the host in place of `systemctl stop vllm`: SIGTERM to the main process,
        then wait until it is gone (this process reaps it, so `kill -0` fails once it has exited)."""
        pid = self.pid
        script = f"kill -TERM {pid} 2>/dev/null; while kill -0 {pid} 2>/dev/null; do sleep 0.05; done"
        return ["/bin/sh", "-c", script]

    def stop(self) -> None:
        if self.process is None or self.exited_at is not None:
            self._kill_group()
            return
        with_signal(self.process.pid, signal.SIGTERM)
        if self._reaper is not None:
            self._reaper.join(VLLM_STOP_TIMEOUT_S)
        self._kill_group()

    def _kill_group(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # engine/worker children outliving the main process
            except ProcessLookupError:
                pass
            if self._reaper is not None:
                self._reaper.join(VLLM_STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def in_flight(self) -> tuple[int, int]:
        status, body = http_get(self.url + "/metrics", timeout_s=5)
        if status != 200:
            return (-1, -1)
        running = waiting = 0
        for line in body.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name == "vllm:num_requests_running":
                running += int(float(line.rsplit(" ", 1)[1]))
            elif name == "vllm:num_requests_waiting":
                waiting += int(float(line.rsplit(" ", 1)[1]))
        return running, waiting


def with_signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def http_get(url: str, timeout_s: float) -> tuple[int, str]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------- requests
@dataclasses.dataclass
class StreamResult:
    index: int
    chunks: int = 0
    done: bool = False  # ended with `data: [DONE]`
    error_chunks: int = 0  # in-band error objects, what vLLM sends when it aborts a stream
    finish_reasons: list = dataclasses.field(default_factory=list)
    exception: str = ""
    status: int = 0
    first_chunk_at: float = 0.0
    ended_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.done and not self.error_chunks and not self.exception


class StreamingLoad:
    """N concurrent streaming chat completions with ignore_eos, so each runs for exactly max_tokens."""

    def __init__(self, base_url: str, count: int, max_tokens: int, timeout_s: float = 300.0):
        self.base_url = base_url
        self.results = [StreamResult(index) for index in range(count)]
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self._threads = [threading.Thread(target=self._one, args=(result,), daemon=True) for result in self.results]

    def _one(self, result: StreamResult) -> None:
        parts = urllib.parse.urlsplit(self.base_url)
        body = json.dumps(
            {
                "model": SERVED_MODEL_NAME,
                "messages": [{"role": "user", "content": f"request {result.index}"}],
                "max_tokens": self.max_tokens,
                "ignore_eos": True,
                "stream": True,
            }
        )
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout_s)
        try:
            connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            result.status = response.status
            for raw in response:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    result.done = True
                    continue
                result.chunks += 1
                result.first_chunk_at = result.first_chunk_at or time.time()
                chunk = json.loads(data)
                if "error" in chunk or chunk.get("object") == "error":
                    result.error_chunks += 1
                for choice in chunk.get("choices", []):
                    if choice.get("finish_reason"):
                        result.finish_reasons.append(choice["finish_reason"])
        except (OSError, http.client.HTTPException, ValueError) as error:
            result.exception = f"{error.__class__.__name__}: {error}"
        finally:
            result.ended_at = time.time()
            connection.close()

    def start(self) -> "StreamingLoad":
        for thread in self._threads:
            thread.start()
        return self

    def wait_all_streaming(self, timeout_s: float) -> None:
        """Until every request has its first chunk and none has ended: all are in flight."""
        def all_streaming() -> bool:
            if any(result.ended_at for result in self.results):
                raise RuntimeError(f"a request ended before all were streaming: {self.results}")
            return all(result.first_chunk_at for result in self.results)

        wait_until(all_streaming, timeout_s, f"all {len(self.results)} requests streaming", interval_s=0.01,
                   detail=lambda: repr(self.results))

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    @property
    def completed(self) -> int:
        return sum(result.ok for result in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.completed

    @property
    def last_ended_at(self) -> float:
        return max(result.ended_at for result in self.results)


class Stopwatch:
    """spot_drill_monitor.py watch against moto: started (and seeing the target in service) before the notice,
    it reports the first moment the target was out of service."""

    def __init__(self, workdir: Path, aws_url: str, instance: BenchInstance, timeout_s: float = 60.0, nice: int = 0):
        self.ready = workdir / f"stopwatch-{time.monotonic_ns()}.ready"
        command = ["nice", "-n", str(nice), sys.executable, str(STOPWATCH), "watch", "--instance-id", instance.instance_id,
                   "--target-group-arn", instance.target_group_arn, "--port", str(instance.port),
                   "--region", REGION, "--endpoint-url", aws_url, "--timeout", str(timeout_s),
                   "--ready-file", str(self.ready)]
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        self.timeout_s = timeout_s
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_until(lambda: self.ready.exists() or still_running(self.process, "the stopwatch"), 30,
                       "the stopwatch's ready file", interval_s=0.02)
        except AssertionError as error:
            self.process.kill()
            out, err = self.process.communicate(timeout=10)
            raise RuntimeError(f"stopwatch did not start ({error}): {out} {err}") from None

    def result(self) -> float | None:
        out, err = self.process.communicate(timeout=self.timeout_s + 10)
        if self.process.returncode not in (0, 1):
            raise RuntimeError(f"stopwatch failed ({self.process.returncode}): {out} {err}")
        return json.loads(out)["deregistered_at"]


# ---------------------------------------------------------------------------------------------- the watcher
def parse_event_line(line: str) -> dict[str, str] | None:
    """A watcher log line as a dict: time, event, then its key=value fields (strings)."""
    parts = shlex.split(line)
    if len(parts) < 2 or not parts[1].startswith("event="):
        return None
    fields = {"time": parts[0]}
    for part in parts[1:]:
        key, _separator, value = part.partition("=")
        fields[key] = value
    return fields


def event_epoch(event: dict[str, str]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def notice_reads_between(imds_requests: list[dict], since: float, until: float) -> int:
    """How many IMDS reads answered a spot instance-action (200) from `since` to `until` (epoch seconds).

    None from the watcher's `notice` event to its `deregistered` event means it deregistered in the poll cycle that
    saw the notice, not a cycle later: the promptness claim, whatever the load (the seconds go to the benchmark)."""
    return sum(
        1
        for entry in imds_requests
        if entry["method"] == "GET"
        and entry["path"].rstrip("/").endswith("/spot/instance-action")
        and entry["status"] == 200
        and since <= entry["at"] < until
    )


class WatcherProcess:
    """llmserve_spot_watcher.py run as its own process with a rendered config, its stdout in a log file.

    AWS credentials are removed from its environment: it gets the instance role's from the IMDS emulator,
    as on EC2."""

    def __init__(self, workdir: Path, config: dict[str, Any], python: str = sys.executable, nice: int = 0):
        self.workdir = workdir
        # The role's unit runs the watcher at Nice=-5; the benchmark does the same (needs root), tests need not.
        self.nice = nice
        self.config_path = workdir / "spot-watcher.json"
        self.log_path = workdir / "watcher.log"
        self.state_dir = Path(config["state_dir"])
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.python = python
        self.process: subprocess.Popen | None = None
        self.config_path.write_text(json.dumps(config, indent=1))

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, wait_for: str = "watching") -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["nice", "-n", str(self.nice), self.python, str(WATCHER), "watch", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )
        if wait_for:
            self.wait_for(wait_for, WATCHER_START_TIMEOUT_S, since=offset)

    def run_command(self, command: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.python, str(WATCHER), command, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout_s,
            check=False,
        )

    def events(self, since: int = 0) -> list[dict[str, str]]:
        if not self.log_path.exists():
            return []
        text = self.log_path.read_bytes()[since:].decode("utf-8", "replace")
        return [event for line in text.splitlines() if (event := parse_event_line(line))]

    def named(self, name: str) -> list[dict[str, str]]:
        return [event for event in self.events() if event["event"] == name]

    def wait_for(self, name: str, timeout_s: float, since: int = 0, count: int = 1) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [event for event in self.events(since) if event["event"] == name]
            if len(found) >= count:
                return found[count - 1]
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"watcher exited {self.process.returncode} before {name}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"no event={name} after {timeout_s} s:\n{self.log_tail()}")

    def state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "state.json").read_text())

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            with_signal(self.process.pid, signum)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with_signal(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout_s)
        return self.process.returncode


def watcher_config(
    *,
    imds_url: str,
    aws_url: str,
    instance: BenchInstance,
    vllm_port: int,
    state_dir: Path,
    stop_command: list[str],
    **overrides: Any,
) -> dict[str, Any]:
    """The configuration the role renders, pointed at the bench (IMDS emulator, moto, vLLM's port)."""
    config = {
        "target_group_arns": [instance.target_group_arn],
        "target_port": instance.port,
        "deregistration_delay_s": 5.0,
        "imds_endpoint": imds_url,
        "imds_timeout_s": 1.0,
        "poll_interval_s": 1.0,
        "drain_check_interval_s": 0.25,
        "aws_endpoint_url": aws_url,
        "vllm_health_url": f"http://127.0.0.1:{vllm_port}/health",
        "vllm_metrics_url": f"http://127.0.0.1:{vllm_port}/metrics",
        "state_dir": str(state_dir),
        "stop_command": stop_command,
        "stop_margin_s": 20.0,
    }
    if instance.asg_name:
        config.update(asg_name=instance.asg_name, lifecycle_hook_name=instance.hook_name)
    config.update(overrides)
    return config


class ImdsEmulatorProcess:
    """tests/bench/imds_emulator.py as a process of its own, at a priority of its own.

    On EC2, IMDS answers from the Nitro card, not from the instance's CPUs. In the benchmark's own process its
    threads would share a GIL and two cores with the bench and its load; here it gets the watcher's priority, so a
    late answer is the watcher's or the machine's, not the bench's. Same API as ImdsEmulator where the bench uses it."""

    def __init__(self, workdir: Path, instance_id: str, aws_url: str, nice: int = 0):
        port_file = workdir / f"imds-{time.monotonic_ns()}.port"
        command = ["nice", "-n", str(nice), sys.executable, str(BENCH_DIR / "imds_emulator.py"), "--port", "0",
                   "--port-file", str(port_file), "--instance-id", instance_id, "--aws-endpoint-url", aws_url]
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        wait_until(lambda: port_file.exists() or self.process.poll() is not None, 30, "the IMDS emulator's port")
        if self.process.poll() is not None:
            raise RuntimeError(f"IMDS emulator exited: {self.process.stderr.read().decode()[-2000:]}")
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def requests(self) -> list[dict]:
        status, body = http_get(self.url + "/_emulator/requests", timeout_s=10)
        if status != 200:
            raise RuntimeError(f"IMDS emulator request log: HTTP {status}")
        return json.loads(body)

    def imdsv1_requests(self) -> list[dict]:
        return [entry for entry in self.requests() if entry["method"] == "GET" and not entry["had_token"]]

    def stop(self) -> None:
        with_signal(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            with_signal(self.process.pid, signal.SIGKILL)
            self.process.wait(15)


def first_notice_answer(imds_requests: list[dict], since: float) -> float | None:
    """When IMDS first answered a spot instance-action with the notice (200) at or after `since` (epoch)."""
    times = [
        entry["at"]
        for entry in imds_requests
        if entry["method"] == "GET" and entry["path"].rstrip("/").endswith("/spot/instance-action")
        and entry["status"] == 200 and entry["at"] >= since
    ]
    return min(times, default=None)


# ---------------------------------------------------------------------------------------------- the drill
@dataclasses.dataclass
class DrillResult:
    notice_at: float
    deregistered_at: float | None  # first moment moto reported the target draining/unused
    requests_drained_at: float | None  # the watcher's requests_drained event
    vllm_stop_requested_at: float | None
    vllm_exited_at: float | None
    last_request_ended_at: float
    in_flight_at_notice: int
    completed: int
    failed: int
    error_chunks: int
    results: list

    @property
    def notice_to_deregistered_s(self) -> float | None:
        return None if self.deregistered_at is None else self.deregistered_at - self.notice_at

    @property
    def drain_s(self) -> float | None:
        """Notice to vLLM stopped (the drain as the instance sees it)."""
        end = self.vllm_exited_at or self.vllm_stop_requested_at
        return None if end is None else end - self.notice_at

    def summary(self) -> dict[str, Any]:
        return {
            "notice_to_deregistered_s": self.notice_to_deregistered_s,
            "drain_s": self.drain_s,
            "in_flight_at_notice": self.in_flight_at_notice,
            "requests_completed": self.completed,
            "requests_failed": self.failed,
            "error_chunks": self.error_chunks,
        }


def run_drill(
    *,
    imds_url: str,
    aws_url: str,
    instance: BenchInstance,
    vllm: VllmServer,
    watcher: WatcherProcess,
    requests: int = 16,
    max_tokens: int = 1500,
    notice_in_s: int = 120,
    finish_event: str = "vllm_stopped",
    stopwatch_nice: int = 0,
) -> DrillResult:
    """The drill as playbooks/drill_spot_interruption.yml runs it on the bench, with the same two helpers as
    processes of their own: the stopwatch polls moto, and the request generator streams `requests` completions
    and posts the spot notice to the emulator the moment every stream is flowing."""
    log_offset = watcher.log_path.stat().st_size
    # The stopwatch stands for the control node: off the instance on AWS.
    stopwatch = Stopwatch(watcher.workdir, aws_url, instance, nice=stopwatch_nice)
    tag = time.monotonic_ns()
    ready, out = watcher.workdir / f"drill-{tag}.ready", watcher.workdir / f"drill-{tag}.json"
    generator = subprocess.run(
        [sys.executable, str(GENERATOR), "--url", vllm.url, "--model", SERVED_MODEL_NAME,
         "--count", str(requests), "--max-tokens", str(max_tokens), "--ready-file", str(ready), "--out", str(out),
         "--inject-url", f"{imds_url}/_emulator/spot-action", "--notice-seconds", str(notice_in_s)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if not out.exists():
        raise RuntimeError(f"request generator failed ({generator.returncode}): {generator.stderr[-2000:]}")
    report = json.loads(out.read_text())
    deregistered_at = stopwatch.result()
    finished = watcher.wait_for(finish_event, timeout_s=120, since=log_offset)
    events = {event["event"]: event for event in watcher.events(log_offset)}
    drained = events.get("requests_drained")
    requested = events.get("vllm_stop_requested")
    return DrillResult(
        notice_at=report["notice_at"],
        deregistered_at=deregistered_at,
        requests_drained_at=event_epoch(drained) if drained else None,
        vllm_stop_requested_at=event_epoch(requested) if requested else event_epoch(finished),
        vllm_exited_at=vllm.exited_at,
        last_request_ended_at=report["last_ended_at"],
        in_flight_at_notice=report["in_flight_at_notice"],
        completed=report["completed"],
        failed=report["failed"],
        error_chunks=report["error_chunks"],
        results=report["results"],
    )


def main(argv: list[str] | None = None) -> int:
    """`provision`: the instance (and its role) in a running moto, printed as JSON; for molecule's prepare."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=["provision"])
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="spot")
    parser.add_argument("--no-target-group", action="store_true", help="leave the target group to the role")
    args = parser.parse_args(argv)
    instance = provision(
        args.endpoint_url, port=args.port, name=args.name, with_target_group=not args.no_target_group
    )
    print(json.dumps(dataclasses.asdict(instance)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
