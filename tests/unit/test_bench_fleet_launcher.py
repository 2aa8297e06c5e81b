"""tests/bench/fleet_launcher.py's pure parts: what to start and remove, names, inputs, and the docker run options
it takes from the shared molecule platform. The docker and AWS side is tests/integration/test_fleet_launcher.py."""

from pathlib import Path

import pytest
import yaml

from tests.bench.fleet_launcher import (
    MOLECULE_CONFIG,
    Host,
    Instance,
    LauncherError,
    Plan,
    checked_endpoint_url,
    checked_launcher_id,
    container_name,
    host_run_options,
    inventory_scope,
    plan,
    port_offset,
)

ENV = {"LLMSERVE_CACHE": "/cache", "LLMSERVE_BENCH_IMAGE": "llmserve-bench-host:abc"}


def _host(instance_id: str, state: str = "running") -> Host:
    return Host(container_name(instance_id), instance_id, state)


def _running(*instance_ids: str, image_id: str = "ami-12c6146b") -> dict[str, Instance]:
    return {instance_id: Instance("10.0.1.4", image_id, True) for instance_id in instance_ids}


def _stopped(*instance_ids: str) -> dict[str, Instance]:
    return {instance_id: Instance("10.0.1.4", "ami-12c6146b", False) for instance_id in instance_ids}


def test_plan_starts_the_missing_and_removes_the_gone():
    hosts = [_host("i-00000001"), _host("i-00000002")]

    steps = plan(_running("i-00000002", "i-00000003"), hosts)

    assert steps == Plan(create=["i-00000003"], remove=[_host("i-00000001")])


def test_plan_boots_again_the_container_of_an_instance_that_runs_again():
    """A start after a stop (or a host that died while its instance runs): the same container, its root volume."""
    stopped = _host("i-00000001", state="exited")

    assert plan(_running("i-00000001"), [stopped]) == Plan(boot=[stopped])


def test_plan_stops_and_keeps_the_container_of_a_stopped_instance():
    host = _host("i-00000001")

    assert plan(_stopped("i-00000001"), [host]) == Plan(stop=[host])
    assert plan(_stopped("i-00000001"), [_host("i-00000001", state="exited")]) == Plan()
    assert plan(_stopped("i-00000002"), []) == Plan()  # stopped before its first boot: nothing to make


def test_plan_is_quiet_when_containers_match_instances():
    assert plan(_running("i-00000001"), [_host("i-00000001")]) == Plan()


@pytest.mark.parametrize(
    ("address", "offset"), [("10.0.1.4", 260), ("10.20.2.5", 517), ("10.0.15.255", 4095), ("10.0.16.0", 0)]
)
def test_port_offset_is_the_low_12_bits_of_the_private_address(address, offset):
    assert port_offset(address) == offset


def test_container_name_is_derived_from_the_instance_id():
    assert container_name("i-0123456789abcdef0") == "llmserve-ec2-i-0123456789abcdef0"


@pytest.mark.parametrize("bad", ["", "i-", "i-XYZ12345", "i-0123456789abcdef0; rm -rf /", "sfr-12345678", "i-1234\n"])
def test_container_name_rejects_what_is_not_an_instance_id(bad):
    with pytest.raises(LauncherError, match="instance id"):
        container_name(bad)


@pytest.mark.parametrize("bad", ["", "-x", "Upper", "a" * 64, "a b", "a\tb", "a/b"])
def test_launcher_id_grammar(bad):
    with pytest.raises(LauncherError, match="launcher id"):
        checked_launcher_id(bad)


@pytest.mark.parametrize(
    "url",
    ["", "https://127.0.0.1:5000", "http://ec2.us-east-1.amazonaws.com", "http://127.0.0.1", "http://10.0.0.1:80"],
)
def test_endpoint_must_be_the_local_aws(url):
    with pytest.raises(LauncherError, match="never talks to a real AWS"):
        checked_endpoint_url(url)


def test_run_options_come_from_the_shared_molecule_platform():
    (platform,) = yaml.safe_load(MOLECULE_CONFIG.read_text())["platforms"]

    options, image, command = host_run_options(environ=ENV)

    pairs = set(zip(options[::2], options[1::2]))
    assert ("--cgroupns", platform["cgroupns_mode"]) in pairs
    assert ("--network", platform["network_mode"]) in pairs
    assert ("--shm-size", platform["shm_size"]) in pairs
    assert ("--stop-signal", platform["stop_signal"]) in pairs
    assert {("--tmpfs", path) for path in platform["tmpfs"]} <= pairs
    assert ("--volume", "/cache:/cache:ro") in pairs
    assert (image, command) == ("llmserve-bench-host:abc", [platform["command"]])


def test_a_platform_key_without_a_flag_fails_instead_of_being_dropped(tmp_path: Path):
    config = yaml.safe_load(MOLECULE_CONFIG.read_text())
    config["platforms"][0]["privileged"] = True
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))

    with pytest.raises(LauncherError, match=r"\['privileged'\] have no docker run flag"):
        host_run_options(path, environ=ENV)


def test_an_unset_variable_without_default_is_named(tmp_path: Path):
    config = yaml.safe_load(MOLECULE_CONFIG.read_text())
    config["platforms"][0]["volumes"].append("${LLMSERVE_NOT_SET}:/x:ro")
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))

    with pytest.raises(LauncherError, match="export LLMSERVE_NOT_SET"):
        host_run_options(path, environ=ENV)


def test_scope_is_the_dynamic_inventory_s_regions_and_filters():
    regions, filters = inventory_scope()

    assert "us-east-1" in regions
    assert {"Name": "tag-key", "Values": ["llmserve:role"]} in filters
    # Every live state: a stopped instance keeps its (stopped) container, as its root volume.
    assert {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]} in filters
    assert [f for f in filters if f["Name"] == "instance-state-name"] == filters[-1:]
