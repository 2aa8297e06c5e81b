"""The local AWS (tests/bench/moto_server.py) with real boto3: the fixture, and each AWS behaviour the
extensions restore on top of moto 5.2.5. Every test marked "moto lags" fails against moto alone:
`LLMSERVE_MOTO_PLAIN=1 pytest tests/integration/test_moto_server.py` shows which still do after an upgrade."""

import json
import time
import urllib.error
from collections.abc import Callable
from typing import Any

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from tests.support.wait import poll

ROLE_ARN = "arn:aws:iam::123456789012:role/llmserve"
AMI = "ami-12c6146b"  # one of moto's built-in AMIs
FLEET_TAG = "aws:ec2spot:fleet-request-id"


def error_code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return error.value.response["Error"]["Code"]


# --- the fixture -------------------------------------------------------------------------------------------


def test_env_sends_boto3_to_moto_without_endpoint_url(aws_clean, monkeypatch):
    for name, value in aws_clean.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    s3 = boto3.session.Session().client("s3")  # no endpoint, region or keys given
    s3.create_bucket(Bucket="reached-through-env")

    assert s3.meta.endpoint_url == aws_clean.endpoint_url
    buckets = aws_clean.client("s3").list_buckets()["Buckets"]
    assert [bucket["Name"] for bucket in buckets] == ["reached-through-env"]


@pytest.mark.parametrize("run", [1, 2])
def test_aws_clean_starts_every_test_empty(aws_clean, run):
    s3 = aws_clean.client("s3")
    assert s3.list_buckets()["Buckets"] == []
    s3.create_bucket(Bucket=f"left-behind-{run}")  # the other run must not see it


def test_reset_clears_state_and_settings(aws):
    aws.reset()
    startup = aws.settings()
    aws.client("s3").create_bucket(Bucket="to-be-reset")
    aws.configure(sagemaker_delay_s=startup["sagemaker_delay_s"] + 5)

    aws.reset()

    assert aws.client("s3").list_buckets()["Buckets"] == []
    assert aws.settings() == startup


def test_control_endpoint_rejects_unknown_and_invalid_settings(aws_clean):
    before = aws_clean.settings()
    for bad in ({"no_such_delay_s": 1}, {"sagemaker_delay_s": -1}, {"sagemaker_delay_s": "soon"}):
        with pytest.raises(urllib.error.HTTPError) as raised:
            aws_clean.configure(**bad)
        assert raised.value.code == 400
        assert "error" in json.loads(raised.value.read())
    assert aws_clean.settings() == before


# --- Fault injection (moto_ext/faults.py) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "raised", "code"),
    [("denied", "ClientError", "AccessDenied"), ("throttled", "ClientError", "Throttling"),
     ("html_502", "ResponseParserError", None)],
)
def test_an_injected_fault_answers_as_aws_does_then_moto_answers_again(aws_clean, kind, raised, code):
    elbv2 = aws_clean.client("elbv2", config=botocore.config.Config(retries={"total_max_attempts": 1}))
    aws_clean.inject_fault("DescribeTargetGroups", kind, count=1)
    with pytest.raises(Exception) as failure:
        elbv2.describe_target_groups()
    assert type(failure.value).__name__ == raised
    if code:
        assert failure.value.response["Error"]["Code"] == code
    assert elbv2.describe_target_groups()["TargetGroups"] == []  # count=1: the next call is moto's own


def test_a_slow_fault_delays_the_answer_and_reset_clears_faults(aws):
    aws.reset()
    elbv2 = aws.client("elbv2")
    aws.inject_fault("DescribeTargetGroups", "slow", delay_s=0.5)
    started = time.monotonic()
    elbv2.describe_target_groups()
    assert time.monotonic() - started >= 0.5
    aws.reset()
    started = time.monotonic()
    elbv2.describe_target_groups()
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    "bad", [{"action": "Deregister Targets", "kind": "denied"}, {"action": "X", "kind": "lost"},
            {"action": "X", "kind": "slow"}, {"action": "X", "kind": "denied", "count": 0}, {"action": "X", "kind": "denied", "x": 1}]
)
def test_bad_faults_are_refused(aws_clean, bad):
    with pytest.raises(urllib.error.HTTPError) as raised:
        aws_clean.inject_fault(**bad)
    assert raised.value.code == 400


# --- SageMaker -----------------------------------------------------------------------------------------------


