"""sagemaker_endpoint's pure parts: input checks, planning, content-hash names, desired state and the step list."""

import pytest
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import desired
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import endpoint
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import instances
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import naming
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import scaling
from ansible_collections.llmserve.aws.plugins.modules import sagemaker_endpoint
from module_harness import capture_exit
from module_harness import run_main

ROLE = "arn:aws:iam::123456789012:role/llmserve-sagemaker"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.4.0-tgi2.3.1-gpu"
TOKEN = "hf_SentinelTokenValue0123456789abcdef"
ARGS = {"name": "llm", "execution_role_arn": ROLE, "image_uri": IMAGE, "model_data_url": "s3://models/llama",
        "instance_type": "ml.g5.xlarge", "hf_token": TOKEN}
SCALING = {"min_capacity": 1, "max_capacity": 4, "target_value": 70.0, "scale_in_cooldown": 300,
           "scale_out_cooldown": 60, "metric": None}


def params(**changes):
    """Module parameters as the argument spec would fill them in."""
    values = dict((name, spec.get("default")) for name, spec in sagemaker_endpoint.ARGUMENT_SPEC.items())
    values.update(ARGS)
    values.update(changes)
    return values


# --- bad input fails before any AWS client exists --------------------------------------------------------------

@pytest.fixture
def no_aws(monkeypatch):
    capture_exit(monkeypatch)

    def refuse(self, *args, **kwargs):
        raise AssertionError("the module built an AWS client for bad input")

    monkeypatch.setattr(AnsibleAWSModule, "client", refuse)


@pytest.mark.parametrize(("changes", "complaint"), [
    ({"name": "llm_endpoint"}, "name='llm_endpoint' is not valid"),
    ({"name": "-llm"}, "name='-llm' is not valid"),
    ({"instance_type": "ml.g5.3xlarge"}, "not a SageMaker GPU hosting type"),
    ({"instance_type": "g5.xlarge"}, "not a SageMaker GPU hosting type"),
    ({"execution_role_arn": "arn:aws:sts::123456789012:assumed-role/r/s"}, "ARN of the sts service"),
    ({"execution_role_arn": "arn:aws:ec2:us-east-1:123456789012:instance/i-1"}, "ARN of the ec2 service"),
    ({"execution_role_arn": "llmserve-sagemaker"}, "give the IAM role SageMaker assumes"),
    ({"image_uri": "ghcr.io/huggingface/text-generation-inference:3.0"}, "pulls from Amazon ECR"),
    ({"image_uri": IMAGE + "\n"}, "pulls from Amazon ECR"),
    ({"model_data_url": "https://models.s3.amazonaws.com/llama"}, "s3://BUCKET/PREFIX/"),
    ({"model_data_url": "s3://models/llama\x00"}, "s3://BUCKET/PREFIX/"),
    ({"model_data_url": None, "hf_model_id": "meta-llama/Llama 3"}, "ORGANIZATION/NAME"),
    ({"environment": {"MAX_INPUT_TOKENS": "1\r\n2"}}, "without control characters"),
    ({"environment": {"BAD-KEY": "1"}}, "environment key='BAD-KEY' is not valid"),
    ({"environment": {"HF_TOKEN": "x"}}, "use hf_token (no_log) instead"),
    ({"environment": {"SM_NUM_GPUS": "8"}}, "use num_gpus instead"),
    ({"environment": {"MAX_INPUT_TOKENS": 4096}}, "quote numbers"),
    ({"tags": {"aws:owner": "x"}}, "reserved aws: prefix"),
    ({"tags": {"team": "a\tb"}}, "tag values"),
    ({"model_parameters_b": 70, "instance_type": None, "container_startup_health_check_timeout": 300},
     "container_startup_health_check_timeout=300 s is too short for a 70.0B model"),
    ({"model_parameters_b": 70, "instance_type": "ml.g5.xlarge"}, "does not fit ml.g5.xlarge"),
    ({"num_gpus": 4}, "ml.g5.xlarge has 1 GPU(s)"),
    ({"container_startup_health_check_timeout": 30}, "out of range: use 60 to 3600"),
    ({"volume_size_gb": 100}, "has local NVMe instance storage"),
    ({"autoscaling": dict(SCALING, max_capacity=0)}, "below min_capacity"),
    ({"autoscaling": dict(SCALING, min_capacity=2)}, "initial_instance_count=1 is outside"),
    ({"autoscaling": dict(SCALING, metric={"name": "GPU\nUtilization"})}, "metric.name"),
    ({"variants": [{"name": "a", "weight": 1.0}, {"name": "a", "weight": 1.0}]}, "appears twice"),
    ({"model_data_url": None}, "give exactly one of hf_model_id and model_data_url"),
    ({"wait_timeout": 0}, "wait_timeout=0 is out of range"),
])
def test_bad_input_fails_naming_the_parameter_before_any_aws_call(no_aws, changes, complaint):
    args = dict(ARGS, **changes)
    args = dict((key, value) for key, value in args.items() if value is not None)
    exited = run_main(sagemaker_endpoint.main, args)
    assert exited.failed and complaint in exited.result["msg"], exited.result["msg"]
    assert TOKEN not in str(exited.result)


