"""The serve playbooks parse, and a profile that does not fit fails in the plan step, before any role runs; the
API key and the Hugging Face token come from Secrets Manager or SSM, and a bad or missing one fails before any change.
The Spot drill takes vLLM's key the same way, and fails before it touches the host on a literal or a bad source."""

import hashlib
import json

import pytest

from tests.support import leaks
from tests.support.playbook import REPO_ROOT as REPO, ansible_env, run_playbook

PLAYBOOKS = sorted(p.name for p in (REPO / "playbooks").glob("*.yml"))


def ansible_playbook(*args):
    return run_playbook(*args, env=ansible_env(ANSIBLE_DEPRECATION_WARNINGS="0"))


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook):
    result = ansible_playbook("--syntax-check", "-e", "llmserve_profile=7b", "playbooks/" + playbook)
    assert result.returncode == 0, result.stdout + result.stderr


def run_serve_on_localhost(*extra):
    return ansible_playbook(
        "-i", "localhost,", "-c", "local", "playbooks/serve_7b.yml",
        "-e", "llmserve_hosts=localhost", "-e", "ansible_become=false",
        "-e", "ansible_python_interpreter=" + str(REPO / ".venv/bin/python"),
        "-e", "llmserve_model_uri=s3://models/llama-3.1-8b", *extra)


def run_serve_on_loopback(*extra):
    """The flow on localhost with vLLM on loopback, where no API key is needed: the tests below reach the plan."""
    return run_serve_on_localhost("-e", "vllm_service_host=127.0.0.1", *extra)


def test_profile_that_does_not_fit_fails_in_the_plan():
    result = run_serve_on_loopback("-e", "llmserve_profile_concurrency=64")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Plan - the profile fits its instance type" in out
    assert "g5.xlarge" in out
    # Nothing after the plan ran: no role task appears in the output.
    assert "gpu_check" not in out.split("Plan - the profile fits")[1]
    assert "failed=1" in out


def test_host_of_another_instance_type_fails_before_any_role():
    result = run_serve_on_loopback("-e", "ec2_instance_type=p4d.24xlarge")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "is a p4d.24xlarge, but the 7b profile is served by g5.xlarge, g5.2xlarge, g5.4xlarge" in out
    assert "TASK [llmserve.aws.gpu_check" not in out


def test_host_of_another_type_of_the_profiles_fleet_passes_the_plan():
    # A mixed fleet: a g5.2xlarge (same single A10G) serves the 7b profile too. Check mode stops it at the GPU
    # check, which needs a real GPU; what matters is that the instance-type assertion let it through.
    result = run_serve_on_loopback("-e", "ec2_instance_type=g5.2xlarge", "--check")
    out = result.stdout + result.stderr
    assert "Plan - the host is one of the instance types that serve this profile" in out
    assert "is a g5.2xlarge, but" not in out
    assert "TASK [llmserve.aws.gpu_check" in out


def test_survey_size_that_contradicts_the_playbook_fails():
    result = run_serve_on_loopback("-e", "llmserve_model_size=70b")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "must be this playbook's size 7b" in out
    assert "TASK [llmserve.aws.gpu_check" not in out


# --- secrets ------------------------------------------------------------------------------------------------


def fails_before_any_change(result, message):
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert message in out, out
    assert "TASK [Plan - the profile fits" not in out and "TASK [llmserve.aws.gpu_check" not in out


def test_vllm_beyond_loopback_without_a_key_fails_before_any_change():
    fails_before_any_change(run_serve_on_localhost(), "vLLM listens beyond loopback (vllm_service_host=0.0.0.0) and "
                            "needs an API key: pass llmserve_api_key_secret")


