"""playbooks/network.yml (role network_edge) against the local AWS: the network edge converges with the stated
properties (TLS policy, /v1-only rule, security groups, S3 endpoint, target group, least-privilege role), a second
run changes nothing, check mode on a fresh account changes nothing, absent removes it all, and bad inputs fail
before any change with one message per input naming the variable.

The certificate is a self-signed one imported into the local ACM with boto3 (the playbook only looks it up); the
API key is a Secrets Manager secret and the Hugging Face token an SSM SecureString, both made here.
The AWS-managed policy the role attaches comes from tests/bench/moto_ext/iam.py (moto has none by default).
"""

import datetime
import functools
import json
import re

import pytest

from tests.support.playbook import ansible_env, run_playbook

COMMAND_TIMEOUT_S = 240
BUCKET, PREFIX = "llmserve-models", "Llama-3.1-8B-Instruct"
CLIENT_CIDRS = {"203.0.113.0/24"}
CLIENT_CIDRS_V6 = {"2001:db8::/32"}
VLLM_PORT = 8000


@functools.cache
def _self_signed_pem() -> tuple[bytes, bytes]:
    """(certificate, private key) in PEM for llm.example.test, made once per test session."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm.example.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("llm.example.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _certificate_arn(aws) -> str:
    """The local ACM's certificate for llm.example.test: looked up, imported only when missing."""
    acm = aws.client("acm")
    for summary in acm.list_certificates()["CertificateSummaryList"]:
        if summary["DomainName"] == "llm.example.test":
            return summary["CertificateArn"]
    certificate, key = _self_signed_pem()
    return acm.import_certificate(Certificate=certificate, PrivateKey=key)["CertificateArn"]


@pytest.fixture
def edge(aws_clean, tmp_path):
    """The local AWS with the certificate and secrets network.yml needs, and the play's inputs."""
    aws_clean.client("secretsmanager").create_secret(Name="llmserve/api-key", SecretString="not-a-real-key")
    aws_clean.client("ssm").put_parameter(Name="/llmserve/hf-token", Value="not-a-real-token", Type="SecureString")
    return aws_clean, {
        "network_edge_certificate_arn": _certificate_arn(aws_clean),
        "network_edge_allowed_cidrs": sorted(CLIENT_CIDRS | CLIENT_CIDRS_V6),
        "network_edge_model_uri": f"s3://{BUCKET}/{PREFIX}",
        "network_edge_api_key_secret": "llmserve/api-key",
        "network_edge_hf_token_secret": "ssm:/llmserve/hf-token",
        "network_edge_autoscaling_group_name": "llmserve-7b",
        "network_edge_outputs_path": str(tmp_path / "network.json"),
    }


