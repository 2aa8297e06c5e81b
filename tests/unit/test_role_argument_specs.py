"""Every role: defaults/main.yml and meta/argument_specs.yml describe the same variables (one source of truth,
mirrored), public variables carry the role's prefix and derived ones an underscore."""

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
ROLE_NAMES = sorted(path.parent.parent.name for path in ROLES.glob("*/meta/argument_specs.yml"))
PYTHON_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "path": str, "list": list, "dict": dict}


def load(role, relative):
    path = ROLES / role / relative
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def test_every_role_has_an_argument_spec():
    assert ROLE_NAMES == sorted(path.name for path in ROLES.iterdir() if (path / "tasks").is_dir())


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_defaults_and_argument_specs_agree(role):
    defaults = load(role, "defaults/main.yml")
    options = load(role, "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    required = {name for name, spec in options.items() if spec.get("required")}
    assert set(defaults) | required == set(options)
    for name in required:
        assert name not in defaults and "default" not in options[name], name
    for name, default in defaults.items():
        spec = options[name]
        assert spec.get("default") == default, name
        assert spec["description"], name
        if default is not None:
            assert isinstance(default, PYTHON_TYPES[spec["type"]]), (name, default, spec["type"])
            assert not isinstance(default, bool) or spec["type"] == "bool", name  # bool is an int too
        if "choices" in spec:
            # Ansible validates the default against the choices too: a null default there fails every run.
            assert default in spec["choices"], (name, default)


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_public_variables_are_prefixed_and_derived_ones_underscored(role):
    assert all(name.startswith(role + "_") for name in load(role, "defaults/main.yml"))
    assert all(name.startswith("_" + role + "_") for name in load(role, "vars/main.yml"))


OS_FAMILIES = {"Debian", "RedHat"}  # Debian 12, Ubuntu 22.04/24.04; Amazon Linux 2023


ROLES_WITH_OS_VARS = sorted({path.parent.parent.name for path in ROLES.glob("*/vars/*.yml") if path.stem != "main"})


def test_the_roles_that_differ_by_os_say_so():
    assert ROLES_WITH_OS_VARS == ["python_venv", "vllm_service"]


@pytest.mark.parametrize("role", ROLES_WITH_OS_VARS)
def test_os_family_vars_name_the_same_derived_variables(role):
    """A role with OS differences (loaded by llmserve.aws.python_venv's os_vars) has a file for every supported
    family, and each defines the same underscored names, so no family lacks one."""
    family_files = {path.stem: path for path in (ROLES / role / "vars").glob("*.yml") if path.stem != "main"}
    assert set(family_files) == OS_FAMILIES, role
    names = {family: set(yaml.safe_load(path.read_text())) for family, path in family_files.items()}
    assert len({frozenset(found) for found in names.values()}) == 1, names
    assert all(name.startswith("_" + role + "_") for name in names["Debian"])
