"""llmserve.aws.sagemaker_endpoint run by ansible-playbook against the local AWS (moto + moto_ext).

The SageMaker extensions make endpoints pass through Creating/Updating/Deleting, implement UpdateEndpoint, accept
ml.g5+ types, refuse an instance-type change under auto scaling, and fail a create/update on demand with a
FailureReason (tests/bench/moto_ext/sagemaker.py), so these runs see SageMaker's real sequence of states.
Each playbook run covers several steps, because starting ansible-playbook is the slow part.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT_S = 240
ROLE = "arn:aws:iam::123456789012:role/llmserve-sagemaker"
ECR = "763104351884.dkr.ecr.us-east-1.amazonaws.com"
IMAGE_V1 = f"{ECR}/huggingface-pytorch-tgi-inference:2.4.0-tgi2.3.1-gpu-py311-cu124-ubuntu22.04"
IMAGE_V2 = f"{ECR}/huggingface-pytorch-tgi-inference:3.0.1-tgi3.0.1-gpu-py311-cu124-ubuntu22.04"
TOKEN = "hf_SentinelTokenValue0123456789abcdef"
# Transitions short enough that a run sees Creating/Updating at the first poll and InService at the next.
SAGEMAKER_DELAY_S = 0.3

BASE = {
    "name": "llm",
    "execution_role_arn": ROLE,
    "image_uri": IMAGE_V1,
    "model_data_url": "s3://llmserve-models/Llama-3.1-8B-Instruct",
    "hf_token": TOKEN,
    "instance_type": "ml.g5.xlarge",
    "environment": {"MAX_INPUT_TOKENS": "4096"},
    "tags": {"team": "ml"},
    "wait_sleep": 1,
    "wait_timeout": 60,
}
SCALING = {"min_capacity": 1, "max_capacity": 4, "target_value": 70}
GPU_SCALING = dict(SCALING, metric={"name": "GPUUtilization"}, target_value=60)


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def _env(aws) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ANSIBLE_"))}
    env.update(aws.env)
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT / ".collections"),
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PIPELINING": "1",  # one process per task instead of copy, chmod, run and clean up
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        }
    )
    return env


def module_task(title: str, args: dict[str, Any], check: bool = False) -> dict[str, Any]:
    return {"name": title, "llmserve.aws.sagemaker_endpoint": args, "check_mode": check, "diff": True}


def four_steps(title: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    """check -> changed, apply -> changed, check -> ok, apply -> ok."""
    return [
        module_task(f"{title} 1 check", args, check=True),
        module_task(f"{title} 2 apply", args),
        module_task(f"{title} 3 check", args, check=True),
        module_task(f"{title} 4 apply", args),
    ]


class Run:
    def __init__(self, completed: subprocess.CompletedProcess, wall_s: float):
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr
        self.wall_s = wall_s
        try:
            document = json.loads(completed.stdout)
        except ValueError:
            raise AssertionError(f"no JSON from ansible-playbook:\n{completed.stdout}\n{completed.stderr}") from None
        self.results = {
            task["task"]["name"]: task["hosts"]["localhost"]
            for play in document["plays"]
            for task in play["tasks"]
            if "localhost" in task["hosts"]
        }

    def __getitem__(self, title: str) -> dict[str, Any]:
        return self.results[title]


def playbook(aws, tmp_path: Path, tasks: list[dict[str, Any]]) -> Run:
    play = [{"name": "sagemaker_endpoint", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "tasks": tasks}]
    path = tmp_path / "play.yml"
    path.write_text(json.dumps(play))  # JSON is YAML
    return ansible_playbook(aws, str(path))


def ansible_playbook(aws, *args: str) -> Run:
    started = time.monotonic()
    completed = subprocess.run(
        [_tool("ansible-playbook"), "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}", *args],
        cwd=REPO_ROOT, env=_env(aws),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    return Run(completed, time.monotonic() - started)


def assert_four_steps(run: Run, title: str) -> None:
    flags = [run[f"{title} {n} {kind}"].get("changed") for n, kind in
             ((1, "check"), (2, "apply"), (3, "check"), (4, "apply"))]
    failures = [run[f"{title} {n} {kind}"].get("msg") for n, kind in
                ((1, "check"), (2, "apply"), (3, "check"), (4, "apply")) if run[f"{title} {n} {kind}"].get("failed")]
    assert not failures, failures
    assert flags == [True, True, False, False], (title, flags)
    predicted, done = run[f"{title} 1 check"], run[f"{title} 2 apply"]
    # Check mode predicts exactly the steps and the state the apply then produces.
    assert predicted["changes"] == done["changes"], title
    assert predicted["diff"]["after"] == done["diff"]["after"], title
    assert run[f"{title} 3 check"]["changes"] == [] and run[f"{title} 4 apply"]["changes"] == []


def actions(result: dict[str, Any]) -> list[str]:
    return [change["action"] for change in result["changes"]]


@pytest.fixture
def local_aws(aws_clean):
    aws_clean.configure(sagemaker_delay_s=SAGEMAKER_DELAY_S)
    return aws_clean


def test_lifecycle_is_idempotent_at_every_step(local_aws, tmp_path):
    scaled = dict(BASE, autoscaling=SCALING)
    # A new image and environment together (each alone renames the model: tests/unit/test_sagemaker_endpoint_logic.py).
    new_image = dict(scaled, image_uri=IMAGE_V2, environment={"MAX_INPUT_TOKENS": "4096", "MAX_TOTAL_TOKENS": "8192"})
    bigger = dict(new_image, instance_type="ml.g5.2xlarge")
    gpu_scaled = dict(bigger, autoscaling=GPU_SCALING)
    tasks = (four_steps("create", scaled) + four_steps("image", new_image) + four_steps("instance type", bigger) + four_steps("scaling metric", gpu_scaled)
             + four_steps("delete", {"name": "llm", "state": "absent", "wait_sleep": 1, "wait_timeout": 60}))
    run = playbook(local_aws, tmp_path, tasks)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr

    for title in ("create", "image", "instance type", "scaling metric", "delete"):
        assert_four_steps(run, title)

    created = run["create 2 apply"]
    assert created["endpoint_status"] == "InService"
    assert actions(created) == ["create_model", "create_endpoint_config", "create_endpoint", "put_autoscaling"]
    assert created["scaling_policy_arns"]["AllTraffic"]
    assert created["autoscaling"]["AllTraffic"]["metric"] == {"predefined": "SageMakerVariantInvocationsPerInstance"}
    assert created["waits"][0]["attempts"] >= 2  # it saw Creating before InService
    assert created["variants"][0]["instance_type"] == "ml.g5.xlarge"
    model = created["diff"]["after"]["models"][created["model_names"][0]]
    assert model["environment"]["HF_TOKEN"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert model["environment"]["SM_NUM_GPUS"] == "1" and model["environment"]["HF_MODEL_ID"] == "/opt/ml/model"
    assert model["model_data_url"] == "s3://llmserve-models/Llama-3.1-8B-Instruct/"

    # A new image is a new model and config, switched with UpdateEndpoint; the superseded ones are deleted.
    updated = run["image 2 apply"]
    assert actions(updated) == ["create_model", "create_endpoint_config", "update_endpoint",
                                "delete_endpoint_config", "delete_model"]
    assert updated["diff"]["before"]["endpoint_config_name"] == created["endpoint_config_name"]
    assert updated["endpoint_config_name"] != created["endpoint_config_name"]
    assert {"action": "delete_endpoint_config", "subject": created["endpoint_config_name"]} in updated["changes"]

    after_env = updated["diff"]["after"]["models"][updated["model_names"][0]]["environment"]
    assert after_env["MAX_TOTAL_TOKENS"] == "8192" and after_env["HF_TOKEN"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    # SageMaker refuses an instance-type change under auto scaling: deregister, update, register again.
    assert actions(run["instance type 2 apply"]) == [
        "remove_autoscaling", "create_endpoint_config", "update_endpoint", "put_autoscaling",
        "delete_endpoint_config"]
    assert actions(run["scaling metric 2 apply"]) == ["put_autoscaling"]
    metric = run["scaling metric 2 apply"]["autoscaling"]["AllTraffic"]["metric"]
    assert metric == {"name": "GPUUtilization", "namespace": "/aws/sagemaker/Endpoints", "statistic": "Average",
                      "dimensions": [{"name": "EndpointName", "value": "llm"},
                                     {"name": "VariantName", "value": "AllTraffic"}]}
    assert actions(run["delete 2 apply"]) == ["remove_autoscaling", "delete_endpoint", "delete_endpoint_config",
                                              "delete_model"]

    assert TOKEN not in run.stdout and TOKEN not in run.stderr
    sagemaker = local_aws.client("sagemaker")
    assert sagemaker.list_endpoints()["Endpoints"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert sagemaker.list_models()["Models"] == []
    scaling = local_aws.client("application-autoscaling")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []


def rescued(title: str, args: dict[str, Any], complaint: str) -> dict[str, Any]:
    """A task expected to fail: the rescue asserts the failure's message, and the play goes on."""
    return {
        "name": f"{title} block",
        "block": [module_task(title, args)],
        "rescue": [{
            "name": f"{title} failed as expected",
            "ansible.builtin.assert": {"that": [f"ansible_failed_result.msg is search({complaint!r})",
                                                "not ansible_failed_result.changed"],
                                       "fail_msg": "{{ ansible_failed_result.msg }}"},
        }],
    }


