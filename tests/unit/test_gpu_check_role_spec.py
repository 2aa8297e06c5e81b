"""roles/gpu_check: defaults/main.yml and meta/argument_specs.yml describe the same variables, and the tasks use
no public variable that is not there."""

import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "gpu_check"
# Variables the role sets itself (register / set_fact), so they have no default.
SET_BY_ROLE = {"gpu_check_validation", "gpu_check_persistence", "gpu_check_facts"}


def load(relative):
    return yaml.safe_load((ROLE / relative).read_text())


def test_public_variables_are_prefixed():
    assert all(name.startswith("gpu_check_") for name in load("defaults/main.yml"))
    assert all(name.startswith("_gpu_check_") for name in load("vars/main.yml"))


def test_tasks_use_only_documented_variables():
    defaults = set(load("defaults/main.yml"))
    derived = set(load("vars/main.yml"))
    used = set()
    for path in (ROLE / "tasks").glob("*.yml"):
        used |= set(re.findall(r"\b_?gpu_check_[a-z_]+\b", path.read_text()))
    used |= set(re.findall(r"\b_?gpu_check_[a-z_]+\b", (ROLE / "vars" / "main.yml").read_text()))
    unknown = used - defaults - derived - SET_BY_ROLE
    assert unknown == set()
    assert defaults - used == set(), "defaults no task reads"
