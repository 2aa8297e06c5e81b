"""The bench's EC2: one systemd host container per running llmserve instance in the local AWS.

On AWS, RunInstances or a Spot Fleet makes machines; on the bench, this launcher makes each running instance of the
local AWS (moto with the project's extensions) that `inventories/aws_ec2.yml` would list a systemd host container
(the bench image of tests/bench/host_image.sh), and removes the container once the instance is gone. Which
instances count comes from the inventory file itself (its `regions` and `filters`), and how a host container runs
from the molecule platform of .config/molecule/config.yml, so the launcher, the inventory and every scenario agree.

A container is named after its instance (`llmserve-ec2-<instance id>`) and labelled with the launcher's id, so one
launcher only ever removes its own containers. inventories/bench_fleet.yml (an overlay on the dynamic inventory)
derives the same name, so `ansible -i inventories/aws_ec2.yml -i inventories/bench_fleet.yml` reaches the hosts
through community.docker.docker with their EC2 identity.

Each host also gets its own instance metadata: an IMDSv2 emulator (tests/bench/imds_emulator.py) synced from the
instance, on 127.0.0.1:IMDS_PORT_BASE + port_offset(private address); the overlay hands hosts that URL as
llmserve_bench_imds_url. The containers share this machine's network (the molecule platform's network_mode: host),
so per-host services take ports from the host's private address (see port_offset and the overlay).

    python tests/bench/fleet_launcher.py watch --endpoint-url URL --launcher-id ID [--ready-file F] [--pid-file P]
    python tests/bench/fleet_launcher.py once  --endpoint-url URL --launcher-id ID
    python tests/bench/fleet_launcher.py clean --launcher-id ID

As on EC2, an instance's container follows its state: a stopped instance keeps its container, stopped (its root
volume), and a start boots that same container again; the instance store, a tmpfs at INSTANCE_STORE_MOUNT, is empty
after every stop, and is left out of images. CreateImage from an instance (amazon.aws.ec2_ami, playbooks/bake_image.yml)
becomes `docker commit` of its container, tagged with the AMI id (the local AWS reports the image's SourceInstanceId
as AWS does), and an instance launched from that AMI boots from that image.

`watch` reconciles every --interval seconds until SIGTERM/SIGINT and writes --ready-file after its first pass.
Instances are polled, not streamed (EC2 has no change feed): a container follows its instance within one interval
plus the container's start or stop.
"""

import argparse
import dataclasses
import ipaddress
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

if __package__:
    from .imds_emulator import ImdsEmulator
else:  # run as a script: the module sits next to this file
    from imds_emulator import ImdsEmulator

REPO_ROOT = Path(__file__).resolve().parents[2]
MOLECULE_CONFIG = REPO_ROOT / ".config" / "molecule" / "config.yml"
INVENTORY = REPO_ROOT / "inventories" / "aws_ec2.yml"
HOST_IMAGE_SCRIPT = REPO_ROOT / "tests" / "bench" / "host_image.sh"
DEFAULT_CACHE = Path.home() / ".cache" / "llmserve-aws"

CONTAINER_PREFIX = "llmserve-ec2-"  # inventories/bench_fleet.yml composes the same name
IMAGE_REPOSITORY = "llmserve-bench-ami"  # an AMI made from a bench host: IMAGE_REPOSITORY:<ami id>
# The instance store: a tmpfs, so it is blank after every stop and absent from `docker commit`, as on EC2.
INSTANCE_STORE_MOUNT = "/mnt/nvme"
# The instance states that have a container (stopped or stopping ones keep theirs, stopped).
LIVE_STATES = ("pending", "running", "stopping", "stopped")
LAUNCHER_LABEL = "llmserve.bench.launcher"
INSTANCE_LABEL = "llmserve.bench.instance-id"
INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
LAUNCHER_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
# Where the local AWS may be: this launcher must never describe (or act on) a real account.
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