def make_endpoint_config(sagemaker, name: str, instance_type: str = "ml.m5.xlarge", variant: str = "primary") -> None:
    try:
        sagemaker.describe_model(ModelName="llm")
    except ClientError:
        sagemaker.create_model(ModelName="llm", ExecutionRoleArn=ROLE_ARN, PrimaryContainer={"Image": "vllm:latest"})
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": variant, "ModelName": "llm", "InstanceType": instance_type, "InitialInstanceCount": 1}
        ],
    )


def endpoint_status(sagemaker, name: str) -> Callable[[], str]:
    return lambda: sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"]


def test_endpoint_is_creating_then_in_service(aws_clean):
    # moto lags: InService at once. AWS: Creating first.
    delay_s = 0.8
    aws_clean.configure(sagemaker_delay_s=delay_s)
    sagemaker = aws_clean.client("sagemaker")
    make_endpoint_config(sagemaker, "cfg")

    sagemaker.create_endpoint(EndpointName="llm", EndpointConfigName="cfg")

    assert endpoint_status(sagemaker, "llm")() == "Creating"
    assert [e["EndpointName"] for e in sagemaker.list_endpoints(StatusEquals="Creating")["Endpoints"]] == ["llm"]
    # moto lags: a second CreateEndpoint silently replaces the first. AWS refuses.
    with pytest.raises(ClientError, match="Cannot create already existing endpoint") as raised:
        sagemaker.create_endpoint(EndpointName="llm", EndpointConfigName="cfg")
    assert error_code(raised) == "ValidationException"
    status, elapsed = poll(endpoint_status(sagemaker, "llm"), lambda s: s != "Creating", what="the endpoint to leave Creating")
    assert status == "InService"
    assert elapsed >= delay_s - 0.2  # the Creating period was really spent, not skipped


def test_update_endpoint_moves_to_the_new_config(aws_clean):
    # moto lags: UpdateEndpoint is not implemented (HTTP 500).
    sagemaker = aws_clean.client("sagemaker")
    make_endpoint_config(sagemaker, "blue", "ml.m5.xlarge", variant="blue")
    make_endpoint_config(sagemaker, "green", "ml.c5.2xlarge", variant="green")
    aws_clean.configure(sagemaker_delay_s=0)
    sagemaker.create_endpoint(EndpointName="llm", EndpointConfigName="blue")
    delay_s = 0.6
    aws_clean.configure(sagemaker_delay_s=delay_s)

    arn = sagemaker.update_endpoint(EndpointName="llm", EndpointConfigName="green")["EndpointArn"]

    during = sagemaker.describe_endpoint(EndpointName="llm")
    assert arn == during["EndpointArn"]
    assert during["EndpointStatus"] == "Updating"
    assert during["EndpointConfigName"] == "blue"  # still serving the old variants while updating
    assert [v["VariantName"] for v in during["ProductionVariants"]] == ["blue"]
    assert during["PendingDeploymentSummary"]["EndpointConfigName"] == "green"
    with pytest.raises(ClientError, match="Cannot update in-progress endpoint") as raised:
        sagemaker.update_endpoint(EndpointName="llm", EndpointConfigName="blue")
    assert error_code(raised) == "ValidationException"

    status, elapsed = poll(endpoint_status(sagemaker, "llm"), lambda s: s != "Updating", what="the endpoint to leave Updating")
    after = sagemaker.describe_endpoint(EndpointName="llm")
    assert status == "InService"
    assert elapsed >= delay_s - 0.2
    assert after["EndpointConfigName"] == "green"
    assert [v["VariantName"] for v in after["ProductionVariants"]] == ["green"]
    assert "PendingDeploymentSummary" not in after


def test_update_endpoint_rejects_missing_endpoint_or_config(aws_clean):
    sagemaker = aws_clean.client("sagemaker")
    make_endpoint_config(sagemaker, "cfg")
    aws_clean.configure(sagemaker_delay_s=0)
    sagemaker.create_endpoint(EndpointName="llm", EndpointConfigName="cfg")

    with pytest.raises(ClientError, match="Could not find endpoint configuration") as missing_config:
        sagemaker.update_endpoint(EndpointName="llm", EndpointConfigName="no-such-config")
    with pytest.raises(ClientError, match="Could not find endpoint") as missing_endpoint:
        sagemaker.update_endpoint(EndpointName="no-such-endpoint", EndpointConfigName="cfg")

    assert error_code(missing_config) == error_code(missing_endpoint) == "ValidationException"
    described = sagemaker.describe_endpoint(EndpointName="llm")
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", "cfg")


