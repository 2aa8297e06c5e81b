"""The AWX playbooks run by the real ansible-playbook: configure_awx.yml parses (it needs a live AWX to run), and
survey_guard.yml accepts survey answers of the right form and refuses the rest before any play changes
anything, also when imported by a job's playbook and run under a job template's limit. AWX itself cannot run
here; the survey's shape is checked in tests/unit/test_awx_definitions.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.playbook import ansible_env, run_playbook

REPO_ROOT = Path(__file__).resolve().parents[2]
GUARD = REPO_ROOT / "awx" / "survey_guard.yml"
COMMAND_TIMEOUT_S = 120

# A job's playbook as AWX runs it: the guard first, then a play that changes something on each host.
JOB_PLAYBOOK = """
- name: Check the survey answers first
  ansible.builtin.import_playbook: {guard}
- name: Change something on each host
  hosts: all
  gather_facts: false
  connection: local
  tasks:
    - name: Leave a mark
      ansible.builtin.file:
        path: "{marks}/{{{{ inventory_hostname }}}}"
        state: touch
        mode: "0600"
"""


def _ansible_playbook(*args: str) -> subprocess.CompletedProcess:
    # The caller's ANSIBLE_ settings left out: the playbooks run as AWX runs them, with the collection's defaults.
    return run_playbook(*args, env=ansible_env(drop_prefixes=("ANSIBLE_",)), timeout_s=COMMAND_TIMEOUT_S)


@pytest.mark.parametrize("playbook", ["awx/configure_awx.yml", "awx/survey_guard.yml"])
def test_playbook_syntax(playbook):
    completed = _ansible_playbook("--syntax-check", playbook)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_guard_passes_well_formed_answers():
    completed = _ansible_playbook(
        "awx/survey_guard.yml",
        "-e",
        "llmserve_model_size=70b",
        "-e",
        "llmserve_model_uri=s3://llmserve-models/Llama-3.1-70B-Instruct",
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Model size 70b." in completed.stdout
    assert "Model URI s3://llmserve-models/Llama-3.1-70B-Instruct." in completed.stdout


def test_guard_without_answers_checks_nothing_and_says_so():
    completed = _ansible_playbook("awx/survey_guard.yml")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "nothing to check" in completed.stdout


@pytest.mark.parametrize(
    ("extra_vars", "complaint"),
    [
        ("llmserve_model_uri=https://llmserve-models.s3.amazonaws.com/llama", "must be s3://BUCKET/PREFIX"),
        ("llmserve_model_uri=s3://llmserve-models", "must be s3://BUCKET/PREFIX"),
        ("llmserve_model_size=8b", "must be one of 7b, 13b, 70b, 405b"),
        # Extra vars skip the survey: a number instead of a string is refused too.
        ('{"llmserve_model_size": 7}', "must be one of 7b, 13b, 70b, 405b"),
    ],
)
def test_guard_refuses_malformed_answers(extra_vars, complaint):
    completed = _ansible_playbook("awx/survey_guard.yml", "-e", extra_vars)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert complaint in completed.stdout


@pytest.mark.parametrize(
    ("model_uri", "marked"),
    [("s3://llmserve-models/Llama-3.1-8B-Instruct", ["model-host-a"]), ("s3://llmserve-models", [])],
)
def test_guard_runs_first_under_a_job_templates_limit(tmp_path, model_uri, marked):
    # The limit leaves out localhost, as a job template's model_size_<size> limit does.
    marks = tmp_path / "marks"
    marks.mkdir()
    playbook = tmp_path / "job.yml"
    playbook.write_text(JOB_PLAYBOOK.format(guard=GUARD, marks=marks))

    completed = _ansible_playbook(
        "-i",
        "model-host-a,model-host-b,",
        "--limit",
        "model-host-a",
        str(playbook),
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-e",
        "llmserve_model_size=7b",
        "-e",
        f"llmserve_model_uri={model_uri}",
    )

    assert completed.returncode == (0 if marked else 2), completed.stdout + completed.stderr
    assert "Model size 7b." in completed.stdout
    assert sorted(path.name for path in marks.iterdir()) == marked


# --- every job template, launched with only what it asks at launch --------------------------------------------

TEMPLATES = yaml.safe_load((REPO_ROOT / "awx" / "vars" / "job_templates.yml").read_text())["llmserve_awx_job_templates"]
# The groups inventories/aws_ec2.yml makes for a small fleet, written out as a static inventory (the bench's
# dynamic overlay stands in for it where AWS instances run as bench hosts).
FLEET_INVENTORY = {
    "all": {
        "children": {
            "model_sizes": {"children": {"model_size_7b": {"hosts": {"host-7b-a": {}, "host-7b-b": {}}},
                                         "model_size_13b": {"hosts": {"host-13b-a": {}}},
                                         "model_size_70b": {"hosts": {"host-70b-a": {}}},
                                         "model_size_405b": {"hosts": {"host-405b-a": {}}}}},
            "lifecycles": {"children": {"lifecycle_spot": {"hosts": {"host-7b-b": {}}},
                                        "lifecycle_on_demand": {"hosts": {"host-7b-a": {}, "host-13b-a": {}}}}},
        },
        "hosts": {"localhost": {"ansible_connection": "local"}},
    }
}
# What an operator answers at launch: the survey (model size where the template has no default), and for the
# templates without it, the limit the template asks for.
SURVEY_ANSWERS = {
    "llmserve_model_uri": "s3://llmserve-models/Llama-3.1-8B-Instruct",
    "llmserve_target_group_arns": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/llmserve-7b/0123",
    "llmserve_api_key_secret": "llmserve/api-key",
}
EXPECTED_HOSTS = {
    "playbooks/serve_7b.yml": ["host-7b-a", "host-7b-b"],
    "playbooks/serve_13b.yml": ["host-13b-a"],
    "playbooks/serve_70b.yml": ["host-70b-a"],
    "playbooks/serve_405b.yml": ["host-405b-a"],
    "playbooks/rolling_update.yml": ["host-13b-a"],  # the survey's answer 13b
    "playbooks/fleet.yml": ["localhost"],
    "playbooks/sagemaker_endpoint.yml": ["localhost"],
    "playbooks/drill_spot_interruption.yml": ["host-7b-b"],  # the launch limit: the one spot host
}


def _last_play_hosts(list_hosts_output: str) -> list[str]:
    plays = list_hosts_output.split("\n  play #")
    return sorted(line.strip() for line in plays[-1].splitlines()[2:] if line.startswith("      "))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda template: template["name"])
def test_job_template_targets_its_hosts_with_only_its_launch_answers(tmp_path, template):
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(yaml.safe_dump(FLEET_INVENTORY))
    extra_vars = dict(template.get("extra_vars", {}))
    if template.get("survey", True):
        extra_vars.update(SURVEY_ANSWERS, llmserve_model_size=template["model_size"] or "13b")
    limit = template["limit"] or ("lifecycle_spot" if "drill" in template["playbook"] else "all")
    completed = _ansible_playbook(
        "-i", str(inventory), "--limit", limit, "--list-hosts", template["playbook"], "-e", json.dumps(extra_vars)
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "model_size_unset" not in completed.stdout
    assert _last_play_hosts(completed.stdout) == EXPECTED_HOSTS[template["playbook"]], completed.stdout