def _network(aws, extra_vars, *options, expect_rc=0):
    completed = run_playbook(
        "playbooks/network.yml", "-e", json.dumps(extra_vars), *options,
        env=ansible_env(drop_prefixes=("AWS_", "ANSIBLE_"), ANSIBLE_DEPRECATION_WARNINGS="0", **aws.env),
        timeout_s=COMMAND_TIMEOUT_S,
    )
    out = completed.stdout + completed.stderr
    assert completed.returncode == expect_rc, out
    return int(re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", out).group(1)), out


def _nothing_created(aws):
    ec2, elbv2, iam = aws.client("ec2"), aws.client("elbv2"), aws.client("iam")
    assert ec2.describe_vpcs(Filters=[{"Name": "tag-key", "Values": ["llmserve:network"]}])["Vpcs"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    assert elbv2.describe_load_balancers()["LoadBalancers"] == []
    assert elbv2.describe_target_groups()["TargetGroups"] == []
    assert iam.list_roles()["Roles"] == []
    assert iam.list_policies(Scope="Local")["Policies"] == []


def _policy_documents(iam, role_name):
    """{policy name: document} of the role's attached customer-managed policies, and the AWS-managed ARNs."""
    attached = iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    documents, aws_managed = {}, []
    for policy in attached:
        if ":iam::aws:policy/" in policy["PolicyArn"]:
            aws_managed.append(policy["PolicyArn"])
            continue
        version = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]["DefaultVersionId"]
        document = iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
        documents[policy["PolicyName"]] = json.loads(document) if isinstance(document, str) else document
    return documents, aws_managed


def _assert_load_balancer(elbv2, outputs, certificate_arn):
    balancer = elbv2.describe_load_balancers(Names=["llmserve-alb"])["LoadBalancers"][0]
    assert balancer["Scheme"] == "internet-facing"
    assert balancer["DNSName"] == outputs["llmserve_network_alb_dns_name"]
    listeners = {l["Port"]: l for l in elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]}
    assert set(listeners) == {443, 80}
    https, http = listeners[443], listeners[80]
    assert outputs["llmserve_network_listener_arns"] == {"https": https["ListenerArn"], "http": http["ListenerArn"]}
    assert https["Protocol"] == "HTTPS" and https["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert [c["CertificateArn"] for c in https["Certificates"]] == [certificate_arn]
    assert [(a["Type"], a["FixedResponseConfig"]["StatusCode"]) for a in https["DefaultActions"]] == [
        ("fixed-response", "404")]
    redirect = http["DefaultActions"][0]
    assert redirect["Type"] == "redirect"
    assert (redirect["RedirectConfig"]["Protocol"], redirect["RedirectConfig"]["Port"],
            redirect["RedirectConfig"]["StatusCode"]) == ("HTTPS", "443", "HTTP_301")

    target_group_arn = outputs["llmserve_target_group_arns"][0]
    rules = [r for r in elbv2.describe_rules(ListenerArn=https["ListenerArn"])["Rules"] if not r["IsDefault"]]
    assert len(rules) == 1
    assert [(c["Field"], c.get("Values") or c["PathPatternConfig"]["Values"]) for c in rules[0]["Conditions"]] == [
        ("path-pattern", ["/v1/*"])]
    assert [(a["Type"], a["TargetGroupArn"]) for a in rules[0]["Actions"]] == [("forward", target_group_arn)]
    assert elbv2.describe_rules(ListenerArn=http["ListenerArn"])["Rules"][0]["IsDefault"]

    group = elbv2.describe_target_groups(TargetGroupArns=[target_group_arn])["TargetGroups"][0]
    assert (group["Protocol"], group["Port"], group["HealthCheckPath"]) == ("HTTP", VLLM_PORT, "/health")
    attributes = {a["Key"]: a["Value"]
                  for a in elbv2.describe_target_group_attributes(TargetGroupArn=target_group_arn)["Attributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "90"
    return balancer


def _assert_security_groups(ec2, outputs, balancer):
    (alb_group_id,) = balancer["SecurityGroups"]
    (hosts_group_id,) = outputs["llmserve_fleet_security_group_ids"]
    alb_group, hosts_group = (ec2.describe_security_groups(GroupIds=[g])["SecurityGroups"][0]
                              for g in (alb_group_id, hosts_group_id))
    alb_ingress = alb_group["IpPermissions"]
    assert sorted((p["FromPort"], p["ToPort"]) for p in alb_ingress) == [(80, 80), (443, 443)]
    for permission in alb_ingress:
        assert {r["CidrIp"] for r in permission["IpRanges"]} == CLIENT_CIDRS
        assert {r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])} == CLIENT_CIDRS_V6
        assert permission["UserIdGroupPairs"] == []
    assert [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in alb_group["IpPermissionsEgress"]] == [
        (VLLM_PORT, ["10.42.0.0/16"])]
    (hosts_ingress,) = hosts_group["IpPermissions"]
    assert (hosts_ingress["FromPort"], hosts_ingress["ToPort"]) == (VLLM_PORT, VLLM_PORT)
    assert [p["GroupId"] for p in hosts_ingress["UserIdGroupPairs"]] == [alb_group_id]
    assert hosts_ingress["IpRanges"] == [] and hosts_ingress.get("Ipv6Ranges", []) == []
    for group in (alb_group, hosts_group):  # no SSH, from anywhere
        assert all(not p.get("FromPort", 0) <= 22 <= p.get("ToPort", 65535) for p in group["IpPermissions"])


def _assert_vpc(ec2, outputs):
    vpc_id = outputs["llmserve_network_vpc_id"]
    private = outputs["llmserve_fleet_subnet_ids"]
    subnets = ec2.describe_subnets(SubnetIds=private)["Subnets"]
    assert len({s["AvailabilityZone"] for s in subnets}) == 2
    assert all(not s["MapPublicIpOnLaunch"] and s["VpcId"] == vpc_id for s in subnets)
    private_tables = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": private}])[
        "RouteTables"]
    assert private_tables
    for table in private_tables:  # no way out but the local route and the S3 endpoint's prefix list
        assert not [r for r in table["Routes"] if r.get("GatewayId", "").startswith("igw-")
                    or r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    (endpoint,) = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
    assert (endpoint["ServiceName"], endpoint["VpcEndpointType"]) == ("com.amazonaws.us-east-1.s3", "Gateway")
    assert set(endpoint["RouteTableIds"]) == {t["RouteTableId"] for t in private_tables}
    public_tables = [t for t in ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
        "RouteTables"] if any(r.get("GatewayId", "").startswith("igw-") for r in t["Routes"])]
    assert len(public_tables) == 1
    assert not {a.get("SubnetId") for a in public_tables[0]["Associations"]} & set(private)