DOCKER_TIMEOUT_S = 60.0  # one docker CLI call (run, stop, rm, ps)
# `docker stop`: systemd's shutdown (RTMIN+3) before SIGKILL, as an instance's ACPI shutdown; time for the
# registration unit to deregister and for vLLM to finish its requests.
STOP_GRACE_S = 40
IMAGE_TIMEOUT_S = 1800.0  # host_image.sh: seconds when cached, a debootstrap (minutes) when not
DEFAULT_INTERVAL_S = 1.0
# Per-host ports on the shared network: vLLM (composed in inventories/bench_fleet.yml) and the instance's IMDS.
VLLM_PORT_BASE = 20000
IMDS_PORT_BASE = 24096

# Keys of a molecule docker platform and the `docker run` flag each becomes; _MOLECULE_ONLY: the image and command
# (placed apart) and what only molecule reads.
_FLAG_OF = {
    "stop_signal": "--stop-signal",
    "cgroupns_mode": "--cgroupns",
    "network_mode": "--network",
    "shm_size": "--shm-size",
    "tmpfs": "--tmpfs",
    "volumes": "--volume",
    "capabilities": "--cap-add",
    "security_opts": "--security-opt",
}
_MOLECULE_ONLY = {"name", "image", "pre_build_image", "pull", "command", "groups"}
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class LauncherError(RuntimeError):
    """A launcher input or docker call that failed; the message names what and how to fix it."""


def container_name(instance_id: str) -> str:
    if not INSTANCE_ID.fullmatch(instance_id):
        raise LauncherError(f"instance id {instance_id!r} is not of the form i-<8 to 17 hex digits>")
    return CONTAINER_PREFIX + instance_id


def port_offset(private_ip: str) -> int:
    """The low 12 bits of the instance's private address: EC2 keeps addresses unique in a VPC, so offsets are
    unique among the hosts of any subnet of /20 or smaller (inventories/bench_fleet.yml composes the same)."""
    return int(ipaddress.IPv4Address(private_ip)) & 0xFFF


def checked_launcher_id(launcher_id: str) -> str:
    if not LAUNCHER_ID.fullmatch(launcher_id):
        raise LauncherError(
            f"launcher id {launcher_id!r}: use 1-63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"
        )
    return launcher_id


def checked_endpoint_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS or parts.port is None:
        raise LauncherError(
            f"endpoint url {url!r}: give the local AWS as http://127.0.0.1:PORT (e.g. .build/moto.url); "
            "the launcher never talks to a real AWS account"
        )
    return url