def configure_task(title: str, **settings: Any) -> dict[str, Any]:
    """Change the local AWS's settings from inside the play (tests/bench/moto_server.py control endpoint)."""
    return {"name": title, "ansible.builtin.uri": {
        "url": "{{ lookup('ansible.builtin.env', 'AWS_ENDPOINT_URL') }}/_llmserve/settings", "method": "POST",
        "body_format": "json", "body": settings, "use_proxy": False}}


def test_bad_input_failed_update_and_wait_timeout(local_aws, tmp_path):
    # Every class of bad input is unit-tested in-process (tests/unit/test_sagemaker_endpoint_logic.py); these two go
    # through Ansible too.
    complaints = [
        ("role of another service", dict(BASE, execution_role_arn="arn:aws:sts::123456789012:assumed-role/x/y"),
         "ARN of the sts service, not an IAM role"),
        ("timeout too short for 70B", dict(BASE, model_parameters_b=70, instance_type=None,
                                           container_startup_health_check_timeout=300),
         "too short for a 70.0B model"),
    ]
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    tasks = [rescued(title, args, complaint) for title, args, complaint in complaints]
    tasks += [
        module_task("create", BASE),
        configure_task("make SageMaker fail", sagemaker_failure_reason=reason),
        rescued("update", dict(BASE, image_uri=IMAGE_V2), "SageMaker rolled back the update"),
        configure_task("make SageMaker slow", sagemaker_failure_reason="", sagemaker_delay_s=60),
        rescued("slow create", dict(BASE, name="slow", wait_timeout=2), "timed out after"),
    ]
    run = playbook(local_aws, tmp_path, tasks)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr

    for title, _args, _complaint in complaints:
        assert run[title]["failed"] and "changes" not in run[title]  # failed before reading AWS
    serving = run["create"]["endpoint_config_name"]
    failed = run["update"]
    assert failed["failure_reason"] == reason and f"still serves {serving}" in failed["msg"]
    endpoint = local_aws.client("sagemaker").describe_endpoint(EndpointName="llm")
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == ("InService", serving)
    message = run["slow create"]["msg"]
    assert "(limit 2 s" in message and "last check: status Creating" in message, message
    elapsed = float(message.split("timed out after ")[1].split(" s")[0])
    assert 2 <= elapsed < 10
    assert TOKEN not in run.stdout + run.stderr


def test_the_playbook_serves_a_profile(local_aws):
    run = ansible_playbook(
        local_aws, "playbooks/sagemaker_endpoint.yml", "-e", "llmserve_model_size=70b",
        "-e", "llmserve_model_uri=s3://llmserve-models/Llama-3.1-70B-Instruct", "-e", f"llmserve_sagemaker_role_arn={ROLE}",
        "-e", f"llmserve_sagemaker_image_uri={IMAGE_V1}", "-e", "llmserve_sagemaker_wait_sleep=1")

    assert run.returncode == 0, run.stdout[-4000:] + run.stderr
    result = run["SageMaker endpoint from the profile 70b"]
    assert result["endpoint_name"] == "llmserve-70b"
    assert result["endpoint_status"] == "InService"
    (variant,) = result["variants"]
    # The 70b profile: p4d.24xlarge, tensor parallel 8, and a startup timeout for a model above 13B.
    assert (variant["instance_type"], variant["container_startup_health_check_timeout"]) == ("ml.p4d.24xlarge", 600)
    model = result["diff"]["after"]["models"][variant["model_name"]]
    assert model["environment"]["SM_NUM_GPUS"] == "8"
    assert result["autoscaling"]["AllTraffic"]["metric"]["name"] == "GPUUtilization"