def _assert_instance_role(iam, outputs):
    profile = iam.get_instance_profile(InstanceProfileName=outputs["llmserve_fleet_instance_profile"])
    assert [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]] == ["llmserve-instance"]
    documents, aws_managed = _policy_documents(iam, "llmserve-instance")
    assert aws_managed == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    assert set(documents) == {"llmserve-instance"}
    statements = {s["Sid"]: s for d in documents.values() for s in d["Statement"]}
    for statement in statements.values():
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all(re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", a) and not a.endswith(":Get") for a in actions), actions
        assert "*" not in "".join(actions)
    assert statements["ReadModelObjects"]["Resource"] == [f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"]
    assert statements["ListModelPrefix"]["Resource"] == [f"arn:aws:s3:::{BUCKET}"]
    assert statements["ListModelPrefix"]["Condition"] == {"StringLike": {"s3:prefix": [PREFIX, PREFIX + "/*"]}}
    assert statements["RegisterWithOwnTargetGroup"]["Resource"] == outputs["llmserve_target_group_arns"]
    assert statements["ReadTargetHealth"]["Resource"] == "*"  # DescribeTargetHealth has no resource-level ARN
    assert statements["ReadNamedSecrets"]["Resource"] == [
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:llmserve/api-key-??????"]
    assert statements["ReadNamedParameters"]["Resource"] == [
        "arn:aws:ssm:us-east-1:123456789012:parameter/llmserve/hf-token"]
    assert statements["CompleteTerminationLifecycleHook"]["Resource"] == [
        "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/llmserve-7b"]


def test_check_mode_on_a_fresh_account_changes_nothing(edge):
    aws, extra_vars = edge
    _changed, out = _network(aws, extra_vars, "--check")
    assert "VPC llmserve does not exist yet" in out
    _nothing_created(aws)


def test_network_edge_converges_with_its_properties_is_idempotent_and_is_removed(edge):
    aws, extra_vars = edge
    ec2, elbv2, iam = aws.client("ec2"), aws.client("elbv2"), aws.client("iam")
    changed, out = _network(aws, extra_vars)
    assert changed > 0
    assert "not-a-real" not in out
    with open(extra_vars["network_edge_outputs_path"]) as outputs_file:
        outputs = json.load(outputs_file)
    # What playbooks/fleet.yml and serve.yml take, as they take it.
    assert {"llmserve_fleet_subnet_ids", "llmserve_fleet_security_group_ids", "llmserve_fleet_instance_profile",
            "llmserve_target_group_arns"} <= set(outputs)
    assert outputs["llmserve_fleet_instance_profile"] == "llmserve-instance"

    balancer = _assert_load_balancer(elbv2, outputs, extra_vars["network_edge_certificate_arn"])
    _assert_security_groups(ec2, outputs, balancer)
    _assert_vpc(ec2, outputs)
    _assert_instance_role(iam, outputs)

    assert _network(aws, extra_vars)[0] == 0

    _network(aws, {"network_edge_state": "absent"})
    _nothing_created(aws)


def test_bad_inputs_fail_before_any_change_each_naming_its_variable(aws_clean):
    bad = {
        # an ARN of the wrong service where a secret belongs, and a role ARN where a policy ARN belongs
        "network_edge_api_key_secret": "arn:aws:s3:::llmserve-models/api-key",
        "network_edge_permissions_boundary_arn": "arn:aws:iam::123456789012:role/boundary",
        # a certificate of another region (well formed, so it is looked up too: not in this region's ACM)
        "network_edge_certificate_arn": "arn:aws:acm:eu-west-1:123456789012:certificate/"
                                        "11111111-2222-3333-4444-555555555555",
        # well formed but missing
        "network_edge_hf_token_secret": "llmserve/hf-token",
        "network_edge_allowed_cidrs": ["0.0.0.0/0"],
        "network_edge_private_subnet_cidrs": ["10.42.16.0/20", "10.42.300.0/20"],
        "network_edge_availability_zones": ["us-east-1a", "eu-west-1b"],
        "network_edge_deregistration_delay": 120,
        "network_edge_model_uri": "s3://llmserve-models/*",
    }
    _changed, out = _network(aws_clean, bad, expect_rc=2)
    message = re.search(r"network\.yml changed nothing; fix these inputs: (.*)", " ".join(out.split())).group(1)
    for expected in (
        "network_edge_api_key_secret must be a Secrets Manager secret name or arn:aws:secretsmanager:",
        "network_edge_permissions_boundary_arn must be empty or an IAM policy ARN",
        "network_edge_certificate_arn is in eu-west-1, but the load balancer is in us-east-1",
        "is not in ACM in us-east-1",
        "network_edge_hf_token_secret (llmserve/hf-token) does not exist in us-east-1",
        "network_edge_allowed_cidrs holds 0.0.0.0/0, which opens the load balancer to the whole internet",
        "network_edge_public_subnet_cidrs and network_edge_private_subnet_cidrs must hold IPv4 CIDRs",
        "network_edge_availability_zones must name distinct zones of us-east-1",
        "network_edge_deregistration_delay must be 0-119 seconds",
        "network_edge_model_uri must be s3://bucket/prefix",
    ):
        assert expected in message, (expected, message)
    assert "network_edge_vpc_cidr must" not in message and "network_edge_ssl_policy" not in message
    _nothing_created(aws_clean)