def test_update_weights_shows_updating(aws_clean):
    # moto lags: flips through Updating inside the call, so nobody can observe it.
    sagemaker = aws_clean.client("sagemaker")
    make_endpoint_config(sagemaker, "cfg")
    aws_clean.configure(sagemaker_delay_s=0)
    sagemaker.create_endpoint(EndpointName="llm", EndpointConfigName="cfg")
    aws_clean.configure(sagemaker_delay_s=0.5)

    sagemaker.update_endpoint_weights_and_capacities(
        EndpointName="llm", DesiredWeightsAndCapacities=[{"VariantName": "primary", "DesiredInstanceCount": 2}]
    )

    assert endpoint_status(sagemaker, "llm")() == "Updating"
    poll(endpoint_status(sagemaker, "llm"), lambda s: s == "InService", what="the endpoint InService")
    variant = sagemaker.describe_endpoint(EndpointName="llm")["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 2


def test_deleted_endpoint_is_deleting_then_gone(aws_clean):
    # moto lags: gone at once. AWS: Deleting first.
    sagemaker = aws_clean.client("sagemaker")
    make_endpoint_config(sagemaker, "cfg")
    aws_clean.configure(sagemaker_delay_s=0)
    sagemaker.create_endpoint(EndpointName="llm", EndpointConfigName="cfg")
    aws_clean.configure(sagemaker_delay_s=0.5)

    sagemaker.delete_endpoint(EndpointName="llm")

    assert endpoint_status(sagemaker, "llm")() == "Deleting"

    def exists() -> bool:
        return bool(sagemaker.list_endpoints(NameContains="llm")["Endpoints"])

    poll(exists, lambda present: not present, what="the endpoint to be gone")
    with pytest.raises(ClientError, match="Could not find endpoint"):
        sagemaker.describe_endpoint(EndpointName="llm")


def test_forced_failure_fails_a_create_and_rolls_back_an_update(aws_clean):
    # moto lags: nothing ever fails. AWS: a failed create ends Failed; a failed update rolls back to the old
    # config, InService; both with a FailureReason.
    sagemaker = aws_clean.client("sagemaker")
    make_endpoint_config(sagemaker, "blue")
    make_endpoint_config(sagemaker, "green", "ml.g5.xlarge")
    aws_clean.configure(sagemaker_delay_s=0)
    sagemaker.create_endpoint(EndpointName="llm", EndpointConfigName="blue")
    aws_clean.configure(sagemaker_delay_s=0.3, sagemaker_failure_reason="health check failed")

    sagemaker.update_endpoint(EndpointName="llm", EndpointConfigName="green")
    poll(endpoint_status(sagemaker, "llm"), lambda status: status != "Updating", what="the update to roll back")
    rolled_back = sagemaker.describe_endpoint(EndpointName="llm")
    sagemaker.create_endpoint(EndpointName="other", EndpointConfigName="green")
    status, _elapsed = poll(endpoint_status(sagemaker, "other"), lambda status: status != "Creating",
                            what="the create to fail")

    assert (rolled_back["EndpointStatus"], rolled_back["EndpointConfigName"]) == ("InService", "blue")
    assert rolled_back["FailureReason"] == "health check failed"
    assert status == "Failed"
    assert sagemaker.describe_endpoint(EndpointName="other")["FailureReason"] == "health check failed"


def test_instance_type_change_under_autoscaling_is_refused(aws_clean):
    # moto lags: UpdateEndpoint ignores Application Auto Scaling. AWS refuses to change the instance type of a
    # variant registered as a scalable target.
    sagemaker = aws_clean.client("sagemaker")
    make_endpoint_config(sagemaker, "small", "ml.g5.xlarge")
    make_endpoint_config(sagemaker, "big", "ml.g5.2xlarge")
    aws_clean.configure(sagemaker_delay_s=0)
    sagemaker.create_endpoint(EndpointName="llm", EndpointConfigName="small")
    aws_clean.client("application-autoscaling").register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId="endpoint/llm/variant/primary",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=1, MaxCapacity=2)

    with pytest.raises(ClientError, match="must be deregistered as scalable targets"):
        sagemaker.update_endpoint(EndpointName="llm", EndpointConfigName="big")
    assert sagemaker.describe_endpoint(EndpointName="llm")["EndpointConfigName"] == "small"


