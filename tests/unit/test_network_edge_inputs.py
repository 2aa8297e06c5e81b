"""Role network_edge's grammar checks (tasks/validate.yml, the first task) by class of bad input, rendered with
Ansible's templar: each row is the defaults plus a valid play's inputs, with one value changed, and the variable
whose message must (or must not) fire. tests/integration/test_network_playbook.py runs the whole check once."""

from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = Path(__file__).resolve().parents[2] / "roles" / "network_edge"
CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
VALID = {
    "network_edge_region": "us-east-1",
    "network_edge_certificate_arn": CERTIFICATE,
    "network_edge_allowed_cidrs": ["203.0.113.0/24"],
    "network_edge_model_uri": "s3://llmserve-models/Llama-3.1-8B-Instruct",
    "network_edge_api_key_secret": "llmserve/api-key",
}


def _trusted(value):
    return trust_as_template(value) if isinstance(value, str) else value


def problems(**overrides):
    """The messages of the grammar task for the defaults + VALID + overrides (whitespace normalised)."""
    task = yaml.safe_load((ROLE / "tasks" / "validate.yml").read_text())[0]
    variables = dict(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))
    variables.update({name: _trusted(value)
                      for name, value in yaml.safe_load((ROLE / "vars" / "main.yml").read_text()).items()})
    variables.update({name: _trusted(value) for name, value in task["vars"].items() if name != "_checks"})
    variables.update(VALID)
    variables.update(overrides)
    templar = Templar(loader=DataLoader(), variables=variables)
    found = []
    for check in task["vars"]["_checks"]:
        if templar.template(trust_as_template(check["bad"])) in (True, "True"):
            found.append(" ".join(str(templar.template(trust_as_template(check["msg"]))).split()))
    return found


def test_a_valid_play_has_no_problems():
    assert problems() == []


@pytest.mark.parametrize("overrides, variable", [
    # ARNs: wrong service, wrong grammar, another region, a trailing newline
    ({"network_edge_certificate_arn": "arn:aws:iam::123456789012:server-certificate/llm"}, "network_edge_certificate_arn"),
    ({"network_edge_certificate_arn": CERTIFICATE + "\n"}, "network_edge_certificate_arn"),
    ({"network_edge_certificate_arn": CERTIFICATE.replace("us-east-1", "eu-west-1")}, "network_edge_certificate_arn"),
    ({"network_edge_api_key_secret": "arn:aws:s3:::bucket/key"}, "network_edge_api_key_secret"),
    ({"network_edge_api_key_secret": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:k-AbCdEf"},
     "network_edge_api_key_secret"),
    ({"network_edge_api_key_secret": ""}, "network_edge_api_key_secret"),
    ({"network_edge_api_key_secret": "sk-live key with spaces"}, "network_edge_api_key_secret"),
    ({"network_edge_hf_token_secret": "ssm:"}, "network_edge_hf_token_secret"),
    ({"network_edge_permissions_boundary_arn": "arn:aws:iam::123456789012:role/boundary"},
     "network_edge_permissions_boundary_arn"),
    # CIDRs and zones
    ({"network_edge_allowed_cidrs": ["0.0.0.0/0"]}, "network_edge_allowed_cidrs"),
    ({"network_edge_allowed_cidrs": ["::/0"]}, "network_edge_allowed_cidrs"),
    ({"network_edge_allowed_cidrs": []}, "network_edge_allowed_cidrs"),
    ({"network_edge_allowed_cidrs": ["203.0.113.0/33"]}, "network_edge_allowed_cidrs"),
    ({"network_edge_allowed_cidrs": ["203.0.113.0"]}, "network_edge_allowed_cidrs"),
    ({"network_edge_vpc_cidr": "10.42.0.0/8"}, "network_edge_vpc_cidr"),
    ({"network_edge_private_subnet_cidrs": ["10.42.16.0/20", "10.42.256.0/20"]}, "network_edge_private_subnet_cidrs"),
    ({"network_edge_private_subnet_cidrs": ["10.42.16.0/20"]}, "network_edge_private_subnet_cidrs"),
    ({"network_edge_public_subnet_cidrs": ["10.42.0.0/24", "10.42.0.0/24"]}, "network_edge_public_subnet_cidrs"),
    ({"network_edge_availability_zones": ["us-east-1a"]}, "network_edge_availability_zones"),
    ({"network_edge_availability_zones": ["us-east-1a", "us-east-1a"]}, "network_edge_availability_zones"),
    ({"network_edge_availability_zones": ["us-east-1a", "us-west-2b"]}, "network_edge_availability_zones"),
    # the rest
    ({"network_edge_deregistration_delay": 120}, "network_edge_deregistration_delay"),
    ({"network_edge_deregistration_delay": -1}, "network_edge_deregistration_delay"),
    ({"network_edge_model_uri": "s3://llmserve-models"}, "network_edge_model_uri"),
    ({"network_edge_model_uri": "s3://llmserve-models/*"}, "network_edge_model_uri"),
    ({"network_edge_health_check_path": "health"}, "network_edge_health_check_path"),
    ({"network_edge_ssl_policy": "TLS13"}, "network_edge_ssl_policy"),
    ({"network_edge_name": "LLM serve"}, "network_edge_name"),
    ({"network_edge_region": "us-east-1\n"}, "network_edge_region"),
    ({"network_edge_outputs_path": "out\n.json"}, "network_edge_outputs_path"),
    ({"network_edge_autoscaling_group_name": "group;rm"}, "network_edge_autoscaling_group_name"),
])
def test_each_bad_input_is_one_message_naming_its_variable(overrides, variable):
    found = problems(**overrides)
    assert len(found) == 1 and variable in found[0], found


@pytest.mark.parametrize("overrides", [
    {"network_edge_allowed_cidrs": ["0.0.0.0/0", "::/0"], "network_edge_allow_internet": True},
    {"network_edge_allowed_cidrs": ["2001:db8::/32", "198.51.100.7/32"]},
    {"network_edge_api_key_secret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:llmserve/api-key-AbCdEf"},
    {"network_edge_api_key_secret": "ssm:/llmserve/api-key", "network_edge_hf_token_secret": "ssm:hf-token"},
    {"network_edge_hf_token_secret": "arn:aws:ssm:us-east-1:123456789012:parameter/llmserve/hf-token"},
    {"network_edge_availability_zones": ["us-east-1b", "us-east-1c"], "network_edge_deregistration_delay": 119},
    {"network_edge_permissions_boundary_arn": "arn:aws:iam::123456789012:policy/boundaries/llmserve"},
    {"network_edge_state": "absent", "network_edge_certificate_arn": "", "network_edge_api_key_secret": ""},
])
def test_valid_variants_pass(overrides):
    assert problems(**overrides) == []
