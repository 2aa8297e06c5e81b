"""roles/vllm_service: defaults/main.yml and meta/argument_specs.yml describe the same variables, the tasks use
no variable that is not there, and the role passes every vllm_launch option it documents."""

import re
from pathlib import Path

import yaml

from ansible_collections.llmserve.aws.plugins.modules import vllm_launch

ROLE = Path(__file__).resolve().parents[2] / "roles" / "vllm_service"
REQUIRED = {"vllm_service_model"}
# Variables the role sets itself (register / set_fact / include vars), so they have no default.
SET_BY_ROLE = {"vllm_service_launch", "vllm_service_facts", "vllm_service_installed_version"}


def load(relative):
    return yaml.safe_load((ROLE / relative).read_text())


def test_secrets_are_no_log_in_the_spec():
    options = load("meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    for name in ("vllm_service_api_key", "vllm_service_hf_token", "vllm_service_secret_environment"):
        assert options[name]["no_log"] is True, name


def test_public_variables_are_prefixed():
    assert all(name.startswith("vllm_service_") for name in load("defaults/main.yml"))
    assert all(name.startswith("_vllm_service_") for name in load("vars/main.yml"))


def test_tasks_use_only_documented_variables():
    defaults = set(load("defaults/main.yml")) | REQUIRED
    # vars/main.yml and the OS family files (vars/Debian.yml, vars/RedHat.yml) the role loads.
    derived = set().union(*(yaml.safe_load(path.read_text()) for path in (ROLE / "vars").glob("*.yml")))
    used = set()
    registered = set()
    for path in list((ROLE / "tasks").glob("*.yml")) + [ROLE / "handlers" / "main.yml", ROLE / "vars" / "main.yml"]:
        text = path.read_text()
        used |= set(re.findall(r"\b_?vllm_service_[a-z_]+\b", text))
        registered |= set(re.findall(r"register: (_?vllm_service_[a-z_]+)", text))
        registered |= set(re.findall(r"^\s+(_vllm_service_[a-z_]+):", text, re.MULTILINE))
    unknown = used - defaults - derived - SET_BY_ROLE - registered
    assert unknown == set()
    assert defaults - used == set(), "defaults no task reads"


def test_the_launch_task_passes_every_module_option():
    launch = yaml.safe_load((ROLE / "tasks" / "launch.yml").read_text())
    arguments = launch[0]["llmserve.aws.vllm_launch"]
    assert set(arguments) == set(vllm_launch.ARGUMENT_SPEC)