def test_a_bad_token_is_refused_without_showing_it(no_aws):
    exited = run_main(sagemaker_endpoint.main, dict(ARGS, hf_token=TOKEN + "\n"))
    assert exited.failed and "the value is not shown" in exited.result["msg"]
    assert "Sentinel" not in str(exited.result)


# --- planning -----------------------------------------------------------------------------------------------------

def test_planner_picks_instance_gpus_and_timeout_from_the_model_size():
    small = instances.plan_serving(8, None, None, None, {"max_model_len": 4096})
    assert small["instance_type"].startswith("ml.") and small["startup_timeout"] is None
    assert small["num_gpus"] == 1
    large = instances.plan_serving(70, None, None, None, {"max_model_len": 8192, "concurrency": 16})
    assert large["startup_timeout"] == instances.LARGE_MODEL_MIN_STARTUP_TIMEOUT_S
    assert large["num_gpus"] >= 4 and large["instance_type"] in instances.instance_types()
    assert instances.plan_serving(70, None, None, 900, {})["startup_timeout"] == 900
    # 13B is not "above 13B": no timeout forced.
    assert instances.plan_serving(13, None, None, 120, {})["startup_timeout"] == 120


def test_without_a_model_size_every_gpu_of_the_given_type_is_used():
    assert instances.plan_serving(None, "ml.g5.12xlarge", None, None)["num_gpus"] == 4
    with pytest.raises(instances.PlanError, match="give instance_type"):
        instances.plan_serving(None, None, None, None)


def test_sagemaker_types_come_from_the_one_catalog():
    known = instances.instance_types()
    assert {"ml.g5.xlarge", "ml.g6e.12xlarge", "ml.p4d.24xlarge", "ml.p5.48xlarge"} <= set(known)
    assert known["ml.p4d.24xlarge"]["gpu_count"] == 8


# --- names ----------------------------------------------------------------------------------------------------------

def test_names_follow_content_not_key_order_and_fit_sagemaker():
    first = naming.resource_name("llm", naming.MODEL_KIND, {"a": 1, "b": [1, 2]})
    assert first == naming.resource_name("llm", naming.MODEL_KIND, {"b": [1, 2], "a": 1})
    assert first != naming.resource_name("llm", naming.MODEL_KIND, {"a": 2, "b": [1, 2]})
    long_name = naming.resource_name("x" * 63, naming.CONFIG_KIND, {})
    assert len(long_name) == naming.MAX_NAME_LENGTH
    assert naming.is_managed_name("x" * 63, naming.CONFIG_KIND, long_name)
    assert naming.is_managed_name("llm", naming.MODEL_KIND, first)
    assert not naming.is_managed_name("llm", naming.CONFIG_KIND, first)
    assert not naming.is_managed_name("llm2", naming.MODEL_KIND, first)
    assert not naming.is_managed_name("llm", naming.MODEL_KIND, "llm-model-handmade")


# --- desired state ----------------------------------------------------------------------------------------------------