@pytest.mark.parametrize("answers, message", [
    ({"llmserve_api_key": "sk-literal"}, "llmserve_api_key (a literal value) is not read: store it in Secrets Manager"),
    ({"llmserve_hf_token": "hf_literal"}, "llmserve_hf_token (a literal value) is not read: store it in Secrets Manager"
     " and pass its name or ARN as llmserve_hf_token_secret"),
    ({"llmserve_api_key_secret": "arn:aws:ssm:us-east-1:123456789012:parameter/llmserve/api-key"},
     "llmserve_api_key_secret must be a Secrets Manager secret's name or ARN (arn:PARTITION:secretsmanager:REGION:"
     "ACCOUNT:secret:NAME), got an ARN of ssm: arn:aws:ssm:us-east-1:123456789012:parameter/llmserve/api-key (pass an "
     "SSM parameter as llmserve_api_key_parameter)"),
    ({"llmserve_hf_token_parameter": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hf-AbCdEf"},
     "llmserve_hf_token_parameter must be an SSM parameter's name or ARN (arn:PARTITION:ssm:REGION:ACCOUNT:parameter/"
     "NAME), got an ARN of secretsmanager"),
    ({"llmserve_api_key_secret": "llmserve/api-key", "llmserve_api_key_parameter": "/llmserve/api-key"},
     "set one of llmserve_api_key_secret and llmserve_api_key_parameter, not both"),
    ({"llmserve_api_key_secret": "llmserve/api key\nx"}, "llmserve_api_key_secret \"llmserve/api key\\nx\" is not a secret name"),
    ({"llmserve_hf_token_parameter": "/llmserve//hf token"}, "is not a parameter name"),
])
def test_a_bad_secret_source_fails_before_any_change(answers, message):
    fails_before_any_change(run_serve_on_localhost("-e", json.dumps(answers)), message)


def test_ssm_parameters_are_refused_at_a_verbosity_that_prints_their_values():
    fails_before_any_change(run_serve_on_localhost("-vvvv", "-e", "llmserve_api_key_parameter=/llmserve/api-key"),
                            "amazon.aws.ssm_parameter prints the values it reads at -vvvv")


@pytest.mark.parametrize("variable, kind", [("llmserve_api_key_secret", "Secrets Manager has no such secret"),
                                            ("llmserve_hf_token_parameter", "SSM Parameter Store has no such parameter")])
def test_a_missing_secret_fails_before_any_change_naming_the_variable(aws_clean, variable, kind):
    result = run_playbook(
        "-i", "localhost,", "-c", "local", "playbooks/serve_7b.yml", "-e", "llmserve_hosts=localhost",
        "-e", "llmserve_model_uri=s3://models/llama-3.1-8b", "-e", "%s=llmserve/missing" % variable,
        env=ansible_env(ANSIBLE_DEPRECATION_WARNINGS="0", **aws_clean.env))
    fails_before_any_change(result, "%s=llmserve/missing: %s in this account and region (us-east-1)" % (variable, kind))


READ_SECRETS_PLAY = """
- name: Read the serve flow's secrets
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Read them
      ansible.builtin.include_tasks: %s/playbooks/tasks/serve_secrets.yml
    - name: They are the values stored in AWS
      ansible.builtin.assert:
        that:
          - _llmserve_api_key | hash('sha256') == api_key_sha256
          - _llmserve_hf_token | hash('sha256') == hf_token_sha256
        quiet: true
"""


@pytest.mark.parametrize("api_key_from, hf_token_from", [("secret", "parameter"), ("parameter", "secret")])
def test_secrets_are_read_from_aws_and_never_printed_at_vvv(aws_clean, tmp_path, api_key_from, hf_token_from):
    api_key, hf_token = "sk-live-Xq7pL2mN9vR4", "hf_TokenZt81Wq3Lp"
    names = {}
    for label, value, source in (("api-key", api_key, api_key_from), ("hf-token", hf_token, hf_token_from)):
        if source == "secret":
            names[label] = aws_clean.client("secretsmanager").create_secret(
                Name="llmserve/" + label, SecretString=value)["ARN"]
        else:
            names[label] = "/llmserve/" + label
            aws_clean.client("ssm").put_parameter(Name=names[label], Value=value, Type="SecureString")
    play = tmp_path / "read_secrets.yml"
    play.write_text(READ_SECRETS_PLAY % REPO)
    result = run_playbook(
        "-vvv", "-i", "localhost,", "-c", "local", str(play),
        "-e", json.dumps({"llmserve_api_key_" + api_key_from: names["api-key"],
                          "llmserve_hf_token_" + hf_token_from: names["hf-token"],
                          "api_key_sha256": hashlib.sha256(api_key.encode()).hexdigest(),
                          "hf_token_sha256": hashlib.sha256(hf_token.encode()).hexdigest()}),
        env=ansible_env(ANSIBLE_DEPRECATION_WARNINGS="0", **aws_clean.env))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "censored" in output  # the set_fact that holds them ran, and said nothing
    found = leaks.find_leaks({"API key": api_key, "HF token": hf_token}, {"ansible-playbook -vvv": output})
    assert not found, leaks.describe(found)


def run_drill_on_localhost(*extra, env=None):
    return run_playbook(
        "-i", "localhost,", "-c", "local", "playbooks/drill_spot_interruption.yml", "-e", "ansible_become=false",
        "-e", "spot_drill_mode=bench", "-e", "spot_drill_model=tiny", "-e", "spot_drill_imds_control_url=http://127.0.0.1:9",
        *extra, env=env or ansible_env(ANSIBLE_DEPRECATION_WARNINGS="0"))  # fmt: skip


def drill_fails_before_touching_the_host(result, message):
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert message in out, out
    assert "TASK [Read the watcher's configuration]" not in out, out


@pytest.mark.parametrize("answers, message", [
    ({"spot_drill_api_key": "sk-literal"}, "spot_drill_api_key (a literal value) is not read: pass the Secrets Manager "
     "secret that holds vLLM's API key as llmserve_api_key_secret"),
    ({"llmserve_api_key": "sk-literal"}, "llmserve_api_key (a literal value) is not read: store it in Secrets Manager"),
    ({"llmserve_api_key_secret": "llmserve/api key\nx"}, "llmserve_api_key_secret \"llmserve/api key\\nx\" is not a secret name"),
])
def test_the_drill_takes_the_api_key_from_aws_only(answers, message):
    drill_fails_before_touching_the_host(run_drill_on_localhost("-e", json.dumps(answers)), message)


def test_the_drill_with_a_missing_secret_fails_before_touching_the_host(aws_clean):
    result = run_drill_on_localhost("-e", "llmserve_api_key_secret=llmserve/missing",
                                    env=ansible_env(ANSIBLE_DEPRECATION_WARNINGS="0", **aws_clean.env))
    drill_fails_before_touching_the_host(
        result, "llmserve_api_key_secret=llmserve/missing: Secrets Manager has no such secret in this account and region")