def _expand(text: str, environ: dict[str, str]) -> str:
    """molecule's ${VAR} and ${VAR:-default}; a variable that is unset and has no default is an error."""

    def value(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if environ.get(name):
            return environ[name]
        if default is not None:
            return default
        raise LauncherError(f"{MOLECULE_CONFIG.name} uses ${{{name}}}, which is not set: export {name}")

    return _VARIABLE.sub(value, text)


def host_run_options(
    config_path: Path = MOLECULE_CONFIG, environ: dict[str, str] | None = None
) -> tuple[list[str], str, list[str]]:
    """(`docker run` options, image, command) of the bench's systemd host, from the shared molecule platform (one
    source of truth for cgroup, tmpfs, shm, capabilities and the cache volume)."""
    environ = dict(os.environ if environ is None else environ)
    environ.setdefault("LLMSERVE_CACHE", str(DEFAULT_CACHE))  # as the bench scripts default it
    (platform,) = yaml.safe_load(config_path.read_text())["platforms"]
    unknown = sorted(set(platform) - set(_FLAG_OF) - _MOLECULE_ONLY)
    if unknown:
        raise LauncherError(f"{config_path}: platform keys {unknown} have no docker run flag; add them to _FLAG_OF")
    options: list[str] = []
    for key, flag in _FLAG_OF.items():
        values = platform.get(key)
        for item in values if isinstance(values, list) else [] if values is None else [values]:
            options += [flag, _expand(str(item), environ)]
    image = _expand(str(platform["image"]), {**environ, "LLMSERVE_BENCH_IMAGE": bench_image(environ)})
    return options, image, shlex.split(_expand(str(platform["command"]), environ))


def bench_image(environ: dict[str, str]) -> str:
    """The bench image: LLMSERVE_BENCH_IMAGE as `make` exports it, else host_image.sh's answer (cached build)."""
    if environ.get("LLMSERVE_BENCH_IMAGE"):
        return environ["LLMSERVE_BENCH_IMAGE"]
    completed = subprocess.run(
        [str(HOST_IMAGE_SCRIPT)], capture_output=True, text=True, timeout=IMAGE_TIMEOUT_S, check=False
    )
    if completed.returncode != 0 or not completed.stdout.strip():
        raise LauncherError(f"{HOST_IMAGE_SCRIPT} failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
    return completed.stdout.strip().splitlines()[-1]


def inventory_scope(inventory: Path = INVENTORY) -> tuple[list[str], list[dict[str, Any]]]:
    """The regions and DescribeInstances filters of the dynamic inventory: the launcher starts what it lists."""
    config = yaml.safe_load(inventory.read_text())
    filters = [
        {"Name": name, "Values": [str(value) for value in (values if isinstance(values, list) else [values])]}
        for name, values in config["filters"].items()
        if name != "instance-state-name"  # the launcher follows every live state (a stopped host keeps its disk)
    ]
    return list(config["regions"]), filters + [{"Name": "instance-state-name", "Values": list(LIVE_STATES)}]


@dataclasses.dataclass(frozen=True)
class Host:
    """A container this launcher made: its name, its instance and docker's state word (running, exited, ...)."""

    name: str
    instance_id: str
    state: str


@dataclasses.dataclass(frozen=True)
class Instance:
    """What the launcher needs of an instance: its private address, AMI and whether it runs (else it is stopped)."""

    private_ip: str
    image_id: str
    running: bool


@dataclasses.dataclass
class Pass:
    """What one reconcile pass did."""

    started: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    stopped: list[str] = dataclasses.field(default_factory=list)
    committed: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Plan:
    """What a pass does: create a container for an instance, boot an existing one again, stop one, remove one."""

    create: list[str] = dataclasses.field(default_factory=list)
    boot: list[Host] = dataclasses.field(default_factory=list)
    stop: list[Host] = dataclasses.field(default_factory=list)
    remove: list[Host] = dataclasses.field(default_factory=list)


def plan(instances: dict[str, Instance], hosts: Iterable[Host]) -> Plan:
    """A container per live instance, in the instance's state: a gone instance's container goes; a running
    instance without one gets one, and its stopped container (a start after a stop, or a host that died) boots
    again; a stopped instance's container is stopped and kept (its root volume)."""
    by_instance = {host.instance_id: host for host in hosts}
    done = Plan()
    for host in sorted(by_instance.values(), key=lambda host: host.name):
        instance = instances.get(host.instance_id)
        if instance is None:
            done.remove.append(host)
        elif instance.running and host.state != "running":
            done.boot.append(host)
        elif not instance.running and host.state == "running":
            done.stop.append(host)
    done.create = sorted(iid for iid, instance in instances.items() if instance.running and iid not in by_instance)
    return done


class Docker:
    """The docker CLI, every call bounded."""

    def __init__(self, executable: str = "docker", timeout_s: float = DOCKER_TIMEOUT_S) -> None:
        self.executable = executable
        self.timeout_s = timeout_s

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [self.executable, *args]
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=self.timeout_s, check=False, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise LauncherError(f"`{shlex.join(command)}` did not finish within {self.timeout_s:.0f} s") from None
        if check and completed.returncode != 0:
            raise LauncherError(f"`{shlex.join(command)}` failed ({completed.returncode}): {completed.stderr.strip()}")
        return completed


class Containers:
    """This launcher's host containers on the Docker daemon, found by its label."""

    def __init__(
        self, launcher_id: str, docker: Docker | None = None, run_options: tuple[list[str], str, list[str]] | None = None
    ) -> None:
        self.launcher_id = checked_launcher_id(launcher_id)
        self.docker = docker or Docker()
        self.run_options = run_options  # host_run_options() on first start: (options, image, command)

    def hosts(self) -> list[Host]:
        listed = self.docker(
            "ps", "--all", "--filter", f"label={LAUNCHER_LABEL}={self.launcher_id}",
            "--format", f'{{{{.Names}}}}\t{{{{.Label "{INSTANCE_LABEL}"}}}}\t{{{{.State}}}}',
        )  # fmt: skip
        return [Host(*line.split("\t")) for line in listed.stdout.splitlines() if line.strip()]

    def start(self, instance_id: str, image_id: str = "") -> str:
        """A new container for the instance, from the image committed for its AMI when there is one."""
        name = container_name(instance_id)
        if self.run_options is None:
            self.run_options = host_run_options()
        options, image, command = self.run_options
        baked = self.baked_image(image_id)
        self.docker("rm", "--force", name, check=False)  # a leftover of an earlier run under the same name
        self.docker(
            "run", "--detach", "--name", name,
            "--label", f"{LAUNCHER_LABEL}={self.launcher_id}", "--label", f"{INSTANCE_LABEL}={instance_id}",
            "--tmpfs", f"{INSTANCE_STORE_MOUNT}:rw,mode=0755", *options, baked or image, *command,
        )  # fmt: skip
        return name

    def boot(self, host: Host) -> None:
        """Start a stopped container again: a booted machine with the same root volume, a blank instance store."""
        self.docker("start", host.name)

    def stop(self, host: Host) -> None:
        """systemd's shutdown in the container, as an instance's stop (ACPI), then SIGKILL after the grace."""
        self.docker("stop", "--time", str(STOP_GRACE_S), host.name)

    def remove(self, host: Host) -> None:
        if host.state == "running":
            self.stop(host)
        self.docker("rm", "--force", host.name)

    def remove_all(self) -> list[str]:
        hosts = self.hosts()
        for host in hosts:
            self.remove(host)
        for image in self.images():
            self.docker("rmi", "--force", image, check=False)
        return [host.name for host in hosts]

    @staticmethod
    def image_tag(image_id: str) -> str:
        return f"{IMAGE_REPOSITORY}:{image_id}"

    def baked_image(self, image_id: str) -> str | None:
        """The image committed for this AMI, if any."""
        if not image_id:
            return None
        tag = self.image_tag(image_id)
        return tag if self.docker("image", "inspect", tag, check=False).returncode == 0 else None

    def images(self) -> list[str]:
        """The images this launcher committed (IMAGE_REPOSITORY:<ami id>)."""
        listed = self.docker(
            "image", "ls", "--filter", f"label={LAUNCHER_LABEL}={self.launcher_id}",
            "--format", "{{.Repository}}:{{.Tag}}",
        )  # fmt: skip
        return [line for line in listed.stdout.split() if line.startswith(IMAGE_REPOSITORY + ":")]

    def commit(self, host: Host, image_id: str) -> str:
        """CreateImage: the container's root file system (tmpfs mounts, the instance store among them, left out)."""
        tag = self.image_tag(image_id)
        self.docker("commit", "--change", f"LABEL {LAUNCHER_LABEL}={self.launcher_id}", host.name, tag)
        return tag

    def systemd_state(self, host: Host) -> str:
        """`systemctl is-system-running` in the container: starting, running, degraded, ... ('' if unreachable)."""
        return self.docker("exec", host.name, "systemctl", "is-system-running", check=False).stdout.strip()

    def instance_ids(self) -> set[str]:
        return {host.instance_id for host in self.hosts()}

    def booted(self, instance_ids: set[str]) -> bool:
        """Exactly these instances have a container, each running with systemd up (`degraded`: a unit that cannot
        run in a container, not a broken host)."""
        hosts = self.hosts()
        if {host.instance_id for host in hosts} != instance_ids or any(host.state != "running" for host in hosts):
            return False
        return all(self.systemd_state(host) in ("running", "degraded") for host in hosts)


class FleetLauncher:
    """Reconciles a set of containers with the local AWS's running llmserve instances."""

    def __init__(
        self,
        endpoint_url: str,
        containers: Containers,
        *,
        inventory: Path = INVENTORY,
        serve_metadata: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.endpoint_url = checked_endpoint_url(endpoint_url)
        self.containers = containers
        self.regions, self.filters = inventory_scope(inventory)
        self.log = log
        self.serve_metadata = serve_metadata
        self.metadata: dict[str, ImdsEmulator] = {}  # instance id -> its IMDS emulator, while it runs
        self._clients: dict[str, Any] = {}  # region -> EC2 client, made once: a pass runs every second
        # AMI ids whose image this launcher committed or found: not asked of docker again in every pass.
        self._baked: set[str] = set()

    def _ec2(self, region: str) -> Any:
        if region not in self._clients:
            self._clients[region] = self._new_ec2(region)
        return self._clients[region]

    def _new_ec2(self, region: str) -> Any:
        import boto3

        return boto3.client(
            "ec2",
            endpoint_url=self.endpoint_url,
            region_name=region,
            aws_access_key_id="testing",  # moto's documented test values, not secrets
            aws_secret_access_key="testing",
        )

    def instances(self) -> dict[str, Instance]:
        """The live instances the dynamic inventory would list once running, in all its regions."""
        found = {}
        for region in self.regions:
            for page in self._ec2(region).get_paginator("describe_instances").paginate(Filters=self.filters):
                found.update(
                    (instance["InstanceId"], Instance(instance["PrivateIpAddress"], instance.get("ImageId", ""),
                                                      instance["State"]["Name"] in ("pending", "running")))
                    for reservation in page["Reservations"]
                    for instance in reservation["Instances"]
                )
        return found

    def images_to_commit(self, hosts: list[Host]) -> list[tuple[Host, str]]:
        """(host, AMI id) for each image made from one of these hosts that has no committed image yet."""
        by_instance = {host.instance_id: host for host in hosts}
        due = []
        for region in self.regions:
            for image in self._ec2(region).describe_images(Owners=["self"])["Images"]:
                host = by_instance.get(image.get("SourceInstanceId", ""))
                if host is None or image["ImageId"] in self._baked:
                    continue
                if self.containers.baked_image(image["ImageId"]):
                    self._baked.add(image["ImageId"])  # committed by an earlier launcher
                else:
                    due.append((host, image["ImageId"]))
        return due

    def metadata_url(self, instance_id: str) -> str | None:
        emulator = self.metadata.get(instance_id)
        return None if emulator is None else emulator.url

    def _start_metadata(self, instance_id: str, private_ip: str) -> None:
        emulator = ImdsEmulator(
            port=IMDS_PORT_BASE + port_offset(private_ip), instance_id=instance_id, aws_endpoint_url=self.endpoint_url
        )
        try:
            emulator.start()  # copies the instance's facts (type, zone, address, lifecycle, role) from the local AWS
        except OSError as error:
            raise LauncherError(f"instance metadata for {instance_id} on port {emulator.port}: {error}") from error
        self.metadata[instance_id] = emulator
        self.log(f"fleet_launcher: instance metadata of {instance_id} at {emulator.url}")

    def _stop_metadata(self, instance_id: str) -> None:
        emulator = self.metadata.pop(instance_id, None)
        if emulator is not None:
            emulator.stop()

    def close(self) -> None:
        """Stop every instance metadata server (the containers stay: `clean` or remove_all removes them)."""
        for instance_id in list(self.metadata):
            self._stop_metadata(instance_id)

    def reconcile(self) -> Pass:
        done = Pass()
        instances = self.instances()
        hosts = self.containers.hosts()
        # Images first: an instance launched from a new AMI in this same pass boots from it.
        for host, image_id in self.images_to_commit(hosts):
            done.committed.append(self.containers.commit(host, image_id))
            self._baked.add(image_id)
            self.log(f"fleet_launcher: committed {host.name} as {done.committed[-1]} (CreateImage {image_id})")
        steps = plan(instances, hosts)
        for host in steps.remove:
            self.containers.remove(host)
            done.removed.append(host.name)
            self.log(f"fleet_launcher: removed {host.name} (instance {host.instance_id}, container {host.state})")
        for host in steps.stop:
            self.containers.stop(host)
            done.stopped.append(host.name)
            self.log(f"fleet_launcher: stopped {host.name} (instance {host.instance_id} stopped)")
        running = {iid: instance for iid, instance in instances.items() if instance.running}
        # Only once its host is down: on EC2 the metadata service answers while an instance shuts down, and the
        # units that stop then (the ALB registration deregistering) need the instance role from it.
        for instance_id in set(self.metadata) - set(running):
            self._stop_metadata(instance_id)
        for instance_id in sorted(set(running) - set(self.metadata)) if self.serve_metadata else []:
            self._start_metadata(instance_id, running[instance_id].private_ip)  # also for an earlier launcher's hosts
        for instance_id in steps.create:
            done.started.append(self.containers.start(instance_id, running[instance_id].image_id))
            self.log(f"fleet_launcher: started {container_name(instance_id)} for instance {instance_id}")
        for host in steps.boot:
            self.containers.boot(host)
            done.started.append(host.name)
            self.log(f"fleet_launcher: booted {host.name} again (instance {host.instance_id} running)")
        return done

    def watch(
        self, stop: threading.Event, interval_s: float = DEFAULT_INTERVAL_S, ready: Callable[[], Any] = lambda: None
    ) -> None:
        """Reconcile every interval_s until `stop` is set; a failed pass is logged and retried next interval."""
        first = True
        try:
            while not stop.is_set():
                try:
                    self.reconcile()
                except Exception as error:  # noqa: BLE001 - a daemon outlives one bad pass (moto restarting)
                    self.log(f"fleet_launcher: pass failed, retrying in {interval_s} s: {error}")
                if first:
                    ready()
                    first = False
                stop.wait(interval_s)
        finally:
            self.close()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["watch", "once", "clean"])
    parser.add_argument("--launcher-id", required=True, help="label value scoping this launcher's containers")
    parser.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL", ""),
        help="the local AWS (default: AWS_ENDPOINT_URL)",
    )
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds between passes (watch)")
    parser.add_argument("--ready-file", type=Path, help="watch: written after the first pass")
    parser.add_argument("--pid-file", type=Path, help="watch: this process's pid, removed on exit")
    parser.add_argument("--remove-on-exit", action="store_true", help="watch: remove the containers when stopped")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        containers = Containers(args.launcher_id)
        if args.command == "clean":  # needs no AWS: containers are found by label
            removed = containers.remove_all()
            print(f"fleet_launcher: removed {len(removed)} container(s): {' '.join(removed) or '-'}", flush=True)
            return 0
        if not args.interval > 0:
            raise LauncherError(f"--interval {args.interval}: give a positive number of seconds")
        launcher = FleetLauncher(
            args.endpoint_url,
            containers,
            serve_metadata=args.command == "watch",  # metadata servers live in the process: only as long as a watch
            log=lambda line: print(line, flush=True),
        )
        if args.command == "once":
            launcher.reconcile()
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        if args.pid_file:
            args.pid_file.write_text(f"{os.getpid()}\n")
        try:
            launcher.watch(stop, args.interval, ready=lambda: args.ready_file and args.ready_file.write_text("ready\n"))
        finally:
            if args.remove_on_exit:
                containers.remove_all()
            if args.pid_file:
                args.pid_file.unlink(missing_ok=True)
        return 0
    except LauncherError as error:
        print(f"fleet_launcher: {error}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