def test_failure_reason_setting_takes_text_only(aws_clean):
    for bad in ({"sagemaker_failure_reason": 3}, {"sagemaker_failure_reason": "two\nlines"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            aws_clean.configure(**bad)
        assert refused.value.code == 400
    assert aws_clean.settings()["sagemaker_failure_reason"] == ""


@pytest.mark.parametrize(
    "instance_type",
    ["ml.g5.12xlarge", "ml.g6.xlarge", "ml.g6e.48xlarge", "ml.p4d.24xlarge", "ml.p5.48xlarge", "ml.inf2.48xlarge"],
)
def test_llm_instance_types_are_accepted(aws_clean, instance_type):
    # moto lags: rejects these with ValidationException from an old hard-coded list.
    sagemaker = aws_clean.client("sagemaker")
    make_endpoint_config(sagemaker, "cfg", instance_type)
    variants = sagemaker.describe_endpoint_config(EndpointConfigName="cfg")["ProductionVariants"]
    assert variants[0]["InstanceType"] == instance_type


def test_unknown_instance_types_are_still_rejected(aws_clean):
    sagemaker = aws_clean.client("sagemaker")
    with pytest.raises(ClientError) as raised:
        make_endpoint_config(sagemaker, "cfg", "ml.g5.huge")
    assert error_code(raised) == "ValidationException"


# --- EC2 Spot Fleet and instance filters --------------------------------------------------------------------


@pytest.fixture
def network(aws_clean) -> dict[str, Any]:
    ec2 = aws_clean.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]
    subnet_b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone="us-east-1b")["Subnet"]
    template = ec2.create_launch_template(
        LaunchTemplateName="llm-node",
        LaunchTemplateData={
            "ImageId": AMI,
            "InstanceType": "g5.xlarge",
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "role", "Value": "vllm"}]}],
        },
    )["LaunchTemplate"]
    return {"ec2": ec2, "vpc": vpc, "a": subnet_a["SubnetId"], "b": subnet_b["SubnetId"], "template": template}


def request_fleet(network: dict[str, Any], overrides: list[dict[str, Any]], **config: Any) -> str:
    fleet_config = {
        "IamFleetRole": ROLE_ARN,
        "TargetCapacity": 3,
        "LaunchTemplateConfigs": [
            {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateId": network["template"]["LaunchTemplateId"],
                    "Version": "$Latest",
                },
                "Overrides": overrides,
            }
        ],
    }
    fleet_config.update(config)
    return network["ec2"].request_spot_fleet(SpotFleetRequestConfig=fleet_config)["SpotFleetRequestId"]


def fleet_state(ec2, fleet_id: str) -> str:
    return ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[fleet_id])["SpotFleetRequestConfigs"][0][
        "SpotFleetRequestState"
    ]


def instances(ec2, **filters: list[str]) -> list[dict[str, Any]]:
    pages = ec2.describe_instances(Filters=[{"Name": name, "Values": values} for name, values in filters.items()])
    return [instance for reservation in pages["Reservations"] for instance in reservation["Instances"]]


def test_spot_fleet_is_submitted_then_active_across_all_overrides(aws_clean, network):
    # moto lags: active at once, every instance from Overrides[0], no fleet tag, no template MetadataOptions.
    ec2 = network["ec2"]
    delay_s = 0.5
    aws_clean.configure(spot_fleet_delay_s=delay_s)
    overrides = [
        {"InstanceType": "g5.xlarge", "SubnetId": network["a"]},
        {"InstanceType": "g5.xlarge", "SubnetId": network["b"]},
        {"InstanceType": "g6.xlarge", "SubnetId": network["b"]},
    ]

    fleet_id = request_fleet(network, overrides, AllocationStrategy="diversified", TargetCapacity=3)

    assert fleet_state(ec2, fleet_id) == "submitted"
    assert ec2.describe_spot_fleet_instances(SpotFleetRequestId=fleet_id)["ActiveInstances"] == []
    state, elapsed = poll(lambda: fleet_state(ec2, fleet_id), lambda s: s != "submitted", what="the fleet to leave submitted")
    assert state == "active"
    assert elapsed >= delay_s - 0.2

    launched = instances(ec2, **{f"tag:{FLEET_TAG}": [fleet_id]})
    assert sorted((i["InstanceType"], i["SubnetId"]) for i in launched) == sorted(
        (o["InstanceType"], o["SubnetId"]) for o in overrides
    )
    active = ec2.describe_spot_fleet_instances(SpotFleetRequestId=fleet_id)["ActiveInstances"]
    assert {a["InstanceId"] for a in active} == {i["InstanceId"] for i in launched}
    for instance in launched:
        tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
        assert tags["role"] == "vllm"  # from the launch template
        assert tags["aws:ec2launchtemplate:id"] == network["template"]["LaunchTemplateId"]
        assert instance["InstanceLifecycle"] == "spot"
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
    config = ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[fleet_id])["SpotFleetRequestConfigs"][0]
    assert config["SpotFleetRequestConfig"]["FulfilledCapacity"] == 3


