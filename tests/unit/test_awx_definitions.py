"""The AWX definitions as data: the survey, the job templates and the execution environment.

The survey rules are those AWX's API applies when a survey is posted (awx/api/views JobTemplateSurveySpec):
a survey it would refuse makes awx/configure_awx.yml fail half-way through a real AWX.
"""

import fnmatch
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
AWX_DIR = REPO_ROOT / "awx"
SURVEY = yaml.safe_load((AWX_DIR / "vars" / "survey.yml").read_text())
JOB_TEMPLATES = yaml.safe_load((AWX_DIR / "vars" / "job_templates.yml").read_text())["llmserve_awx_job_templates"]
EE_FILE = REPO_ROOT / "execution-environment.yml"
EE = yaml.safe_load(EE_FILE.read_text())
GALAXY = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())
AWS_INVENTORY = yaml.safe_load((REPO_ROOT / "inventories" / "aws_ec2.yml").read_text())

QUESTIONS = [
    SURVEY["llmserve_awx_model_size_question"],
    SURVEY["llmserve_awx_model_uri_question"],
    SURVEY["llmserve_awx_target_group_arns_question"],
    SURVEY["llmserve_awx_api_key_question"],
]
SIZE_CHOICES = SURVEY["llmserve_awx_model_size_question"]["choices"]
URI_PATTERN = re.compile(SURVEY["llmserve_awx_model_uri_pattern"])
AWX_QUESTION_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
EE_V3_SECTIONS = {
    "version",
    "images",
    "dependencies",
    "build_arg_defaults",
    "additional_build_files",
    "additional_build_steps",
    "options",
}
EE_V3_DEPENDENCIES = {"python", "galaxy", "system", "python_interpreter", "ansible_core", "ansible_runner", "exclude"}


def _pins(requirements: Path) -> dict[str, str]:
    pins = {}
    for line in requirements.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, version = requirement.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


DEV_PINS = _pins(REPO_ROOT / "requirements" / "dev.txt")


# --- the survey ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda question: question["variable"])
def test_question_is_one_awx_accepts(question):
    for field in ("type", "question_name", "variable"):
        assert isinstance(question[field], str) and question[field], field
    assert isinstance(question["required"], bool)
    assert question["type"] in AWX_QUESTION_TYPES
    for limit in ("min", "max"):
        assert question.get(limit) is None or isinstance(question[limit], int)
    assert question["variable"].isidentifier()


def test_survey_asks_each_variable_once():
    variables = [question["variable"] for question in QUESTIONS]
    assert variables == ["llmserve_model_size", "llmserve_model_uri", "llmserve_target_group_arns",
                         "llmserve_api_key_secret"]
    assert [question["required"] for question in QUESTIONS] == [True, True, False, False]
    assert isinstance(SURVEY["llmserve_awx_survey_name"], str) and SURVEY["llmserve_awx_survey_name"]
    assert isinstance(SURVEY["llmserve_awx_survey_description"], str)


def test_the_api_key_question_asks_where_the_key_is_never_the_key():
    # serve.yml reads the key from Secrets Manager at run time; a literal key is refused there.
    question = SURVEY["llmserve_awx_api_key_question"]
    assert question["variable"] == "llmserve_api_key_secret"
    assert question["type"] == "text" and question["default"] == ""


def test_model_size_is_a_single_choice_among_the_profiles():
    question = SURVEY["llmserve_awx_model_size_question"]
    assert question["type"] == "multiplechoice"
    assert SIZE_CHOICES == ["7b", "13b", "70b", "405b"]
    assert question["default"] == ""  # each job template sets its own


def test_model_uri_is_free_text_bounded_for_s3():
    question = SURVEY["llmserve_awx_model_uri_question"]
    assert question["type"] == "text"
    assert question["min"] <= len("s3://abc/x") <= question["max"]
    assert question["max"] >= len("s3://") + 63 + 1 + 1024  # longest bucket name, "/", longest key


@pytest.mark.parametrize(
    "uri",
    [
        "s3://llmserve-models/Llama-3.1-8B-Instruct",
        "s3://abc/x",
        "s3://models.example.com/meta/Llama-3.1-405B-Instruct-FP8/",
        "s3://" + "b" * 63 + "/weights",
    ],
)
def test_uri_pattern_accepts_s3_prefixes(uri):
    assert URI_PATTERN.fullmatch(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://llmserve-models",  # a bare bucket: the model would be the whole bucket
        "s3://llmserve-models/",
        "https://llmserve-models.s3.amazonaws.com/llama",
        "hf://meta-llama/Llama-3.1-8B-Instruct",
        "S3://llmserve-models/llama",
        "s3://Models/llama",  # bucket names are lowercase
        "s3://ab/llama",  # too short a bucket name
        "s3://" + "b" * 64 + "/weights",  # too long a bucket name
        "s3://-models/llama",
        "s3://llmserve-models/llama 3",
        "s3://llmserve-models/llama\n",
        " s3://llmserve-models/llama",
    ],
)
def test_uri_pattern_refuses_everything_else(uri):
    assert not URI_PATTERN.fullmatch(uri)


