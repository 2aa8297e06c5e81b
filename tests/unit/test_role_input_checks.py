"""The roles' own input checks (assert tasks) for values that reach unit files, rendered with Ansible's templar.

Rows with a trailing newline are the ones a `$`-anchored pattern let through; a newline in a unit starts a new
directive (ExecStartPre=+... runs as root).
"""

from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible.template import trust_as_template

from ansible_collections.llmserve.aws.plugins.test.loopback_host import TestModule as LoopbackTests

ROLES = Path(__file__).resolve().parents[2] / "roles"


def checks(role, tasks_file, name_part):
    tasks = yaml.safe_load((ROLES / role / "tasks" / tasks_file).read_text())
    task = next(task for task in tasks if name_part in task["name"])
    return task["ansible.builtin.assert"]["that"]


def passes(role, conditions, **overrides):
    variables = dict(yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()))
    for name, value in (yaml.safe_load((ROLES / role / "vars" / "main.yml").read_text()) or {}).items():
        variables[name] = trust_as_template(value) if isinstance(value, str) else value
    variables.update(overrides)
    templar = Templar(loader=DataLoader(), variables=variables)
    # This collection's own tests, which ansible-playbook finds through its collection loader (not set up here).
    templar._engine.environment.tests.update({"llmserve.aws." + name: test
                                             for name, test in LoopbackTests().tests().items()})
    return all(templar.template(trust_as_template("{{ %s }}" % condition)) in (True, "True")
               for condition in conditions)


SPOT = checks("spot_interruption", "validate.yml", "units")
VLLM = checks("vllm_service", "main.yml", "user, group and venv")


@pytest.mark.parametrize("overrides, valid", [
    ({}, True), ({"spot_interruption_vllm_unit": "vllm-8b.service"}, True),
    ({"spot_interruption_vllm_unit": "vllm.service\nExecStartPre=+/bin/id"}, False),
    ({"spot_interruption_vllm_unit": "vllm.service\n"}, False), ({"spot_interruption_vllm_unit": "vllm"}, False),
    ({"spot_interruption_user": "llmserve-spot\n"}, False), ({"spot_interruption_user": "root user"}, False),
    ({"spot_interruption_install_dir": "/opt/x y"}, False), ({"spot_interruption_install_dir": "/opt/../etc"}, False),
    ({"spot_interruption_install_dir": "opt/x"}, False), ({"spot_interruption_python": "/usr/bin/python3\n"}, False),
    ({"spot_interruption_imds_endpoint": "http://169.254.169.254\n"}, False),
    ({"spot_interruption_imds_endpoint": "http://127.0.0.1:18100"}, True),
])
def test_spot_interruption_unit_values(overrides, valid):
    assert passes("spot_interruption", SPOT, **overrides) == valid


@pytest.mark.parametrize("overrides, valid", [
    ({}, True), ({"vllm_service_group": "video"}, True),
    ({"vllm_service_group": "vllm\nExecStartPre=+/bin/id"}, False), ({"vllm_service_user": "vllm\n"}, False),
    ({"vllm_service_user": "Vllm"}, False), ({"vllm_service_venv": "/opt/vllm/../venv"}, False),
    ({"vllm_service_venv": "/opt/my venv"}, False), ({"vllm_service_python": "python3"}, False),
])
def test_vllm_service_user_group_and_paths(overrides, valid):
    assert passes("vllm_service", VLLM, **overrides) == valid


VLLM_API_KEY = checks("vllm_service", "main.yml", "asks for an API key")


@pytest.mark.parametrize("overrides, valid", [
    ({}, False), ({"vllm_service_host": "::"}, False), ({"vllm_service_host": "10.0.1.7"}, False),
    ({"vllm_service_host": "ip-10-0-1-7.ec2.internal"}, False), ({"vllm_service_api_key": ""}, False),
    ({"vllm_service_api_key": "sk-1"}, True), ({"vllm_service_allow_no_api_key": True}, True),
    ({"vllm_service_host": "127.0.0.1"}, True), ({"vllm_service_host": "127.8.9.10"}, True),
    ({"vllm_service_host": "::1"}, True), ({"vllm_service_host": "localhost"}, True),
    ({"vllm_service_state": "absent"}, True),
])
def test_vllm_service_needs_an_api_key_beyond_loopback(overrides, valid):
    assert passes("vllm_service", VLLM_API_KEY, **overrides) == valid
