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