# --- the job templates --------------------------------------------------------------------------------------


def test_one_job_template_per_playbook():
    playbooks = [template["playbook"] for template in JOB_TEMPLATES]
    assert playbooks == [
        "playbooks/serve_7b.yml",
        "playbooks/serve_13b.yml",
        "playbooks/serve_70b.yml",
        "playbooks/serve_405b.yml",
        "playbooks/rolling_update.yml",
        "playbooks/fleet.yml",
        "playbooks/drill_spot_interruption.yml",
        "playbooks/sagemaker_endpoint.yml",
    ]
    names = [template["name"] for template in JOB_TEMPLATES]
    assert len(set(names)) == len(names)
    assert all(template["description"] for template in JOB_TEMPLATES)


def test_serve_templates_default_to_their_own_size_and_group():
    for template in JOB_TEMPLATES:
        match = re.fullmatch(r"playbooks/serve_(\w+)\.yml", template["playbook"])
        if match:
            assert template["model_size"] == match.group(1)
            assert template["limit"] == f"model_size_{match.group(1)}"
        assert template["model_size"] in SIZE_CHOICES + [""]  # AWX refuses a default outside the choices


def test_templates_without_the_model_survey_ask_for_their_own_variables():
    for template in JOB_TEMPLATES:
        assert set(template) <= {
            "name",
            "playbook",
            "description",
            "model_size",
            "limit",
            "survey",
            "extra_vars",
            "ask_variables_on_launch",
        }
        if not template.get("survey", True):
            assert template["model_size"] == ""
            assert template["ask_variables_on_launch"] is True
        assert isinstance(template.get("extra_vars", {}), dict)
    assert [template["playbook"] for template in JOB_TEMPLATES if not template.get("survey", True)] == [
        "playbooks/fleet.yml",
        "playbooks/drill_spot_interruption.yml",
    ]


def test_limits_name_groups_the_aws_inventory_makes():
    prefixes = {group["prefix"]: group for group in AWS_INVENTORY["keyed_groups"]}
    makes = {f"model_size_{size}" for size in SIZE_CHOICES} | {"lifecycle_spot", "lifecycle_on_demand"}
    assert "model_size" in prefixes and "lifecycle" in prefixes
    assert prefixes["lifecycle"]["default_value"] == "on_demand"
    for template in JOB_TEMPLATES:
        assert template["limit"] in ("", "localhost") or template["limit"] in makes, template


def test_job_template_playbooks_exist():
    # AWX refuses a job template whose playbook is not in the synced project.
    missing = [template["playbook"] for template in JOB_TEMPLATES if not (REPO_ROOT / template["playbook"]).is_file()]
    assert not missing, f"job templates name playbooks that do not exist: {missing}"


# --- the execution environment ------------------------------------------------------------------------------


def test_execution_environment_uses_schema_version_3():
    assert EE["version"] == 3
    assert set(EE) <= EE_V3_SECTIONS
    assert set(EE["dependencies"]) <= EE_V3_DEPENDENCIES
    assert set(EE["images"]) == {"base_image"}
    assert EE["images"]["base_image"]["name"]
    assert set(EE["dependencies"]["python_interpreter"]) == {"package_system", "python_path"}
    for file_option in ("galaxy", "python"):
        assert (REPO_ROOT / EE["dependencies"][file_option]).is_file(), file_option


def test_execution_environment_runs_the_tested_versions():
    assert EE["dependencies"]["ansible_core"]["package_pip"] == f"ansible-core=={DEV_PINS['ansible-core']}"
    assert re.fullmatch(r"ansible-runner==[\d.]+", EE["dependencies"]["ansible_runner"]["package_pip"])
    python_pins = _pins(REPO_ROOT / EE["dependencies"]["python"])
    assert {"boto3", "botocore"} <= set(python_pins)
    for name, version in python_pins.items():
        assert DEV_PINS[name] == version, f"{name}: {version} in the EE, {DEV_PINS[name]} in requirements/dev.txt"