@pytest.mark.parametrize("by", ["Name", "Arn"])
def test_fleet_instances_get_the_launch_templates_instance_profile(aws_clean, network, by):
    # moto lags: no instance profile on fleet instances, so their metadata would serve no credentials.
    ec2, iam = network["ec2"], aws_clean.client("iam")
    profile = iam.create_instance_profile(InstanceProfileName="llm-node")["InstanceProfile"]
    template = ec2.create_launch_template(
        LaunchTemplateName="llm-node-with-profile",
        LaunchTemplateData={"ImageId": AMI, "InstanceType": "g5.xlarge",
                            "IamInstanceProfile": {by: profile[{"Name": "InstanceProfileName", "Arn": "Arn"}[by]]}},
    )["LaunchTemplate"]  # fmt: skip
    fleet_id = request_fleet(
        {**network, "template": template}, [{"InstanceType": "g5.xlarge", "SubnetId": network["a"]}],
        AllocationStrategy="diversified", TargetCapacity=2, OnDemandTargetCapacity=1,
    )  # fmt: skip
    launched = poll(lambda: instances(ec2, **{f"tag:{FLEET_TAG}": [fleet_id]}), lambda found: len(found) == 2,
                    what="the fleet's two instances")[0]  # fmt: skip
    assert sorted(i.get("InstanceLifecycle", "on-demand") for i in launched) == ["on-demand", "spot"]
    assert [i["IamInstanceProfile"]["Arn"] for i in launched] == [profile["Arn"]] * 2


def test_spot_fleet_lowest_price_fills_the_cheapest_pools(aws_clean, network):
    ec2 = network["ec2"]
    aws_clean.configure(spot_fleet_delay_s=0)
    overrides = [
        {"InstanceType": "g5.xlarge", "SubnetId": network["a"], "SpotPrice": "0.90"},
        {"InstanceType": "g6.xlarge", "SubnetId": network["b"], "SpotPrice": "0.30"},
        # Cheaper per unit of capacity than the g6.xlarge pool: 0.50 for a weight of 2.
        {"InstanceType": "g5.2xlarge", "SubnetId": network["b"], "SpotPrice": "0.50", "WeightedCapacity": 2},
    ]

    fleet_id = request_fleet(
        network, overrides, AllocationStrategy="lowestPrice", InstancePoolsToUseCount=2, TargetCapacity=6
    )

    launched = instances(ec2, **{f"tag:{FLEET_TAG}": [fleet_id]})
    types = sorted(i["InstanceType"] for i in launched)
    assert types == ["g5.2xlarge", "g5.2xlarge", "g6.xlarge", "g6.xlarge"]  # 2*2 + 2*1 = 6, never the g5.xlarge


def test_spot_fleet_capacity_optimized_prioritized_takes_the_best_priority(aws_clean, network):
    ec2 = network["ec2"]
    aws_clean.configure(spot_fleet_delay_s=0)
    overrides = [
        {"InstanceType": "g5.xlarge", "SubnetId": network["a"], "Priority": 2},
        {"InstanceType": "g6.xlarge", "SubnetId": network["b"], "Priority": 1},
    ]

    fleet_id = request_fleet(network, overrides, AllocationStrategy="capacityOptimizedPrioritized")

    launched = instances(ec2, **{f"tag:{FLEET_TAG}": [fleet_id]})
    assert [i["InstanceType"] for i in launched] == ["g6.xlarge"] * 3