def test_desired_state_puts_the_token_only_in_the_container_and_never_in_the_view():
    target = desired.build(params())
    (model,) = target.models.values()
    environment = model["PrimaryContainer"]["Environment"]
    assert environment == {"HF_MODEL_ID": "/opt/ml/model", "SM_NUM_GPUS": "1", "HF_TOKEN": TOKEN}
    assert model["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]["S3Uri"] == "s3://models/llama/"
    view = endpoint.target_view(target)
    assert TOKEN not in str(view)
    assert view["models"][model["ModelName"]]["environment"]["HF_TOKEN"] == desired.REDACTED


def test_any_content_change_renames_model_and_config_but_tags_do_not():
    base = desired.build(params())
    image = desired.build(params(image_uri=IMAGE.replace("2.4.0", "3.0.1")))
    environment = desired.build(params(environment={"MAX_INPUT_TOKENS": "4096"}))
    instance = desired.build(params(instance_type="ml.g5.2xlarge"))
    tagged = desired.build(params(tags={"team": "ml"}))
    assert len({base.config_name, image.config_name, environment.config_name, instance.config_name}) == 4
    assert set(instance.models) == set(base.models)  # same container: same model, new config
    assert tagged.config_name == base.config_name and set(tagged.models) == set(base.models)


def test_variants_inherit_and_override():
    target = desired.build(params(variants=[
        {"name": "tgi", "weight": 0.9},
        {"name": "lmi", "weight": 0.1, "instance_type": "ml.g5.12xlarge",
         "model": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"}, "autoscaling": SCALING},
    ]))
    tgi, lmi = target.config["ProductionVariants"]
    assert (tgi["InstanceType"], lmi["InstanceType"]) == ("ml.g5.xlarge", "ml.g5.12xlarge")
    lmi_environment = target.models[lmi["ModelName"]]["PrimaryContainer"]["Environment"]
    assert lmi_environment["HF_MODEL_ID"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert lmi_environment["SM_NUM_GPUS"] == "4"
    assert "ModelDataSource" not in target.models[lmi["ModelName"]]["PrimaryContainer"]
    assert target.scaling["tgi"] is None and target.scaling["lmi"]["max_capacity"] == 4


def test_customized_metric_defaults_its_dimensions_to_the_variant():
    metric = {"name": "GPUUtilization", "namespace": "/aws/sagemaker/Endpoints", "statistic": "Average",
              "predefined": None, "dimensions": None}
    configuration = scaling.policy_configuration("llm", "AllTraffic", dict(SCALING, metric=metric))
    assert configuration["CustomizedMetricSpecification"]["Dimensions"] == [
        {"Name": "EndpointName", "Value": "llm"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    assert "PredefinedMetricSpecification" not in configuration


# --- steps ------------------------------------------------------------------------------------------------------------

def _current_for(target, status="InService", with_scaling=True, tags=None):
    """What read() would return for an endpoint already at `target`."""
    return {
        "endpoint": {"EndpointName": "llm", "EndpointStatus": status, "EndpointConfigName": target.config_name,
                     "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/llm"},
        "variants": target.config["ProductionVariants"],
        "containers": dict((name, model["PrimaryContainer"]) for name, model in target.models.items()),
        "scaling": dict(target.scaling) if with_scaling else dict.fromkeys(target.scaling),
        "tags": dict(tags or {}),
        "configs": [target.config_name],
        "models": sorted(target.models),
    }


def test_no_difference_means_no_step():
    target = desired.build(params(autoscaling=SCALING))
    assert endpoint.present_steps(_current_for(target), target, delete_old=True) == []


def test_instance_type_change_under_scaling_deregisters_first_and_cleans_up_after():
    before = desired.build(params(autoscaling=SCALING))
    after = desired.build(params(autoscaling=SCALING, instance_type="ml.g5.2xlarge"))
    steps = endpoint.present_steps(_current_for(before), after, delete_old=True)
    assert steps == [("remove_autoscaling", "AllTraffic"), ("create_endpoint_config", after.config_name),
                     ("update_endpoint", after.config_name), ("put_autoscaling", "AllTraffic"),
                     ("delete_endpoint_config", before.config_name)]
    kept = endpoint.present_steps(_current_for(before), after, delete_old=False)
    assert ("delete_endpoint_config", before.config_name) not in kept


def test_a_failed_endpoint_is_replaced_and_an_endpoint_moving_to_the_target_is_left_alone():
    target = desired.build(params())
    assert endpoint.present_steps(_current_for(target, "Failed"), target, True) == [
        ("delete_failed_endpoint", "llm"), ("create_endpoint", target.config_name)]
    assert endpoint.present_steps(_current_for(target, "Creating"), target, True) == []


def test_tags_are_added_and_removed_on_the_endpoint():
    target = desired.build(params(tags={"team": "ml", "cost": "llm"}))
    current = _current_for(target, tags={"team": "old", "stale": "x"})
    assert endpoint.present_steps(current, target, True) == [
        ("tag_endpoint", ["cost", "team"]), ("untag_endpoint", ["stale"])]


def test_absent_removes_scaling_before_the_endpoint_and_then_what_it_ran_on():
    target = desired.build(params(autoscaling=SCALING))
    assert endpoint.absent_steps(_current_for(target), delete_old=True) == [
        ("remove_autoscaling", "AllTraffic"), ("delete_endpoint", "llm"),
        ("delete_endpoint_config", target.config_name)] + [("delete_model", name) for name in sorted(target.models)]