def test_execution_environment_collections():
    requirements = yaml.safe_load((REPO_ROOT / EE["dependencies"]["galaxy"]).read_text())["collections"]
    by_name = {entry["name"]: entry for entry in requirements}
    for name, version_range in GALAXY["dependencies"].items():
        assert by_name[name]["version"] == version_range, f"{name} differs from galaxy.yml"
    assert {"amazon.aws", "community.aws", "community.docker"} <= set(by_name)
    # Nothing in the collection uses ansible.posix (model_sync mounts the instance store with its own systemd
    # mount unit); a dependency that nothing uses only costs installs.
    assert "ansible.posix" not in GALAXY["dependencies"] and "ansible.posix" not in by_name


def test_execution_environment_installs_this_checkouts_collection():
    requirements = yaml.safe_load((REPO_ROOT / EE["dependencies"]["galaxy"]).read_text())["collections"]
    [local] = [entry for entry in requirements if entry.get("type") == "file"]
    tarball = PurePosixPath(local["name"])
    # What `ansible-galaxy collection build` (make build) names the tarball.
    assert tarball.name == f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
    # additional_build_files copies it to _build/<dest>/, and the galaxy stage installs from /build (= _build).
    [copied] = [
        entry for entry in EE["additional_build_files"] if fnmatch.fnmatch(f".build/{tarball.name}", entry["src"])
    ]
    assert str(tarball.parent) == copied["dest"]


def test_no_root_requirements_file_for_awx_project_sync_to_pick_up():
    # AWX's project sync installs a root requirements.yml into every job's collection path, ahead of the image.
    assert not (REPO_ROOT / "requirements.yml").exists()
    assert not (REPO_ROOT / "collections" / "requirements.yml").exists()


# --- what the collection itself declares to ansible-builder (meta/execution-environment.yml) -------------------


COLLECTION_EE = yaml.safe_load((REPO_ROOT / "meta" / "execution-environment.yml").read_text())


def _requirement_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def test_collection_declares_its_python_and_system_requirements():
    assert COLLECTION_EE["version"] == 1
    assert COLLECTION_EE["dependencies"] == {"python": "requirements.txt", "system": "bindep.txt"}
    for name in COLLECTION_EE["dependencies"].values():
        path = REPO_ROOT / name
        assert path.is_file(), name
        # ansible-builder reads them from the installed collection: the tarball must hold them.
        assert not any(fnmatch.fnmatch(name, pattern) for pattern in GALAXY["build_ignore"]), name


def test_collection_python_requirements_hold_the_execution_environment_pins():
    from ansible_collections.amazon.aws.plugins.module_utils import botocore as amazon_botocore
    from packaging.requirements import Requirement

    ranges = {}
    for line in _requirement_lines(REPO_ROOT / COLLECTION_EE["dependencies"]["python"]):
        requirement = Requirement(line)
        ranges[requirement.name.lower()] = requirement.specifier
    assert set(ranges) == {"boto3", "botocore"}
    # The floors are amazon.aws's own: older SDKs are refused at run time anyway, newer floors would be untested.
    assert ranges["boto3"].contains(amazon_botocore.MINIMUM_BOTO3_VERSION)
    assert ranges["botocore"].contains(amazon_botocore.MINIMUM_BOTOCORE_VERSION)
    # The repository's execution environment and the control venv run versions inside those ranges.
    for name, version in _pins(REPO_ROOT / EE["dependencies"]["python"]).items():
        assert name in ranges, f"{name} is pinned in the EE but not required by the collection"
        assert ranges[name].contains(version), f"{name}=={version} (EE) is outside {ranges[name]} (requirements.txt)"
    for name, specifier in ranges.items():
        assert specifier.contains(DEV_PINS[name]), f"{name}=={DEV_PINS[name]} (dev.txt) is outside {specifier}"


def test_collection_system_requirements_give_every_base_image_an_ssh_client():
    entries = {}
    for line in _requirement_lines(REPO_ROOT / COLLECTION_EE["dependencies"]["system"]):
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9.+_-]*)(?:\s+\[([a-z0-9:_ -]+)\])?", line)
        assert match, f"not a bindep line: {line!r}"
        entries[match.group(1)] = set((match.group(2) or "").split())
    # The repository's EE base image is RPM-based (UBI); Debian-based images get theirs too.
    assert "platform:rpm" in entries["openssh-clients"]
    assert "platform:dpkg" in entries["openssh-client"]
    assert "system" not in EE["dependencies"], "the collection's bindep.txt is the one source of system packages"