def test_instance_lifecycle_filter(aws_clean, network):
    # moto lags: this filter raises NotImplementedError (HTTP 500).
    ec2 = network["ec2"]
    aws_clean.configure(spot_fleet_delay_s=0)
    fleet_id = request_fleet(network, [{"InstanceType": "g5.xlarge", "SubnetId": network["a"]}], TargetCapacity=2)
    on_demand = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]

    spot = instances(ec2, **{"instance-lifecycle": ["spot"]})
    fleet_ids = {i["InstanceId"] for i in instances(ec2, **{f"tag:{FLEET_TAG}": [fleet_id]})}

    assert {i["InstanceId"] for i in spot} == fleet_ids and len(fleet_ids) == 2
    assert instances(ec2, **{"instance-lifecycle": ["scheduled", "capacity-block"]}) == []
    described = instances(ec2, **{"instance-id": [on_demand["InstanceId"]]})
    assert "InstanceLifecycle" not in described[0]  # AWS omits it for on-demand instances


# --- ELBv2 target health ------------------------------------------------------------------------------------


def target_states(elbv2, target_group_arn: str, **kwargs: Any) -> dict[str, str]:
    descriptions = elbv2.describe_target_health(TargetGroupArn=target_group_arn, **kwargs)["TargetHealthDescriptions"]
    return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in descriptions}


@pytest.fixture
def target_group(aws_clean, network) -> dict[str, Any]:
    ec2, elbv2 = network["ec2"], aws_clean.client("elbv2")
    reservation = ec2.run_instances(
        ImageId=AMI, MinCount=2, MaxCount=2, InstanceType="g5.xlarge", SubnetId=network["a"]
    )
    arn = elbv2.create_target_group(
        Name="vllm", Protocol="HTTP", Port=8000, VpcId=network["vpc"], HealthCheckPath="/health"
    )["TargetGroups"][0]["TargetGroupArn"]
    return {"elbv2": elbv2, "arn": arn, "instances": [i["InstanceId"] for i in reservation["Instances"]]}


def test_deregistered_target_drains_for_the_deregistration_delay(aws_clean, target_group):
    # moto lags: the target vanishes at once. AWS: draining for deregistration_delay.timeout_seconds.
    elbv2, arn, (leaving, staying) = target_group["elbv2"], target_group["arn"], target_group["instances"]
    aws_clean.configure(elb_drain_cap_s=-1)  # no cap: the target group's own delay rules
    elbv2.modify_target_group_attributes(
        TargetGroupArn=arn, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "1"}]
    )
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": leaving}, {"Id": staying}])

    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": leaving}])

    assert target_states(elbv2, arn) == {leaving: "draining", staying: "healthy"}
    states, elapsed = poll(lambda: target_states(elbv2, arn), lambda s: leaving not in s, what="the draining target to leave")
    assert states == {staying: "healthy"}
    assert elapsed >= 0.8
    assert target_states(elbv2, arn, Targets=[{"Id": leaving}]) == {leaving: "unused"}


def test_drain_is_capped_by_the_setting(aws_clean, target_group):
    elbv2, arn, (leaving, _unused) = target_group["elbv2"], target_group["arn"], target_group["instances"]
    aws_clean.configure(elb_drain_cap_s=0.4)  # the target group keeps AWS's default 300 s delay
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": leaving}])
    start = time.monotonic()

    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": leaving}])

    assert target_states(elbv2, arn, Targets=[{"Id": leaving}]) == {leaving: "draining"}
    poll(lambda: target_states(elbv2, arn), lambda s: s == {}, timeout_s=60, what="no targets")
    assert time.monotonic() - start >= 0.3  # drained after the cap (the wait above proves: not after 300 s)


def test_reregistering_a_draining_target_stops_the_drain(aws_clean, target_group):
    elbv2, arn, (target, _unused) = target_group["elbv2"], target_group["arn"], target_group["instances"]
    aws_clean.configure(elb_drain_cap_s=30)
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": target}])
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": target}])

    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": target}])

    assert target_states(elbv2, arn) == {target: "healthy"}


def test_new_target_is_initial_before_healthy(aws_clean, target_group):
    # moto lags: healthy at once. AWS: initial until health checks pass (a setting here; default 0).
    elbv2, arn, (target, _unused) = target_group["elbv2"], target_group["arn"], target_group["instances"]
    aws_clean.configure(elb_initial_s=0.4)

    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": target}])

    assert target_states(elbv2, arn) == {target: "initial"}
    poll(lambda: target_states(elbv2, arn), lambda s: s == {target: "healthy"}, timeout_s=5, what="the target healthy")
