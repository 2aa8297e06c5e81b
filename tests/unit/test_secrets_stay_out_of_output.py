"""Secrets in roles and playbooks: a pip index URL with credentials, the IMDS session token and the drill's API key
never reach a command line (argv, a task's `environment`, which Ansible puts on the remote shell's command line)
or task output (-vvv prints a task's arguments unless it is no_log).

One table of tasks: every task that puts a secret-looking value into a command, a request, a file or its environment
must be no_log. And the pip installs of the three roles that install packages take their sources from a 0600
pip.conf, not from argv.
"""

import re
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible.template import trust_as_template

REPO = Path(__file__).resolve().parents[2]
# Module arguments that reach a command line or output as they are (the collection's own modules mark their
# secret options no_log in their argument specs, so they are not listed).
EXPOSING = ("ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.uri", "ansible.builtin.copy",
            "ansible.builtin.template", "ansible.builtin.debug", "ansible.builtin.set_fact")
# A variable whose name ends in _token (not max_tokens), or names a key, secret, password or pip's sources.
SECRET_VARIABLE = re.compile(r"\{\{[^}]*\b\w*(_token|api_key|secret|password|pip_index_url|pip_conf)\b[^}]*\}\}",
                             re.IGNORECASE)
FILES = sorted(list(REPO.glob("roles/*/tasks/*.yml")) + list(REPO.glob("roles/*/handlers/*.yml"))
               + list(REPO.glob("playbooks/*.yml")))


def tasks_in(entries):
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            yield from tasks_in(entry.get(key))
        yield entry


def exposing_tasks():
    for path in FILES:
        for task in tasks_in(yaml.safe_load(path.read_text())):
            module = next((key for key in task if key in EXPOSING), None)
            exposed = {key: task[key] for key in task if key in (module, "environment")}
            if exposed and SECRET_VARIABLE.search(str(exposed)):
                yield pytest.param(task, id="%s:%s" % (path.relative_to(REPO), task.get("name", "?")))


@pytest.mark.parametrize("task", list(exposing_tasks()))
def test_tasks_handling_secrets_are_no_log_and_keep_them_out_of_the_environment(task):
    assert task.get("no_log") is True
    assert not SECRET_VARIABLE.search(str(task.get("environment", ""))), "the environment is on a command line"


def test_the_table_covers_the_known_cases():
    names = " ".join(str(param.values[0].get("name")) for param in exposing_tasks())
    for expected in ("Read meta-data/instance-id", "Read this instance's id", "API key in a file", "pip.conf"):
        assert expected in names


ROLES = [("vllm_service", "vllm_service_pip_index_url"), ("spot_interruption", "spot_interruption_pip_index_url"),
         ("model_sync", "model_sync_pip_index_url")]
URL = "https://builder:s3cr3t@pypi.example.com/simple"


def role_variables(role, **overrides):
    variables = dict(yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()))
    for name, value in yaml.safe_load((REPO / "roles" / role / "vars" / "main.yml").read_text()).items():
        variables[name] = trust_as_template(value) if isinstance(value, str) else value
    variables.update(overrides)
    return variables


@pytest.mark.parametrize("role, option", ROLES)
def test_roles_hand_their_index_url_to_the_one_venv_builder(role, option):
    text = "".join(path.read_text() for path in (REPO / "roles" / role / "tasks").glob("*.yml"))
    assert "'-m', 'pip', 'install'" not in text, "%s must build its venv through llmserve.aws.python_venv" % role
    assert "python_venv_pip_index_url: \"{{ %s" % option in text


def test_pip_sources_go_to_a_0600_pip_conf_not_argv():
    tasks = (REPO / "roles" / "python_venv" / "tasks" / "main.yml").read_text()
    pip_calls = re.findall(r"'-m', 'pip', 'install'[^}]*\}\}", tasks, re.DOTALL)
    assert pip_calls and not any(re.search(r"index|find_links|pip_args|source_args", call) for call in pip_calls)
    conf_task = next(task for task in tasks_in(yaml.safe_load(tasks)) if "pip.conf" in str(task.get("name")))
    assert conf_task["no_log"] is True and conf_task["ansible.builtin.copy"]["mode"] == "0600"
    templar = Templar(loader=DataLoader(), variables=role_variables(
        "python_venv", python_venv_path="/opt/venv", python_venv_pip_index_url=URL,
        python_venv_pip_find_links=["/wheels"], python_venv_pip_no_index=True))
    conf = templar.template(trust_as_template("{{ _python_venv_pip_conf }}"))
    assert conf.startswith("# Managed by llmserve.aws")
    assert "index-url = %s\n" % URL in conf and "find-links = /wheels\n" in conf and "no-index = true\n" in conf
