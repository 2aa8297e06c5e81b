"""model_sync's own checks of the values that reach the boot unit, its configuration and the SDK's environment, one
case per class of bad input, run as the role runs them: each case stops at the role's check, before any task
writes, with a message that names the variable and the fix. (The boot CLI checks the same values again when it
reads its configuration: tests/unit/test_model_sync_boot.py.)
"""

import json
import re
import sys

import pytest

from tests.support.playbook import ansible_env, run_playbook

COMMAND_TIMEOUT_S = 180
BOOT_CHECK = "Check the boot path's settings"
IMDS_CHECK = "Check the instance metadata endpoint (it reaches the SDK's environment)"
# (id, the role's tasks file, the variables, the check that must stop it, text its message must hold)
CASES = [
    ("imds-without-scheme", "main.yml", {"model_sync_imds_endpoint": "169.254.169.254"}, IMDS_CHECK,
     "model_sync_imds_endpoint must be http(s)://host[:port]"),
    ("imds-with-a-path", "main.yml", {"model_sync_imds_endpoint": "http://169.254.169.254/latest"}, IMDS_CHECK,
     "model_sync_imds_endpoint"),
    ("imds-with-a-line-break", "main.yml", {"model_sync_imds_endpoint": "http://169.254.169.254\nX-Injected: 1"},
     IMDS_CHECK, "model_sync_imds_endpoint"),
    ("imds-other-scheme", "main.yml", {"model_sync_imds_endpoint": "file:///etc/passwd"}, IMDS_CHECK,
     "model_sync_imds_endpoint"),
    ("required-by-empty", "boot.yml", {"model_sync_boot_required_by": []}, BOOT_CHECK, "model_sync_boot_required_by"),
    ("required-by-not-a-service", "boot.yml", {"model_sync_boot_required_by": ["vllm"]}, BOOT_CHECK,
     "model_sync_boot_required_by must list service units"),
    ("required-by-shell", "boot.yml", {"model_sync_boot_required_by": ["vllm.service; rm -rf /"]}, BOOT_CHECK,
     "model_sync_boot_required_by"),
    ("required-by-path", "boot.yml", {"model_sync_boot_required_by": ["../vllm.service"]}, BOOT_CHECK,
     "model_sync_boot_required_by"),
    ("required-by-line-break", "boot.yml", {"model_sync_boot_required_by": ["vllm.service\nExecStart=/bin/sh"]},
     BOOT_CHECK, "model_sync_boot_required_by"),
    ("retry-for-zero", "boot.yml", {"model_sync_boot_retry_for": 0}, BOOT_CHECK, "model_sync_boot_retry_for"),
    ("retry-for-not-a-number", "boot.yml", {"model_sync_boot_retry_for": "ten"}, BOOT_CHECK,
     "model_sync_boot_retry_for"),
    ("retry-interval-zero", "boot.yml", {"model_sync_boot_retry_interval": 0}, BOOT_CHECK,
     "model_sync_boot_retry_interval"),
    ("timeout-below-retry-for", "boot.yml", {"model_sync_boot_timeout": 60, "model_sync_boot_retry_for": 600},
     BOOT_CHECK, "model_sync_boot_timeout at least model_sync_boot_retry_for"),
]


def _case_block(case_id, tasks_file, variables):
    """One case: the role's tasks with the bad variables; the rescue records which task stopped it and why."""
    record = "{'case': %r, 'task': ansible_failed_task.name, 'msg': ansible_failed_result.msg}" % case_id
    return {
        "name": f"Case {case_id}",
        "block": [
            {"ansible.builtin.include_role": {"name": "llmserve.aws.model_sync", "tasks_from": tasks_file},
             "vars": dict({"model_sync_source": "s3://models/tiny"}, **variables)},
            {"ansible.builtin.set_fact": {"_outcomes": "{{ _outcomes + [{'case': %r, 'task': None}] }}" % case_id}},
        ],
        "rescue": [{"ansible.builtin.set_fact": {"_outcomes": "{{ _outcomes + [%s] }}" % record}}],
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case in one play (one ansible-playbook start): case id -> {task, msg}."""
    play = {
        "name": "model_sync's checks, one case per class of bad input",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {"_outcomes": []},
        "tasks": [_case_block(case[0], case[1], case[2]) for case in CASES]
        + [{"ansible.builtin.debug": {"msg": "OUTCOMES={{ _outcomes | to_json }}"}}],
    }
    playbook = tmp_path_factory.mktemp("model_sync_checks") / "checks.yml"
    playbook.write_text(json.dumps([play], indent=1))  # JSON is YAML
    # Check mode: a check that let a bad value through would reach tasks that install and write, here changing
    # nothing (and the case then fails on which task stopped it).
    completed = run_playbook(
        "-i", "localhost,", "-c", "local", "--check", "-e", f"ansible_python_interpreter={sys.executable}",
        str(playbook),
        env=ansible_env(ANSIBLE_NOCOLOR="1"), timeout_s=COMMAND_TIMEOUT_S,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    (text,) = re.findall(r'"OUTCOMES=(.*)"\s*$', completed.stdout, re.MULTILINE)
    return {outcome["case"]: outcome for outcome in json.loads(json.loads(f'"{text}"'))}


@pytest.mark.parametrize(("case_id", "check", "named"), [(c[0], c[3], c[4]) for c in CASES], ids=[c[0] for c in CASES])
def test_each_class_of_bad_value_stops_at_the_role_check_naming_the_variable(outcomes, case_id, check, named):
    outcome = outcomes[case_id]
    assert outcome["task"] == check, outcome
    assert named in outcome["msg"] and "Fix:" in outcome["msg"], outcome
